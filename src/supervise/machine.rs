//! The engine's life as a closed state machine, and the restart/fallback policy (both pure).
//!
//! `transition` says which phase an event leads to (None: the event does not apply in that
//! phase and is ignored). `Policy::on_failure` says what to do after an attempt failed. Neither
//! does IO; `run` feeds them events and carries out the decisions.

use super::backoff::{Backoff, RestartBudget};
use crate::engine::FailureClass;
use crate::status::Phase;
use crate::types::Precision;
use std::time::Duration;

/// What happened, as far as the phase is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `serve --download` fetches the model before the first attempt.
    Downloading,
    /// About to start an attempt (version probe, spawn).
    Launching,
    /// The engine process exists.
    Spawned,
    /// GET /health answered 200.
    Healthy,
    /// /v1/models lists the served name and the test inference answered.
    Validated,
    /// The attempt is over without our asking (exit, hang, startup deadline).
    AttemptFailed,
    /// SIGTERM/SIGINT/SIGQUIT.
    StopRequested,
    /// The engine and its tree are gone after a requested stop.
    Stopped,
    /// The policy gave up (or the model is unavailable).
    GaveUp,
}

/// The phase `event` leads to from `from`, or None when it does not apply.
pub fn transition(from: Phase, event: Event) -> Option<Phase> {
    use Event as E;
    use Phase as P;
    match (from, event) {
        // Terminal phases are never left.
        (P::Failed | P::Stopped, _) => None,
        (P::Detecting, E::Downloading) => Some(P::Downloading),
        (P::Detecting | P::Downloading | P::Restarting, E::Launching) => Some(P::Starting),
        (P::Starting, E::Spawned) => Some(P::Loading),
        (P::Loading, E::Healthy) => Some(P::Validating),
        (P::Validating, E::Validated) => Some(P::Ready),
        (P::Starting | P::Loading | P::Validating | P::Ready, E::AttemptFailed) => {
            Some(P::Restarting)
        }
        (P::Draining, E::StopRequested) => None,
        (_, E::StopRequested) => Some(P::Draining),
        (P::Draining, E::Stopped) => Some(P::Stopped),
        (_, E::GaveUp) => Some(P::Failed),
        _ => None,
    }
}

/// How an attempt ended, as the policy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The engine exited (any status, 0 included) and `engine::classify` said why.
    Exited {
        class: FailureClass,
        suggested_max_model_len: Option<u64>,
    },
    /// Liveness probes failed `liveness_failures` times in a row after ready.
    Hung,
    /// Not ready within `startup_timeout`.
    StartupTimeout,
    /// The launcher could not be executed (not found or not executable).
    LauncherMissing,
    /// The engine refused a flag the user gave (`--engine-args`): bad_args that no other
    /// recipe can fix, since every launch carries the same user args.
    UserArgRejected,
    /// GPU `ordinal` of the launch failed (`supervise::gpu_fault`: uncorrectable errors rose,
    /// a reset, the GPU gone).
    GpuFault { ordinal: u32 },
    /// This node's multi-node group lost a node, or never formed (`group::roster`).
    GroupLost,
}

