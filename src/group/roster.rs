//! Supervision across a group (pure): the leader's roster of its workers, a worker's link to
//! its leader, and what each decides. The IO is elsewhere: a worker's reports are sent by
//! `supervise::group`, the leader answers them on its public port (`http::group`), and the
//! attempt loop acts on the verdicts.
//!
//! The protocol: every worker's aim-engine POSTs a `Report` (its rank, the group size, its
//! own instance id, its engine's state) to the leader's public port every `Timing::interval`;
//! the leader answers with an `Ack` (its instance id, the group's state, whether it serves).
//! Both sides judge from what they heard and when:
//! - the leader is complete when every worker rank reported a running engine; a rank never
//!   heard from within the join timeout is named; a rank that failed, stopped, restarted
//!   (a new instance id) or went silent for the loss timeout loses the group;
//! - a worker is ready when the leader serves; a leader that restarted (a new instance id),
//!   says the group is lost or stopping, refused the report, or went silent for the loss
//!   timeout loses the group; a leader never heard from within the join timeout is named.
//!
//! A loss is final (the engines cannot re-join a running group): every node then ends with
//! `exit::GROUP_LOST` and its launcher starts the group again.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where a worker reports, on the leader's public port.
pub const REPORT_PATH: &str = "/group/report";

/// The group's timings (`serve --group-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a worker reports.
    pub interval: Duration,
    /// A node silent this long after it was heard from is lost.
    pub loss_timeout: Duration,
    /// How long to wait for a node to be heard from at all.
    pub join_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: Duration::from_secs(2),
            loss_timeout: Duration::from_secs(20),
            join_timeout: Duration::from_secs(600),
        }
    }
}

/// A worker's engine, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Planning, downloading, or spawning: no engine process yet.
    Starting,
    /// Its engine process runs (a headless engine has no API to ask).
    Running,
    /// Its engine failed; the worker ends.
    Failed,
    /// It was asked to stop.
    Stopping,
}

/// What a worker sends the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub rank: u32,
    pub nnodes: u32,
    /// The worker's aim-engine process (new when it restarts).
    pub instance: String,
    pub state: MemberState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The leader instance this worker joined, once it did: a report joined to another one
    /// is from an earlier group, answered but not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
}

/// Whether the leader counted a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    Counted,
    /// From a worker of an earlier group (joined to another leader instance): its answer
    /// tells it so, the roster does not change.
    Stale,
}

/// The group's state, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    Forming,
    Complete,
    Lost,
    Stopping,
}

/// The leader's answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The leader's aim-engine process (new when it restarts).
    pub instance: String,
    pub group: GroupState,
    /// The leader serves: its engine is ready and the group complete.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Why the leader lost a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossCause {
    /// The worker said its engine failed.
    Failed(Option<String>),
    /// The worker was asked to stop.
    Stopped,
    /// The worker's aim-engine restarted: its engine left the group.
    Restarted,
    /// No report for this long.
    Silent(Duration),
}

/// A worker the group lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub rank: u32,
    pub cause: LossCause,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.rank;
        match &self.cause {
            LossCause::Failed(Some(d)) => write!(f, "node rank {r} lost its engine ({d})"),
            LossCause::Failed(None) => write!(f, "node rank {r} lost its engine"),
            LossCause::Stopped => write!(f, "node rank {r} was stopped"),
            LossCause::Restarted => write!(
                f,
                "node rank {r} restarted (a new aim-engine): its engine left the group"
            ),
            LossCause::Silent(d) => write!(
                f,
                "node rank {r} has not reported for {:.0}s (its aim-engine or its network is gone)",
                d.as_secs_f64()
            ),
        }
    }
}

/// The leader's judgement of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every worker reported a running engine.
    Complete,
    /// Waiting for these ranks: never heard from, or no engine yet.
    Forming {
        missing: Vec<u32>,
        starting: Vec<u32>,
    },
    /// These ranks were not heard from within the join timeout.
    NeverCame { missing: Vec<u32>, waited: Duration },
    /// The group lost a worker: it cannot serve again without a restart of every node.
    Lost(Lost),
}

impl Verdict {
    pub fn state(&self) -> GroupState {
        match self {
            Verdict::Complete => GroupState::Complete,
            Verdict::Forming { .. } => GroupState::Forming,
            Verdict::NeverCame { .. } | Verdict::Lost(_) => GroupState::Lost,
        }
    }

    /// One line for a log, `/status` or the readiness detail.
    pub fn describe(&self, leader_port: u16) -> String {
        match self {
            Verdict::Complete => "every node runs its engine".into(),
            Verdict::Forming { missing, starting } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("not heard from node rank {}", ranks(missing)));
                }
                if !starting.is_empty() {
                    parts.push(format!("node rank {} still starting", ranks(starting)));
                }
                format!("waiting for the group: {}", parts.join("; "))
            }
            Verdict::NeverCame { missing, waited } => format!(
                "node rank {} did not report to the leader within {:.0}s: start aim-engine there \
                 with AIM_NODE_RANK={} and this node's address as AIM_LEADER_ADDR (or as part of \
                 the LeaderWorkerSet), and check that it reaches this node's port {leader_port} \
                 (--group-join-timeout waits longer)",
                ranks(missing),
                waited.as_secs_f64(),
                missing.first().copied().unwrap_or(1),
            ),
            Verdict::Lost(l) => format!("the group is lost: {l}"),
        }
    }
}

