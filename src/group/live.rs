//! A group node's live state, shared by the supervisor (which judges it), the public port
//! (where the leader hears its workers) and a worker's reporter (which hears the leader).

use super::roster::{Ack, GroupState, Link, Member, Report, ReportError, Roster, Timing};
use super::{Group, Role};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// This node's side of the group.
pub enum Side {
    Leader(Mutex<Roster>),
    Worker(Mutex<Link>),
}

/// A node of a group, as `serve` runs it.
pub struct Live {
    pub group: Group,
    pub timing: Timing,
    /// This aim-engine process, as the other nodes know it (new on every start).
    pub instance: String,
    /// The leader's public port (where the workers report).
    pub leader_port: u16,
    pub side: Side,
    /// The last verdict, in words (for `/status` and the readiness detail).
    detail: Mutex<String>,
}

/// The group part of `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub role: Role,
    pub rank: u32,
    pub nnodes: u32,
    /// Where the workers report: the leader's host and public port.
    pub leader: String,
    /// The last verdict, in words.
    pub state: String,
    /// The leader: every worker heard from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// A worker: seconds since the leader last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_answered_s_ago: Option<f64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Live {
    pub fn new(group: Group, timing: Timing, leader_port: u16) -> Self {
        let side = match group.role() {
            Role::Leader => Side::Leader(Mutex::new(Roster::new(group.nnodes))),
            Role::Worker => Side::Worker(Mutex::new(Link::default())),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Live {
            instance: format!("{}-{nanos:x}", std::process::id()),
            detail: Mutex::new(String::new()),
            group,
            timing,
            leader_port,
            side,
        }
    }

    pub fn role(&self) -> Role {
        self.group.role()
    }

    /// `host:port` of the leader's public port.
    pub fn leader(&self) -> String {
        let host = &self.group.leader_addr;
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.leader_port)
        } else {
            format!("{host}:{}", self.leader_port)
        }
    }

    pub fn set_detail(&self, d: String) {
        *lock(&self.detail) = d;
    }

    pub fn detail(&self) -> String {
        lock(&self.detail).clone()
    }

    /// The leader takes a worker's report heard at `now`, and answers it. `ready`: the leader
    /// serves; `stopping`: it was asked to stop. A worker's report to a worker is refused.
    pub fn hear(
        &self,
        r: &Report,
        now: Duration,
        ready: bool,
        stopping: bool,
    ) -> Result<Ack, ReportError> {
        let Side::Leader(roster) = &self.side else {
            return Err(ReportError::Rank {
                rank: self.group.rank,
                nnodes: self.group.nnodes,
            });
        };
        let mut roster = lock(roster);
        if roster.report(r, now, &self.instance)? == super::roster::Heard::Stale {
            // The worker learns from the instance that its leader restarted.
            return Ok(Ack {
                instance: self.instance.clone(),
                group: GroupState::Forming,
                ready: false,
                detail: None,
            });
        }
        // The join timeout is the supervisor's to judge: here only losses count.
        let verdict = roster.check(now, now, &self.timing);
        let group = if stopping {
            GroupState::Stopping
        } else {
            verdict.state()
        };
        let complete = group == GroupState::Complete;
        Ok(Ack {
            instance: self.instance.clone(),
            group,
            ready: ready && complete,
            detail: (group == GroupState::Lost).then(|| verdict.describe(self.leader_port)),
        })
    }

    /// The group part of `/status` at `now`.
    pub fn status(&self, now: Duration) -> GroupStatus {
        let (members, answered) = match &self.side {
            Side::Leader(r) => (lock(r).members(), None),
            Side::Worker(l) => (Vec::new(), lock(l).last_ok_age(now)),
        };
        GroupStatus {
            role: self.role(),
            rank: self.group.rank,
            nnodes: self.group.nnodes,
            leader: self.leader(),
            state: self.detail(),
            members,
            leader_answered_s_ago: answered.map(|d| d.as_secs_f64()),
        }
    }
}
