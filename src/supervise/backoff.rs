//! Restart pacing (pure): exponential backoff and the restart budget of one recipe.
//!
//! Time is passed in as a `Duration` since the supervisor started, so the rules are tested
//! without clocks.

use std::collections::VecDeque;
use std::time::Duration;

/// `initial`, doubling per consecutive restart, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before restart number `n` (1-based) of a series.
    pub fn delay(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        // 2^(n-1) saturates long before u32 overflows matter: cap the shift.
        let factor = 1u32 << (n - 1).min(30);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// At most `budget` restarts of one recipe within any `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartBudget {
    budget: u32,
    window: Duration,
    taken: VecDeque<Duration>,
}

impl RestartBudget {
    pub fn new(budget: u32, window: Duration) -> Self {
        RestartBudget {
            budget,
            window,
            taken: VecDeque::new(),
        }
    }

    /// Takes one restart at `now` if the budget allows; returns the number of restarts now in
    /// the window (1-based, the backoff series index), or None when the budget is used up.
    pub fn take(&mut self, now: Duration) -> Option<u32> {
        while let Some(first) = self.taken.front() {
            if now.saturating_sub(*first) >= self.window {
                self.taken.pop_front();
            } else {
                break;
            }
        }
        if self.taken.len() as u32 >= self.budget {
            return None;
        }
        self.taken.push_back(now);
        Some(self.taken.len() as u32)
    }

    /// Forgets every restart (a new recipe starts with a full budget).
    pub fn reset(&mut self) {
        self.taken.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
        };
        let cases = [
            (0, 0),
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ];
        for (n, want) in cases {
            assert_eq!(b.delay(n), ms(want), "restart {n}");
        }
        let zero = Backoff {
            initial: ms(0),
            max: ms(1000),
        };
        assert_eq!(zero.delay(7), ms(0));
    }

    #[test]
    fn budget_counts_within_the_window_only() {
        let mut r = RestartBudget::new(3, ms(1000));
        assert_eq!(r.take(ms(0)), Some(1));
        assert_eq!(r.take(ms(100)), Some(2));
        assert_eq!(r.take(ms(200)), Some(3));
        assert_eq!(r.take(ms(300)), None, "fourth within the window");
        // The first restart leaves the window at 1000 ms.
        assert_eq!(r.take(ms(1000)), Some(3));
        r.reset();
        assert_eq!(r.take(ms(1001)), Some(1));
        let mut none = RestartBudget::new(0, ms(1000));
        assert_eq!(none.take(ms(0)), None);
    }
}