fn ranks(r: &[u32]) -> String {
    r.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// A report the leader refuses (answered 409; the worker then ends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "node rank {rank} reports a group of {theirs} nodes, but the leader's group has {ours}: give every node the same AIM_NNODES (or LWS_GROUP_SIZE)"
    )]
    NodeCount { rank: u32, theirs: u32, ours: u32 },
    #[error(
        "node rank {rank} is not a worker rank of a group of {nnodes} (1 to {last}): give each worker its own AIM_NODE_RANK",
        last = nnodes - 1
    )]
    Rank { rank: u32, nnodes: u32 },
}

/// One worker, as the leader last heard from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub rank: u32,
    pub instance: String,
    pub state: MemberState,
    #[serde(skip)]
    pub last_seen: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The leader's view of its workers. Times are offsets on one monotonic clock.
#[derive(Debug, Clone)]
pub struct Roster {
    nnodes: u32,
    members: BTreeMap<u32, Member>,
    /// The first loss; never cleared.
    lost: Option<Lost>,
}

impl Roster {
    pub fn new(nnodes: u32) -> Self {
        Roster {
            nnodes,
            members: BTreeMap::new(),
            lost: None,
        }
    }

    pub fn nnodes(&self) -> u32 {
        self.nnodes
    }

    /// Takes a worker's report heard at `now` by the leader instance `own`.
    pub fn report(&mut self, r: &Report, now: Duration, own: &str) -> Result<Heard, ReportError> {
        if r.nnodes != self.nnodes {
            return Err(ReportError::NodeCount {
                rank: r.rank,
                theirs: r.nnodes,
                ours: self.nnodes,
            });
        }
        if r.rank == 0 || r.rank >= self.nnodes {
            return Err(ReportError::Rank {
                rank: r.rank,
                nnodes: self.nnodes,
            });
        }
        if r.joined.as_deref().is_some_and(|j| j != own) {
            return Ok(Heard::Stale);
        }
        let restarted = self
            .members
            .get(&r.rank)
            .is_some_and(|m| m.instance != r.instance);
        self.members.insert(
            r.rank,
            Member {
                rank: r.rank,
                instance: r.instance.clone(),
                state: r.state,
                last_seen: now,
                detail: r.detail.clone(),
            },
        );
        let cause = match r.state {
            _ if restarted => Some(LossCause::Restarted),
            MemberState::Failed => Some(LossCause::Failed(r.detail.clone())),
            MemberState::Stopping => Some(LossCause::Stopped),
            MemberState::Starting | MemberState::Running => None,
        };
        if let Some(cause) = cause {
            self.lose(r.rank, cause);
        }
        Ok(Heard::Counted)
    }

    fn lose(&mut self, rank: u32, cause: LossCause) {
        if self.lost.is_none() {
            self.lost = Some(Lost { rank, cause });
        }
    }

    /// The verdict at `now`, waiting since `since` (when this node's engine started): a silence
    /// past the loss timeout is recorded as a loss.
    pub fn check(&mut self, now: Duration, since: Duration, t: &Timing) -> Verdict {
        let silent = self.members.values().find_map(|m| {
            let quiet = now.saturating_sub(m.last_seen);
            (quiet > t.loss_timeout).then_some((m.rank, quiet))
        });
        if let Some((rank, quiet)) = silent {
            self.lose(rank, LossCause::Silent(quiet));
        }
        if let Some(l) = &self.lost {
            return Verdict::Lost(l.clone());
        }
        let missing: Vec<u32> = (1..self.nnodes)
            .filter(|r| !self.members.contains_key(r))
            .collect();
        let starting: Vec<u32> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Starting)
            .map(|m| m.rank)
            .collect();
        let waited = now.saturating_sub(since);
        if missing.is_empty() && starting.is_empty() {
            Verdict::Complete
        } else if !missing.is_empty() && waited >= t.join_timeout {
            Verdict::NeverCame { missing, waited }
        } else {
            Verdict::Forming { missing, starting }
        }
    }

    /// The workers heard from, by rank (for `/status`).
    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }
}

/// Why a worker lost its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLost {
    /// The leader's aim-engine restarted (a new instance id).
    LeaderRestarted,
    /// The leader says the group is lost, and why.
    GroupLost(Option<String>),
    /// The leader is stopping.
    LeaderStopping,
    /// The leader refused this worker's report.
    Refused(String),
    /// No answer from the leader for this long.
    Silent(Duration),
}

