//! The attempt's watch over its multi-node group (`group::roster` decides): every
//! `Timing::interval` the leader judges its roster and a worker its link to the leader. A
//! loss, or a node never heard from within the join timeout, ends the attempt as
//! `Failure::GroupLost` (the policy then ends the run with GROUP_LOST); a worker becomes
//! ready when its leader serves.

use super::{Attempt, AttemptEnd};
use crate::group::live::{Live, Side};
use crate::group::roster::{LinkVerdict, Verdict};
use crate::supervise::machine::{Event, Failure};
use crate::supervise::probe::Readiness;
use crate::supervise::supervisor::Supervisor;
use std::time::Duration;

/// What one look at the group found.
enum Look {
    /// The group is lost, or never formed: this message says why.
    Lost(String),
    /// A worker whose leader serves.
    Serving,
    Fine,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Judges the group at `now`, waiting since `since`; records the verdict in words.
fn look(live: &Live, now: Duration, since: Duration) -> Look {
    let (detail, look) = match &live.side {
        Side::Leader(r) => {
            let v = lock(r).check(now, since, &live.timing);
            let d = v.describe(live.leader_port);
            let look = match v {
                Verdict::Lost(_) | Verdict::NeverCame { .. } => Look::Lost(d.clone()),
                Verdict::Complete | Verdict::Forming { .. } => Look::Fine,
            };
            (d, look)
        }
        Side::Worker(l) => {
            let (v, error) = {
                let mut l = lock(l);
                (l.check(now, since, &live.timing), l.last_error.clone())
            };
            let d = v.describe(&live.leader(), error.as_deref());
            let look = match v {
                LinkVerdict::Lost(_) | LinkVerdict::NeverAnswered { .. } => Look::Lost(d.clone()),
                LinkVerdict::Joined { serving: true } => Look::Serving,
                LinkVerdict::Joined { serving: false } | LinkVerdict::Waiting => Look::Fine,
            };
            (d, look)
        }
    };
    if live.detail() != detail {
        match look {
            Look::Lost(_) => tracing::error!("group: {detail}"),
            _ => tracing::info!("group: {detail}"),
        }
        live.set_detail(detail);
    }
    look
}

impl Supervisor {
    /// The group's turn: Some when it ends the attempt.
    pub(super) async fn on_group(&mut self, a: &mut Attempt) -> Option<AttemptEnd> {
        let shared = self.shared.clone();
        let live = shared.group.as_ref()?;
        let now = shared.now();
        // Waiting counts from this engine's start (a node may download for long before).
        let since = now.saturating_sub(a.eng.spawned.elapsed());
        match look(live, now, since) {
            Look::Fine => None,
            Look::Serving if a.ready() => None,
            Look::Serving => {
                self.on_readiness(a, Readiness::Ready);
                None
            }
            Look::Lost(why) => {
                self.event(Event::AttemptFailed, "group lost");
                let ended = self.shared.abort_inflight(&why);
                if ended > 0 {
                    tracing::info!("ended {ended} request(s) in flight: the group is lost");
                }
                let ready = a.ready();
                Some(
                    self.end_alive(&mut a.eng, Failure::GroupLost, why, ready)
                        .await,
                )
            }
        }
    }

    /// A leader's group that is not complete yet, in words (None: complete, or no group, or
    /// a worker).
    pub(super) fn group_not_complete(&self) -> Option<String> {
        let live = self.shared.group.as_ref()?;
        let Side::Leader(r) = &live.side else {
            return None;
        };
        let now = self.shared.now();
        match lock(r).check(now, now, &live.timing) {
            Verdict::Complete => None,
            v => Some(v.describe(live.leader_port)),
        }
    }

    /// The group's last verdict for the startup deadline's message ("" on one node).
    pub(super) fn group_wait_detail(&self) -> String {
        match &self.shared.group {
            Some(live) => format!("; group: {}", live.detail()),
            None => String::new(),
        }
    }
}