impl Failure {
    /// The `class` recorded in `/status`.
    pub fn class_str(&self) -> &'static str {
        match self {
            Failure::Exited { class, .. } => class.as_str(),
            Failure::Hung => "hung",
            Failure::StartupTimeout => "startup_timeout",
            Failure::LauncherMissing => "launcher_missing",
            Failure::UserArgRejected => "bad_args",
            Failure::GpuFault { .. } => "gpu_fault",
            Failure::GroupLost => "group_lost",
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Same launch again after `delay`.
    Restart { delay: Duration },
    /// Same launch with `--max-model-len`/`--context-length` set to `len`.
    RetryMaxModelLen { len: u64 },
    /// Same launch on another free loopback port.
    NewPort,
    /// Move to `launches[index]`.
    NextLaunch { index: usize },
    /// Model not found, gated or offline: no launch can help; end with MODEL_UNAVAILABLE.
    ModelUnavailable,
    /// No launch left whose launcher exists: end with ENGINE_NOT_FOUND / NOT_EXECUTABLE.
    LauncherMissing,
    /// Every restart and every fallback is used up: end with GAVE_UP.
    GiveUp,
    /// The user's engine args are wrong: end with USAGE, naming the flag.
    UserArgRejected,
    /// A GPU failed and no later launch avoids it: end with GAVE_UP, saying what to check.
    GpuFault,
    /// A node of a multi-node group failed: the engines cannot re-join a running group, so no
    /// node restarts on its own; end with GROUP_LOST and let the launcher start the group.
    EndGroup,
}

impl Decision {
    /// The `action` recorded in `/status`.
    pub fn action_str(&self) -> &'static str {
        match self {
            Decision::Restart { .. } => "restart",
            Decision::RetryMaxModelLen { .. } => "retry_max_model_len",
            Decision::NewPort => "new_port",
            Decision::NextLaunch { .. } => "next_recipe",
            Decision::ModelUnavailable => "model_unavailable",
            Decision::LauncherMissing => "launcher_missing",
            Decision::GiveUp => "give_up",
            Decision::UserArgRejected => "stop_user_args",
            Decision::GpuFault => "stop_gpu_fault",
            Decision::EndGroup => "end_group",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    pub backoff: Backoff,
    pub restart_budget: u32,
    pub restart_window: Duration,
    /// New loopback ports tried per launch before moving on.
    pub max_port_retries: u32,
}

/// The memory one replica of a launch has for the model, relative to its weights: GPUs x 16
/// / bits per weight (1 GPU in bf16 = 2, 4 GPUs in bf16 = 8, 1 GPU in fp8 = 4). Only
/// launches on the same GPUs (one plan) are compared.
pub fn memory_per_replica(gpu_count: u32, precision: Precision) -> u32 {
    let bits = match precision {
        Precision::Fp32 => 32,
        Precision::Bf16 | Precision::Fp16 => 16,
        Precision::Fp8 | Precision::Int8 => 8,
        Precision::Fp4 | Precision::Int4 => 4,
    };
    gpu_count * 32 / bits
}

/// The launches still to try after an out-of-memory failure of one with `failed` memory per
/// replica: those with more memory first, then the rest, each part in its rank order.
pub fn roomier_first(pending: &[usize], memory: &[u32], failed: u32) -> Vec<usize> {
    let more = |i: &usize| memory.get(*i).copied().unwrap_or(0) > failed;
    let (mut first, rest): (Vec<usize>, Vec<usize>) = pending.iter().partition(|i| more(i));
    first.extend(rest);
    first
}

/// The policy and its memory of the current launch.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    /// argv[0] of every launch, to skip launches whose launcher is missing.
    launchers: Vec<String>,
    /// The HIP ordinals of every launch's GPUs (empty: not known).
    gpus: Vec<Vec<u32>>,
    /// `memory_per_replica` of every launch (all 0 when unknown: no reordering).
    memory: Vec<u32>,
    /// The launches not tried yet, in the order they will be.
    pending: Vec<usize>,
    index: usize,
    max_len_retried: bool,
    port_retries: u32,
    budget: RestartBudget,
    /// A node of a multi-node group (`in_group`).
    group: bool,
}

impl Policy {
    pub fn new(cfg: PolicyConfig, launchers: Vec<String>) -> Self {
        let memory = vec![0; launchers.len()];
        Policy::with_memory(cfg, launchers, memory)
    }

    /// As `new`, with each launch's `memory_per_replica`, so that an out-of-memory failure
    /// moves to a launch with more memory first.
    pub fn with_memory(cfg: PolicyConfig, launchers: Vec<String>, memory: Vec<u32>) -> Self {
        Policy {
            cfg,
            pending: (1..launchers.len()).collect(),
            launchers,
            gpus: Vec::new(),
            memory,
            index: 0,
            max_len_retried: false,
            port_retries: 0,
            budget: RestartBudget::new(cfg.restart_budget, cfg.restart_window),
            group: false,
        }
    }