/// A worker's judgement of its link to the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkVerdict {
    /// The leader has not answered yet.
    Waiting,
    /// The leader answered; `serving`: it serves the whole group.
    Joined {
        serving: bool,
    },
    /// The leader was not heard from within the join timeout.
    NeverAnswered {
        waited: Duration,
    },
    Lost(LinkLost),
}

/// A worker's view of its leader.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// The leader instance this worker joined (its first answer of a forming or complete
    /// group).
    joined: Option<String>,
    last_ok: Option<Duration>,
    serving: bool,
    /// The last failure to reach the leader, for the messages.
    pub last_error: Option<String>,
    /// The first loss; never cleared.
    lost: Option<LinkLost>,
}

impl Link {
    /// The leader answered at `now`. A leader other than the one joined means it restarted;
    /// a lost or stopping group before this worker ever joined is an earlier group's end
    /// (that leader is going away): waited out, not a loss.
    pub fn on_ack(&mut self, ack: &Ack, now: Duration) {
        let same = match &self.joined {
            Some(j) if *j != ack.instance => {
                self.lose(LinkLost::LeaderRestarted);
                return;
            }
            Some(_) => true,
            None => false,
        };
        match ack.group {
            GroupState::Forming | GroupState::Complete => {
                self.joined = Some(ack.instance.clone());
                self.last_ok = Some(now);
                self.last_error = None;
                self.serving = ack.ready && ack.group == GroupState::Complete;
            }
            GroupState::Lost if same => self.lose(LinkLost::GroupLost(ack.detail.clone())),
            GroupState::Stopping if same => self.lose(LinkLost::LeaderStopping),
            GroupState::Lost | GroupState::Stopping => {
                self.last_error = Some("the leader is ending an earlier group".into());
            }
        }
    }

    /// The leader instance this worker joined, for its reports.
    pub fn joined(&self) -> Option<String> {
        self.joined.clone()
    }

    /// The leader refused the report (a configuration error on one side).
    pub fn on_refused(&mut self, why: String) {
        self.lose(LinkLost::Refused(why));
    }

    /// The leader could not be reached (or answered something else).
    pub fn on_error(&mut self, error: String) {
        self.last_error = Some(error);
    }

    fn lose(&mut self, why: LinkLost) {
        if self.lost.is_none() {
            self.lost = Some(why);
        }
    }

    /// The verdict at `now`, waiting since `since` (when this node started waiting): a silence
    /// past the loss timeout is recorded as a loss.
    pub fn check(&mut self, now: Duration, since: Duration, t: &Timing) -> LinkVerdict {
        if let Some(ok) = self.last_ok {
            let quiet = now.saturating_sub(ok);
            if quiet > t.loss_timeout {
                self.lose(LinkLost::Silent(quiet));
            }
        }
        if let Some(l) = &self.lost {
            return LinkVerdict::Lost(l.clone());
        }
        match self.last_ok {
            Some(_) => LinkVerdict::Joined {
                serving: self.serving,
            },
            None if now.saturating_sub(since) >= t.join_timeout => LinkVerdict::NeverAnswered {
                waited: now.saturating_sub(since),
            },
            None => LinkVerdict::Waiting,
        }
    }

    /// How long ago the leader last answered.
    pub fn last_ok_age(&self, now: Duration) -> Option<Duration> {
        self.last_ok.map(|t| now.saturating_sub(t))
    }
}

impl LinkVerdict {
    /// One line for a log, `/status` or the readiness detail; `leader` is where reports go.
    pub fn describe(&self, leader: &str, last_error: Option<&str>) -> String {
        let error = last_error
            .map(|e| format!(" (last try: {e})"))
            .unwrap_or_default();
        match self {
            LinkVerdict::Waiting => format!("waiting for the leader at {leader}{error}"),
            LinkVerdict::Joined { serving: true } => {
                format!("in the group; the leader at {leader} serves")
            }
            LinkVerdict::Joined { serving: false } => {
                format!("in the group; the leader at {leader} is not serving yet")
            }
            LinkVerdict::NeverAnswered { waited } => format!(
                "the leader at {leader} did not answer within {:.0}s{error}: start it (rank 0), \
                 check AIM_LEADER_ADDR / LWS_LEADER_ADDRESS and --leader-port, or wait longer \
                 with --group-join-timeout",
                waited.as_secs_f64()
            ),
            LinkVerdict::Lost(l) => match l {
                LinkLost::LeaderRestarted => {
                    format!("the leader at {leader} restarted: this node's engine left the group")
                }
                LinkLost::GroupLost(Some(d)) => {
                    format!("the leader at {leader} lost the group: {d}")
                }
                LinkLost::GroupLost(None) => format!("the leader at {leader} lost the group"),
                LinkLost::LeaderStopping => format!("the leader at {leader} is stopping"),
                LinkLost::Refused(why) => {
                    format!("the leader at {leader} refused this node: {why}")
                }
                LinkLost::Silent(d) => format!(
                    "the leader at {leader} has not answered for {:.0}s{error}",
                    d.as_secs_f64()
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests;
