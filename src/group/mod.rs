//! Group facts (pure): which node of a multi-node launch this process is, from its
//! environment.
//!
//! Two spellings, read per fact, ours first:
//! - aim-engine's own (`--nnodes`, `--node-rank`, `--leader-addr`, `--dist-port`, which
//!   double as AIM_NNODES, AIM_NODE_RANK, AIM_LEADER_ADDR, AIM_DIST_PORT): for Slurm, a
//!   manual pair of hosts, any launcher;
//! - Kubernetes LeaderWorkerSet's, which its controller sets in every container of a group:
//!   LWS_GROUP_SIZE (pods in the group, leader included), LWS_WORKER_INDEX (0 for the
//!   leader, 1.. for the workers) and LWS_LEADER_ADDRESS (the leader pod's DNS name).
//!
//! No node count at all, or a count of 1, is one node (`None`). A count above 1 needs the
//! rank and the leader's address; a missing, malformed or out-of-range one is an error that
//! names the variable and the fix. Rank 0 is the leader: it serves the public port and the
//! API; the others are workers that run the engine headless.

pub mod live;
pub mod roster;

use serde::{Deserialize, Serialize};

pub const AIM_NNODES: &str = "AIM_NNODES";
pub const AIM_NODE_RANK: &str = "AIM_NODE_RANK";
pub const AIM_LEADER_ADDR: &str = "AIM_LEADER_ADDR";
pub const AIM_DIST_PORT: &str = "AIM_DIST_PORT";
pub const LWS_GROUP_SIZE: &str = "LWS_GROUP_SIZE";
pub const LWS_WORKER_INDEX: &str = "LWS_WORKER_INDEX";
pub const LWS_LEADER_ADDRESS: &str = "LWS_LEADER_ADDRESS";

/// The engines' rendezvous port on the leader when none is given (vLLM's own
/// `--master-port` default; SGLang's `--dist-init-addr` is given the same).
pub const DEFAULT_DIST_PORT: u16 = 29501;

/// The most nodes a group may have (as many as a recipe may span).
pub const MAX_NODES: u32 = crate::recipe::MAX_NODES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Rank 0: the engine's API server and aim-engine's public port.
    Leader,
    /// Rank 1..: the engine without an API server; aim-engine answers health only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Worker => "worker",
        }
    }
}

/// Where the group facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// At least one fact from AIM_* / our flags.
    Aim,
    /// All from LeaderWorkerSet's variables.
    LeaderWorkerSet,
}

/// One node's view of its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Nodes in the group (at least 2).
    pub nnodes: u32,
    /// This node's index, 0 = the leader.
    pub rank: u32,
    /// The leader's host name or address, as the other nodes reach it.
    pub leader_addr: String,
    /// The engines' rendezvous port on the leader.
    pub dist_port: u16,
    pub source: Source,
}

impl Group {
    pub fn role(&self) -> Role {
        if self.rank == 0 {
            Role::Leader
        } else {
            Role::Worker
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error(
        "{var}={value:?} is not a whole number; set it to {what}, or unset it to run on one node"
    )]
    NotANumber {
        var: &'static str,
        value: String,
        what: &'static str,
    },
    #[error(
        "{var}={value} is out of range: a group has 1 to {MAX_NODES} nodes; set the node count, or unset it to run on one node"
    )]
    NodeCount { var: &'static str, value: u32 },
    #[error(
        "{present} is set but {missing} is not: {missing} is needed too ({why}); set it, or unset {present} to run on one node"
    )]
    Missing {
        present: &'static str,
        missing: &'static str,
        why: &'static str,
    },
    #[error(
        "{var}={rank} is not a rank of a group of {nnodes} ({nnodes_var}): ranks are 0 (the leader) to {last}; set it to this node's index",
        last = nnodes - 1
    )]
    RankOutOfRange {
        var: &'static str,
        rank: u32,
        nnodes_var: &'static str,
        nnodes: u32,
    },
    #[error(
        "{var}={value:?} is not a host name or address; set it to the leader's host name or IP address, as the other nodes reach it (no scheme, no port)"
    )]
    BadAddress { var: &'static str, value: String },
}

/// A fact, ours first, then LeaderWorkerSet's: (the variable it came from, its value).
fn fact(
    env: &dyn Fn(&str) -> Option<String>,
    ours: &'static str,
    lws: &'static str,
) -> Option<(&'static str, String)> {
    [ours, lws].into_iter().find_map(|var| {
        env(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| (var, v))
    })
}

fn number(var: &'static str, value: &str, what: &'static str) -> Result<u32, GroupError> {
    value.parse().map_err(|_| GroupError::NotANumber {
        var,
        value: value.to_string(),
        what,
    })
}