    /// The policy of a node of a multi-node group: the failures no other node's restart can
    /// help (the model unavailable, the user's flags, a missing launcher, a failed GPU) end
    /// the run as on one node; every other failure ends it with `Decision::EndGroup`, never a
    /// restart or a fallback of this node alone (the other nodes would still run the old
    /// recipe, and the engines cannot re-join a running group).
    pub fn in_group(mut self) -> Self {
        self.group = true;
        self
    }

    /// Tells the policy each launch's GPUs (HIP ordinals), for `Failure::GpuFault`.
    pub fn with_gpus(mut self, gpus: Vec<Vec<u32>>) -> Self {
        self.gpus = gpus;
        self
    }

    /// Index of the launch being tried.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Decides after a failed attempt. `was_ready`: the attempt had become ready (a crash
    /// after ready is a runtime failure: the recipe is known to work, so restart it).
    /// `now`: time since the supervisor started.
    pub fn on_failure(&mut self, failure: Failure, was_ready: bool, now: Duration) -> Decision {
        use FailureClass as C;
        if self.group {
            return match failure {
                Failure::Exited {
                    class: C::ModelNotFound | C::Gated | C::Offline,
                    ..
                } => Decision::ModelUnavailable,
                Failure::UserArgRejected => Decision::UserArgRejected,
                Failure::LauncherMissing => Decision::LauncherMissing,
                Failure::GpuFault { .. } => Decision::GpuFault,
                _ => Decision::EndGroup,
            };
        }
        match failure {
            Failure::LauncherMissing => {
                let missing = self.launchers.get(self.index).cloned();
                let launchers = &self.launchers;
                self.pending
                    .retain(|&i| Some(&launchers[i]) != missing.as_ref());
                return match self.pending.is_empty() {
                    false => self.next(),
                    true => Decision::LauncherMissing,
                };
            }
            Failure::Exited {
                class: C::ModelNotFound | C::Gated | C::Offline,
                ..
            } => return Decision::ModelUnavailable,
            Failure::UserArgRejected => return Decision::UserArgRejected,
            // A failed GPU stays failed: never the same GPU again, ready before or not. A
            // later launch that does not use it may run; else the run ends (the node needs
            // an operator, and a restart loop would hide that).
            Failure::GpuFault { ordinal } => {
                let gpus = &self.gpus;
                self.pending
                    .retain(|i| gpus.get(*i).is_some_and(|g| !g.contains(&ordinal)));
                return match self.pending.is_empty() {
                    false => self.next(),
                    true => Decision::GpuFault,
                };
            }
            _ => {}
        }
        if was_ready {
            return self.restart_or_next(now);
        }
        match failure {
            Failure::Exited {
                class: C::MaxModelLen,
                suggested_max_model_len,
            } => match suggested_max_model_len {
                Some(len) if !self.max_len_retried => {
                    self.max_len_retried = true;
                    Decision::RetryMaxModelLen { len }
                }
                _ => self.next(),
            },
            Failure::Exited {
                class: C::PortInUse,
                ..
            } => {
                if self.port_retries < self.cfg.max_port_retries {
                    self.port_retries += 1;
                    Decision::NewPort
                } else {
                    self.next()
                }
            }
            // Out of memory: more memory per replica first, not the same GPUs again.
            Failure::Exited {
                class: C::Oom | C::KvCache,
                ..
            } => {
                let failed = self.memory.get(self.index).copied().unwrap_or(0);
                self.pending = roomier_first(&self.pending, &self.memory, failed);
                self.next()
            }
            Failure::Exited {
                class: C::TpInvalid | C::DtypeOrQuant | C::BadArgs,
                ..
            }
            | Failure::StartupTimeout => self.next(),
            // Unknown crashes, hangs and a busy GPU (often our own orphans, already swept)
            // are worth a restart of the same recipe.
            Failure::Exited { .. } | Failure::Hung => self.restart_or_next(now),
            Failure::LauncherMissing => self.next(),
            Failure::UserArgRejected => Decision::UserArgRejected,
            Failure::GpuFault { .. } => Decision::GpuFault,
            // Only a group node has a group to lose (handled above).
            Failure::GroupLost => Decision::EndGroup,
        }
    }

    fn restart_or_next(&mut self, now: Duration) -> Decision {
        match self.budget.take(now) {
            Some(n) => Decision::Restart {
                delay: self.cfg.backoff.delay(n),
            },
            None => self.next(),
        }
    }

    fn next(&mut self) -> Decision {
        if self.pending.is_empty() {
            Decision::GiveUp
        } else {
            let i = self.pending.remove(0);
            self.move_to(i)
        }
    }

    fn move_to(&mut self, index: usize) -> Decision {
        self.index = index;
        self.max_len_retried = false;
        self.port_retries = 0;
        self.budget.reset();
        Decision::NextLaunch { index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use Phase as P;

    #[test]
    fn transitions_table() {
        let cases: &[(Phase, Event, Option<Phase>)] = &[
            (P::Detecting, E::Launching, Some(P::Starting)),
            (P::Detecting, E::Downloading, Some(P::Downloading)),
            (P::Downloading, E::Launching, Some(P::Starting)),
            (P::Downloading, E::StopRequested, Some(P::Draining)),
            (P::Downloading, E::GaveUp, Some(P::Failed)),
            (P::Restarting, E::Downloading, None),
            (P::Restarting, E::Launching, Some(P::Starting)),
            (P::Starting, E::Spawned, Some(P::Loading)),
            (P::Loading, E::Healthy, Some(P::Validating)),
            (P::Validating, E::Validated, Some(P::Ready)),
            (P::Loading, E::Validated, None),
            (P::Starting, E::Healthy, None),
            (P::Ready, E::Launching, None),
            (P::Starting, E::AttemptFailed, Some(P::Restarting)),
            (P::Loading, E::AttemptFailed, Some(P::Restarting)),
            (P::Validating, E::AttemptFailed, Some(P::Restarting)),
            (P::Ready, E::AttemptFailed, Some(P::Restarting)),
            (P::Restarting, E::AttemptFailed, None),
            (P::Detecting, E::StopRequested, Some(P::Draining)),
            (P::Loading, E::StopRequested, Some(P::Draining)),
            (P::Ready, E::StopRequested, Some(P::Draining)),
            (P::Restarting, E::StopRequested, Some(P::Draining)),
            (P::Draining, E::StopRequested, None),
            (P::Draining, E::Stopped, Some(P::Stopped)),
            (P::Ready, E::Stopped, None),
            (P::Draining, E::Launching, None),
            (P::Restarting, E::GaveUp, Some(P::Failed)),
            (P::Detecting, E::GaveUp, Some(P::Failed)),
            (P::Failed, E::Launching, None),
            (P::Failed, E::StopRequested, None),
            (P::Stopped, E::GaveUp, None),
        ];
        for (from, ev, want) in cases {
            assert_eq!(transition(*from, *ev), *want, "{from:?} + {ev:?}");
        }
        // Closed: every phase/event pair has an answer and terminal phases have none.
        for p in P::ALL {
            for ev in [
                E::Launching,
                E::Spawned,
                E::Healthy,
                E::Validated,
                E::AttemptFailed,
                E::StopRequested,
                E::Stopped,
                E::GaveUp,
            ] {
                if matches!(p, P::Failed | P::Stopped) {
                    assert_eq!(transition(*p, ev), None);
                }
            }
        }
    }

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(300),
            },
            restart_budget: 2,
            restart_window: Duration::from_secs(60),
            max_port_retries: 1,
        }
    }

    fn exited(class: FailureClass) -> Failure {
        Failure::Exited {
            class,
            suggested_max_model_len: None,
        }
    }

    fn ms(v: u64) -> Decision {
        Decision::Restart {
            delay: Duration::from_millis(v),
        }
    }