fn address(var: &'static str, value: &str) -> Result<String, GroupError> {
    let bad = value.contains(char::is_whitespace)
        || value.contains('/')
        || value.contains('@')
        || value.starts_with('-');
    // `host:port` is not taken: the port is AIM_DIST_PORT's (an IPv6 literal has several).
    let host_port = value.matches(':').count() == 1;
    if bad || host_port {
        return Err(GroupError::BadAddress {
            var,
            value: value.to_string(),
        });
    }
    Ok(value.to_string())
}

/// The group this node is in, from its environment (`env` answers a variable's value); None
/// for one node.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Group>, GroupError> {
    let nnodes = fact(env, AIM_NNODES, LWS_GROUP_SIZE);
    let rank = fact(env, AIM_NODE_RANK, LWS_WORKER_INDEX);
    let leader = fact(env, AIM_LEADER_ADDR, LWS_LEADER_ADDRESS);
    let Some((nnodes_var, nnodes_text)) = nnodes else {
        if let Some((present, _)) = rank.as_ref().or(leader.as_ref()) {
            return Err(GroupError::Missing {
                present,
                missing: AIM_NNODES,
                why: "the number of nodes in the group",
            });
        }
        return Ok(None);
    };
    let n = number(nnodes_var, &nnodes_text, "the number of nodes in the group")?;
    if n == 0 || n > MAX_NODES {
        return Err(GroupError::NodeCount {
            var: nnodes_var,
            value: n,
        });
    }
    let r = match &rank {
        Some((var, text)) => (*var, number(var, text, "this node's index in the group")?),
        None if n == 1 => (AIM_NODE_RANK, 0),
        None => {
            return Err(GroupError::Missing {
                present: nnodes_var,
                missing: AIM_NODE_RANK,
                why: "this node's index in the group, 0 on the leader",
            });
        }
    };
    if r.1 >= n {
        return Err(GroupError::RankOutOfRange {
            var: r.0,
            rank: r.1,
            nnodes_var,
            nnodes: n,
        });
    }
    if n == 1 {
        return Ok(None);
    }
    let Some((leader_var, leader_text)) = leader else {
        return Err(GroupError::Missing {
            present: nnodes_var,
            missing: AIM_LEADER_ADDR,
            why: "the leader's address, on every node of the group",
        });
    };
    let leader_addr = address(leader_var, &leader_text)?;
    let dist_port = match fact(env, AIM_DIST_PORT, AIM_DIST_PORT) {
        Some((var, text)) => match text.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(GroupError::NotANumber {
                    var,
                    value: text,
                    what: "a TCP port (1-65535) on the leader",
                });
            }
        },
        None => DEFAULT_DIST_PORT,
    };
    let lws = [nnodes_var, r.0, leader_var]
        .iter()
        .all(|v| v.starts_with("LWS_"));
    Ok(Some(Group {
        nnodes: n,
        rank: r.1,
        leader_addr,
        dist_port,
        source: if lws && rank.is_some() {
            Source::LeaderWorkerSet
        } else {
            Source::Aim
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        }
    }

    fn group(nnodes: u32, rank: u32, leader: &str, port: u16, source: Source) -> Group {
        Group {
            nnodes,
            rank,
            leader_addr: leader.into(),
            dist_port: port,
            source,
        }
    }

    /// (what, environment, the group or the words of the error)
    #[test]
    fn group_facts_table() {
        let lws_leader = "my-lws-0.my-lws.default.svc.cluster.local";
        type Row = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Result<Option<Group>, Vec<&'static str>>,
        );
        let lws = Source::LeaderWorkerSet;
        let rows: Vec<Row> = vec![
            ("nothing: one node", vec![], Ok(None)),
            ("blank is unset", vec![(AIM_NNODES, " ")], Ok(None)),
            (
                "a group of one is one node",
                vec![
                    (LWS_GROUP_SIZE, "1"),
                    (LWS_WORKER_INDEX, "0"),
                    (LWS_LEADER_ADDRESS, "x"),
                ],
                Ok(None),
            ),
            ("AIM_NNODES=1 alone", vec![(AIM_NNODES, "1")], Ok(None)),
            (
                "LWS leader",
                vec![
                    (LWS_GROUP_SIZE, "2"),
                    (LWS_WORKER_INDEX, "0"),
                    (LWS_LEADER_ADDRESS, lws_leader),
                ],
                Ok(Some(group(2, 0, lws_leader, DEFAULT_DIST_PORT, lws))),
            ),
            (
                "LWS worker",
                vec![
                    (LWS_GROUP_SIZE, "3"),
                    (LWS_WORKER_INDEX, "2"),
                    (LWS_LEADER_ADDRESS, lws_leader),
                ],
                Ok(Some(group(3, 2, lws_leader, DEFAULT_DIST_PORT, lws))),
            ),
            (
                "ours win over LWS",
                vec![
                    (AIM_NNODES, "2"),
                    (LWS_GROUP_SIZE, "4"),
                    (LWS_WORKER_INDEX, "1"),
                    (LWS_LEADER_ADDRESS, "l"),
                ],
                Ok(Some(group(2, 1, "l", DEFAULT_DIST_PORT, Source::Aim))),
            ),
            (
                "manual pair, port",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "1"),
                    (AIM_LEADER_ADDR, "10.0.0.1"),
                    (AIM_DIST_PORT, "30000"),
                ],
                Ok(Some(group(2, 1, "10.0.0.1", 30000, Source::Aim))),
            ),
            (
                "IPv6 leader",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "0"),
                    (AIM_LEADER_ADDR, "fd00::1"),
                ],
                Ok(Some(group(2, 0, "fd00::1", DEFAULT_DIST_PORT, Source::Aim))),
            ),
            (
                "rank without count",
                vec![(AIM_NODE_RANK, "1")],
                Err(vec!["AIM_NODE_RANK is set but AIM_NNODES is not"]),
            ),
            (
                "leader without count",
                vec![(LWS_LEADER_ADDRESS, "l")],
                Err(vec!["LWS_LEADER_ADDRESS is set", "AIM_NNODES"]),
            ),
            (
                "count without rank",
                vec![(AIM_NNODES, "2"), (AIM_LEADER_ADDR, "l")],
                Err(vec!["AIM_NODE_RANK", "0 on the leader"]),
            ),
            (
                "count without leader",
                vec![(LWS_GROUP_SIZE, "2"), (LWS_WORKER_INDEX, "1")],
                Err(vec!["LWS_GROUP_SIZE is set", "AIM_LEADER_ADDR"]),
            ),
            (
                "count not a number",
                vec![(AIM_NNODES, "two")],
                Err(vec!["AIM_NNODES=\"two\"", "whole number"]),
            ),
            (
                "count zero",
                vec![(AIM_NNODES, "0")],
                Err(vec!["AIM_NNODES=0", "1 to 64"]),
            ),
            (
                "count too big",
                vec![(LWS_GROUP_SIZE, "65")],
                Err(vec!["LWS_GROUP_SIZE=65"]),
            ),
            (
                "rank negative",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "-1"),
                    (AIM_LEADER_ADDR, "l"),
                ],
                Err(vec!["AIM_NODE_RANK=\"-1\""]),
            ),
            (
                "rank past the group",
                vec![
                    (LWS_GROUP_SIZE, "2"),
                    (LWS_WORKER_INDEX, "2"),
                    (LWS_LEADER_ADDRESS, "l"),
                ],
                Err(vec![
                    "LWS_WORKER_INDEX=2",
                    "group of 2 (LWS_GROUP_SIZE)",
                    "0 (the leader) to 1",
                ]),
            ),
            (
                "rank of a group of one",
                vec![(AIM_NNODES, "1"), (AIM_NODE_RANK, "1")],
                Err(vec!["AIM_NODE_RANK=1"]),
            ),
            (
                "leader with a port",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "0"),
                    (AIM_LEADER_ADDR, "host:29501"),
                ],
                Err(vec!["AIM_LEADER_ADDR=\"host:29501\"", "no port"]),
            ),
            (
                "leader a URL",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "0"),
                    (AIM_LEADER_ADDR, "http://h"),
                ],
                Err(vec!["AIM_LEADER_ADDR"]),
            ),
            (
                "bad port",
                vec![
                    (AIM_NNODES, "2"),
                    (AIM_NODE_RANK, "0"),
                    (AIM_LEADER_ADDR, "h"),
                    (AIM_DIST_PORT, "0"),
                ],
                Err(vec!["AIM_DIST_PORT=\"0\"", "TCP port"]),
            ),
        ];
        for (what, pairs, want) in rows {
            let got = from_env(&env_of(&pairs));
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{what}"),
                (Err(e), Err(words)) => {
                    let shown = e.to_string();
                    for w in words {
                        assert!(shown.contains(w), "{what}: `{shown}` should say `{w}`");
                    }
                }
                _ => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn roles() {
        let leader = group(2, 0, "l", 1, Source::Aim);
        let worker = group(2, 1, "l", 1, Source::Aim);
        assert_eq!((leader.role(), worker.role()), (Role::Leader, Role::Worker));
        assert_eq!(worker.role().as_str(), "worker");
    }
}