    /// Each row: a fresh policy over `launches` launchers, a series of (failure, was_ready)
    /// and the decisions expected in order.
    #[test]
    fn policy_table() {
        use FailureClass as C;
        let two = ["vllm", "vllm"];
        type Case<'a> = (&'a str, Vec<&'a str>, Vec<(Failure, bool)>, Vec<Decision>);
        let cases: Vec<Case> = vec![
            (
                "model not found ends the run, never retried",
                two.to_vec(),
                vec![(exited(C::ModelNotFound), false)],
                vec![Decision::ModelUnavailable],
            ),
            (
                "gated and offline too, even after ready",
                two.to_vec(),
                vec![(exited(C::Gated), false), (exited(C::Offline), true)],
                vec![Decision::ModelUnavailable, Decision::ModelUnavailable],
            ),
            (
                "a flag of the user's that the engine refused ends the run: no recipe can help",
                two.to_vec(),
                vec![(Failure::UserArgRejected, false)],
                vec![Decision::UserArgRejected],
            ),
            (
                "engine_died restarts like unknown",
                two.to_vec(),
                vec![
                    (exited(C::EngineDied), true),
                    (exited(C::EngineDied), false),
                ],
                vec![ms(100), ms(200)],
            ),
            (
                "oom moves to the next recipe, then gives up",
                two.to_vec(),
                vec![(exited(C::Oom), false), (exited(C::Oom), false)],
                vec![Decision::NextLaunch { index: 1 }, Decision::GiveUp],
            ),
            (
                "fallback classes",
                vec!["a", "a", "a", "a", "a", "a"],
                vec![
                    (exited(C::KvCache), false),
                    (exited(C::TpInvalid), false),
                    (exited(C::DtypeOrQuant), false),
                    (exited(C::BadArgs), false),
                    (Failure::StartupTimeout, false),
                ],
                vec![
                    Decision::NextLaunch { index: 1 },
                    Decision::NextLaunch { index: 2 },
                    Decision::NextLaunch { index: 3 },
                    Decision::NextLaunch { index: 4 },
                    Decision::NextLaunch { index: 5 },
                ],
            ),
            (
                "unknown restarts with backoff within the budget, then moves on, budget renewed",
                two.to_vec(),
                vec![
                    (exited(C::Unknown), false),
                    (exited(C::Unknown), false),
                    (exited(C::Unknown), false),
                    (exited(C::Unknown), false),
                    (Failure::Hung, true),
                    (exited(C::Unknown), true),
                ],
                vec![
                    ms(100),
                    ms(200),
                    Decision::NextLaunch { index: 1 },
                    ms(100),
                    ms(200),
                    Decision::GiveUp,
                ],
            ),
            (
                "a crash after ready restarts the same recipe whatever its class",
                two.to_vec(),
                vec![(exited(C::Oom), true)],
                vec![ms(100)],
            ),
            (
                "max_model_len retries once with the suggested length",
                two.to_vec(),
                vec![
                    (
                        Failure::Exited {
                            class: C::MaxModelLen,
                            suggested_max_model_len: Some(8192),
                        },
                        false,
                    ),
                    (
                        Failure::Exited {
                            class: C::MaxModelLen,
                            suggested_max_model_len: Some(4096),
                        },
                        false,
                    ),
                    (
                        Failure::Exited {
                            class: C::MaxModelLen,
                            suggested_max_model_len: Some(4096),
                        },
                        false,
                    ),
                ],
                vec![
                    Decision::RetryMaxModelLen { len: 8192 },
                    Decision::NextLaunch { index: 1 },
                    Decision::RetryMaxModelLen { len: 4096 },
                ],
            ),
            (
                "max_model_len without a suggestion moves on",
                two.to_vec(),
                vec![(exited(C::MaxModelLen), false)],
                vec![Decision::NextLaunch { index: 1 }],
            ),
            (
                "port in use: a new port, then the next recipe",
                two.to_vec(),
                vec![(exited(C::PortInUse), false), (exited(C::PortInUse), false)],
                vec![Decision::NewPort, Decision::NextLaunch { index: 1 }],
            ),
            (
                "gpu busy restarts",
                two.to_vec(),
                vec![(exited(C::GpuBusy), false)],
                vec![ms(100)],
            ),
            (
                "missing launcher skips launches with the same launcher",
                vec!["vllm", "vllm", "python3", "python3"],
                vec![
                    (Failure::LauncherMissing, false),
                    (Failure::LauncherMissing, false),
                ],
                vec![Decision::NextLaunch { index: 2 }, Decision::LauncherMissing],
            ),
            (
                "single launch: gives up after the budget",
                vec!["vllm"],
                vec![
                    (Failure::Hung, true),
                    (Failure::Hung, true),
                    (Failure::Hung, true),
                ],
                vec![ms(100), ms(200), Decision::GiveUp],
            ),
        ];
        for (name, launchers, events, want) in cases {
            let mut p = Policy::new(cfg(), launchers.iter().map(|s| s.to_string()).collect());
            let got: Vec<Decision> = events
                .iter()
                .enumerate()
                .map(|(i, (f, r))| p.on_failure(*f, *r, Duration::from_secs(i as u64)))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    /// Each row: the launches' GPUs, the faulted GPU and whether the attempt was ready, and
    /// the decision: the first later launch without that GPU, else the stop.
    #[test]
    fn gpu_fault_table() {
        type Case<'a> = (&'a str, Vec<Vec<u32>>, u32, bool, Decision);
        let cases: Vec<Case> = vec![
            (
                "one launch: stop",
                vec![vec![0]],
                0,
                true,
                Decision::GpuFault,
            ),
            (
                "every fallback on the same GPU: stop, never a restart",
                vec![vec![0], vec![0], vec![0, 1]],
                0,
                false,
                Decision::GpuFault,
            ),
            (
                "a fallback on other GPUs is tried, skipping one on the failed GPU",
                vec![vec![0, 1], vec![0], vec![2, 3]],
                0,
                true,
                Decision::NextLaunch { index: 2 },
            ),
            (
                "a fallback that avoids the failed GPU of a multi-GPU launch",
                vec![vec![0, 1], vec![0]],
                1,
                false,
                Decision::NextLaunch { index: 1 },
            ),
            ("GPUs not known: stop", vec![], 0, false, Decision::GpuFault),
        ];
        for (name, gpus, ordinal, ready, want) in cases {
            let n = gpus.len().max(1);
            let mut p = Policy::new(cfg(), vec!["vllm".to_string(); n]).with_gpus(gpus);
            let got = p.on_failure(Failure::GpuFault { ordinal }, ready, Duration::ZERO);
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(Failure::GpuFault { ordinal: 3 }.class_str(), "gpu_fault");
        assert_eq!(Decision::GpuFault.action_str(), "stop_gpu_fault");
    }

    /// A node of a group: each failure, ready or not, and what it decides (never a restart or
    /// a fallback of this node alone, even with fallbacks left and the budget unused).
    #[test]
    fn a_group_node_never_restarts_alone() {
        use FailureClass as C;
        let cases: Vec<(Failure, bool, Decision)> = vec![
            (Failure::GroupLost, true, Decision::EndGroup),
            (Failure::GroupLost, false, Decision::EndGroup),
            (exited(C::Unknown), true, Decision::EndGroup),
            (exited(C::EngineDied), true, Decision::EndGroup),
            (exited(C::Oom), false, Decision::EndGroup),
            (exited(C::PortInUse), false, Decision::EndGroup),
            (
                Failure::Exited {
                    class: C::MaxModelLen,
                    suggested_max_model_len: Some(4096),
                },
                false,
                Decision::EndGroup,
            ),
            (Failure::Hung, true, Decision::EndGroup),
            (Failure::StartupTimeout, false, Decision::EndGroup),
            (exited(C::ModelNotFound), false, Decision::ModelUnavailable),
            (exited(C::Gated), true, Decision::ModelUnavailable),
            (Failure::UserArgRejected, false, Decision::UserArgRejected),
            (Failure::LauncherMissing, false, Decision::LauncherMissing),
            (Failure::GpuFault { ordinal: 0 }, true, Decision::GpuFault),
        ];
        for (failure, ready, want) in cases {
            let mut p = Policy::new(cfg(), vec!["vllm".to_string(); 3]).in_group();
            assert_eq!(
                p.on_failure(failure, ready, Duration::ZERO),
                want,
                "{failure:?} ready={ready}"
            );
            // One node alone restarts or falls back on the same failure.
            let mut alone = Policy::new(cfg(), vec!["vllm".to_string(); 3]);
            if want == Decision::EndGroup && failure != Failure::GroupLost {
                let d = alone.on_failure(failure, ready, Duration::ZERO);
                assert!(
                    matches!(
                        d,
                        Decision::Restart { .. }
                            | Decision::NextLaunch { .. }
                            | Decision::NewPort
                            | Decision::RetryMaxModelLen { .. }
                    ),
                    "{failure:?} alone: {d:?}"
                );
            }
        }
        assert_eq!(Failure::GroupLost.class_str(), "group_lost");
        assert_eq!(Decision::EndGroup.action_str(), "end_group");
    }

    /// After an out-of-memory failure the chain moves to more memory per replica first.
    /// Each row: the launches (GPUs, precision) in rank order, the failures, the launches
    /// moved to.
    #[test]
    fn oom_moves_to_more_memory_first() {
        use FailureClass as C;
        use Precision as P;
        type Row<'a> = (&'a str, Vec<(u32, P)>, Vec<Failure>, Vec<Decision>);
        let next = |index| Decision::NextLaunch { index };
        let rows: Vec<Row> = vec![
            (
                "oom on 1 GPU skips the same-GPU throughput recipe for 4 GPUs, then 8",
                vec![
                    (1, P::Bf16),
                    (1, P::Bf16),
                    (4, P::Bf16),
                    (2, P::Fp8),
                    (8, P::Bf16),
                ],
                vec![
                    exited(C::Oom),
                    exited(C::Oom),
                    exited(C::Oom),
                    exited(C::Oom),
                    exited(C::Oom),
                ],
                // 0 (2) -> 2 (8) -> 4 (16) -> none roomier: 3 (8), 1 (2) in rank order.
                vec![next(2), next(4), next(3), next(1), Decision::GiveUp],
            ),
            (
                "kv_cache too; lower precision on the same GPUs counts as more memory",
                vec![(1, P::Bf16), (1, P::Bf16), (1, P::Fp8)],
                vec![exited(C::KvCache), exited(C::Unknown)],
                vec![next(2), ms(100)],
            ),
            (
                "other classes keep the rank order",
                vec![(1, P::Bf16), (1, P::Bf16), (4, P::Bf16)],
                vec![exited(C::TpInvalid), exited(C::Oom)],
                vec![next(1), next(2)],
            ),
        ];
        for (what, shapes, failures, want) in rows {
            let launchers = vec!["vllm".to_string(); shapes.len()];
            let memory = shapes
                .iter()
                .map(|&(n, p)| memory_per_replica(n, p))
                .collect();
            let mut p = Policy::with_memory(cfg(), launchers, memory);
            let got: Vec<Decision> = failures
                .iter()
                .map(|f| p.on_failure(*f, false, Duration::ZERO))
                .collect();
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(memory_per_replica(1, P::Bf16), 2);
        assert_eq!(memory_per_replica(4, P::Bf16), 8);
        assert_eq!(memory_per_replica(1, P::Fp4), 8);
        assert_eq!(memory_per_replica(2, P::Fp32), 2);
        assert_eq!(roomier_first(&[1, 2, 3], &[2, 2, 8, 4], 2), vec![2, 3, 1]);
    }

    #[test]
    fn budget_renews_after_the_window() {
        let mut p = Policy::new(cfg(), vec!["vllm".into()]);
        let s = Duration::from_secs;
        assert_eq!(p.on_failure(Failure::Hung, true, s(0)), ms(100));
        assert_eq!(p.on_failure(Failure::Hung, true, s(1)), ms(200));
        // Both restarts leave the 60 s window: a fresh series with the initial delay.
        assert_eq!(p.on_failure(Failure::Hung, true, s(62)), ms(100));
    }
}
