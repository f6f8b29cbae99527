//! The engines' multi-node flags for one node of a group (pure).
//!
//! Both pinned engines form the group themselves, without Ray; the names are the ones their
//! parsers take (`tables/<engine>-<version>.json`):
//! - vLLM (mp executor): `--nnodes N --node-rank R --master-addr LEADER --master-port P` on
//!   every node, and `--headless` on the workers (rank > 0): they run the model's share
//!   without an API server. The world (tensor x pipeline x data parallel) must divide into
//!   the nodes: tensor parallel runs inside each node, or over several when a recipe sets it
//!   to a multiple of the GPUs per node, and pipeline (and data) parallel span the rest
//!   ([`check_split`]).
//! - SGLang: `--nnodes N --node-rank R --dist-init-addr LEADER:P`; its ranks above 0 serve
//!   no HTTP API either.
//!
//! These flags are the system's (the group facts decide them): the same keys in a recipe's
//! or the user's args are dropped, like `--port`.

use super::CommandError;
use super::argv::{requested_tensor_parallel, tp_name};
use crate::group::{Group, Role};
use crate::types::Engine;

/// Logical flag names this module sets, per engine.
pub fn flag_names(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Vllm => &[
            "nnodes",
            "node-rank",
            "master-addr",
            "master-port",
            "headless",
        ],
        Engine::Sglang => &["nnodes", "node-rank", "dist-init-addr"],
    }
}

/// The parallel sizes that cross nodes besides tensor parallel: vLLM's pipeline and data
/// parallel, SGLang's pipeline parallel (its data parallel lives inside tensor parallel).
pub fn spanning(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Vllm => &["pipeline-parallel-size", "data-parallel-size"],
        Engine::Sglang => &["pp-size"],
    }
}

/// The tensor-parallel size a node of `gpus` GPUs runs in a group, for an args' `requested`
/// size: a multiple of `gpus` spans that many nodes (`tensor-parallel-size: 16` over nodes
/// of 8, SGLang's usual 2-node launch) and is run as given; anything else is the system's,
/// `gpus` (inside the node).
fn group_tensor_parallel(gpus: u32, requested: Option<u64>) -> u32 {
    let g = u64::from(gpus.max(1));
    match requested {
        Some(tp) if tp > g && tp.is_multiple_of(g) => u32::try_from(tp).unwrap_or(gpus),
        _ => gpus,
    }
}

/// The TP size a node of `gpus` GPUs in a group of `nnodes` runs for `args` (in merge order,
/// recipe then user: the last that names a TP wins); `gpus` on one node.
pub fn tensor_parallel_of(
    engine: Engine,
    gpus: u32,
    nnodes: u32,
    args: &[&indexmap::IndexMap<String, serde_json::Value>],
) -> u32 {
    if nnodes <= 1 {
        return gpus;
    }
    let requested = args
        .iter()
        .rev()
        .find_map(|a| requested_tensor_parallel(engine, a));
    group_tensor_parallel(gpus, requested.map(u64::from))
}

/// Checks that the parallel sizes span the group's `nnodes` nodes of `gpus` GPUs each and
/// returns the tensor-parallel size to run ([`group_tensor_parallel`]; `size` answers a
/// logical flag's merged value, recipe or user, None when unset). The nodes tensor parallel
/// spans times the sizes that cross nodes (unset: 1) must be `nnodes`; the error names each
/// size that would make them so.
pub fn check_split(
    engine: Engine,
    nnodes: u32,
    gpus: u32,
    size: impl Fn(&str) -> Option<u64>,
) -> Result<u32, CommandError> {
    let g = u64::from(gpus.max(1));
    let nodes = u64::from(nnodes);
    let requested = size(tp_name(engine));
    let tp = group_tensor_parallel(gpus, requested);
    let tp_nodes = u64::from(tp) / g;
    let names = spanning(engine);
    let sizes: Vec<u64> = names.iter().map(|n| size(n).unwrap_or(1).max(1)).collect();
    let crossing = sizes.iter().fold(1u64, |a, b| a.saturating_mul(*b));
    let got = crossing.saturating_mul(tp_nodes);
    if got == nodes {
        return Ok(tp);
    }
    let mut spans: Vec<String> = Vec::new();
    match requested {
        Some(r) if tp_nodes > 1 => spans.push(format!(
            "{} {r} ({tp_nodes} nodes of {gpus} GPUs)",
            tp_name(engine)
        )),
        Some(r) if r != g => spans.push(format!(
            "{} {r} (not a multiple of the {gpus} GPUs per node: runs as {gpus})",
            tp_name(engine)
        )),
        _ => {}
    }
    spans.extend(names.iter().zip(&sizes).map(|(n, v)| format!("{n} {v}")));
    // Each fix changes one size and keeps the others.
    let mut fixes: Vec<String> = Vec::new();
    let others = crossing / sizes[0];
    let without_first = tp_nodes.saturating_mul(others);
    if nodes.is_multiple_of(without_first) {
        fixes.push(format!("`{}: {}`", names[0], nodes / without_first));
    }
    if nodes.is_multiple_of(crossing) {
        let span = nodes / crossing;
        fixes.push(if span == 1 {
            format!(
                "`{}: {gpus}` (tensor parallel inside each node)",
                tp_name(engine)
            )
        } else {
            format!(
                "`{}: {}` to span {span} nodes with tensor parallel",
                tp_name(engine),
                g * span
            )
        });
    }
    let fix = if fixes.is_empty() {
        format!("lower them so that they multiply to {nnodes}")
    } else {
        format!(
            "set {} in the engine args (the recipe's, or --engine-args)",
            fixes.join(", or ")
        )
    };
    Err(CommandError::NodeSplit {
        engine,
        nodes: nnodes,
        spans: spans.join(" x "),
        got,
        fix,
    })
}

/// `host:port` for a rendezvous address; an IPv6 literal gets its brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The argv words for this node of `group`.
pub fn args(engine: Engine, group: &Group) -> Vec<String> {
    let mut out = vec![
        "--nnodes".to_string(),
        group.nnodes.to_string(),
        "--node-rank".to_string(),
        group.rank.to_string(),
    ];
    match engine {
        Engine::Vllm => {
            out.extend([
                "--master-addr".to_string(),
                group.leader_addr.clone(),
                "--master-port".to_string(),
                group.dist_port.to_string(),
            ]);
            if group.role() == Role::Worker {
                out.push("--headless".to_string());
            }
        }
        Engine::Sglang => out.extend([
            "--dist-init-addr".to_string(),
            host_port(&group.leader_addr, group.dist_port),
        ]),
    }
    out
}

/// The value the system gives a multi-node flag, for `plan`'s notes.
pub fn system_value(name: &str, group: Option<&Group>) -> Option<String> {
    let g = group?;
    Some(match name {
        "nnodes" => g.nnodes.to_string(),
        "node-rank" => g.rank.to_string(),
        "master-addr" => g.leader_addr.clone(),
        "master-port" => g.dist_port.to_string(),
        "headless" => (g.role() == Role::Worker).to_string(),
        "dist-init-addr" => host_port(&g.leader_addr, g.dist_port),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::table;
    use crate::group::Source;

    fn group(nnodes: u32, rank: u32, leader: &str) -> Group {
        Group {
            nnodes,
            rank,
            leader_addr: leader.into(),
            dist_port: 29501,
            source: Source::Aim,
        }
    }

    /// (engine, group, argv words)
    #[test]
    fn multinode_args_table() {
        let rows: &[(Engine, Group, &str)] = &[
            (
                Engine::Vllm,
                group(2, 0, "lead"),
                "--nnodes 2 --node-rank 0 --master-addr lead --master-port 29501",
            ),
            (
                Engine::Vllm,
                group(4, 3, "10.0.0.1"),
                "--nnodes 4 --node-rank 3 --master-addr 10.0.0.1 --master-port 29501 --headless",
            ),
            (
                Engine::Sglang,
                group(2, 0, "lead"),
                "--nnodes 2 --node-rank 0 --dist-init-addr lead:29501",
            ),
            (
                Engine::Sglang,
                group(2, 1, "fd00::1"),
                "--nnodes 2 --node-rank 1 --dist-init-addr [fd00::1]:29501",
            ),
        ];
        for (engine, g, want) in rows {
            assert_eq!(
                args(*engine, g).join(" "),
                *want,
                "{engine} rank {}",
                g.rank
            );
        }
    }

    /// Every flag this module writes is one the pinned engine's parser takes.
    #[test]
    fn flags_exist_in_the_tables() {
        for engine in [Engine::Vllm, Engine::Sglang] {
            let t = table::newest(engine);
            for name in flag_names(engine) {
                assert!(
                    matches!(
                        crate::engine::flags::resolve(t, name),
                        crate::engine::flags::Resolved::Known { opt: Some(_), .. }
                    ),
                    "{engine} {} has no --{name}",
                    t.version
                );
                assert!(system_value(name, Some(&group(2, 1, "h"))).is_some());
            }
            for word in args(engine, &group(2, 1, "h")) {
                if let Some(flag) = word.strip_prefix("--") {
                    assert!(flag_names(engine).contains(&flag), "{flag}");
                }
            }
        }
    }

    /// The command and notes of node `g` (8 GPUs) for model `m` on port 9.
    fn command_of(
        engine: Engine,
        g: &Group,
        recipe: &indexmap::IndexMap<String, serde_json::Value>,
        user: &indexmap::IndexMap<String, serde_json::Value>,
    ) -> (crate::engine::EngineCommand, Vec<String>) {
        let env = indexmap::IndexMap::new();
        let input = crate::engine::CommandInput {
            engine,
            model: "m",
            served_model_name: "m",
            served_aliases: &[],
            port: 9,
            tensor_parallel: 8,
            recipe_args: recipe,
            user_args: user,
            recipe_env: &env,
            ordinals: &[],
            launcher: None,
            engine_version: None,
            group: Some(g),
        };
        crate::engine::build_command_with_notes(&input).expect("builds")
    }

    /// The whole command of each role: the multi-node flags after the system ones, and a
    /// recipe's or user's own multi-node keys dropped (with a note), never duplicated.
    #[test]
    fn command_per_role() {
        use indexmap::IndexMap;
        use serde_json::json;
        let recipe: IndexMap<String, serde_json::Value> = [
            ("pipeline-parallel-size".to_string(), json!(2)),
            ("nnodes".to_string(), json!(3)),
        ]
        .into_iter()
        .collect();
        let user: IndexMap<String, serde_json::Value> =
            [("master-addr".to_string(), json!("elsewhere"))]
                .into_iter()
                .collect();
        let rows: &[(Engine, u32, &str)] = &[
            (
                Engine::Vllm,
                0,
                "vllm serve m --host 127.0.0.1 --port 9 --tensor-parallel-size 8 --served-model-name m --nnodes 2 --node-rank 0 --master-addr lead --master-port 29501 --pipeline-parallel-size 2",
            ),
            (
                Engine::Vllm,
                1,
                "vllm serve m --host 127.0.0.1 --port 9 --tensor-parallel-size 8 --served-model-name m --nnodes 2 --node-rank 1 --master-addr lead --master-port 29501 --headless --pipeline-parallel-size 2",
            ),
        ];
        for (engine, rank, want) in rows {
            let (cmd, notes) = command_of(*engine, &group(2, *rank, "lead"), &recipe, &user);
            assert_eq!(cmd.argv.join(" "), *want);
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains("`nnodes: 3` replaced by the system value `2`")),
                "{notes:?}"
            );
            assert!(
                notes
                    .iter()
                    .any(|n| n
                        .contains("`master-addr: elsewhere` replaced by the system value `lead`")),
                "{notes:?}"
            );
        }
    }

    /// A recipe spanning the nodes with tensor parallel: its size is run (not replaced by
    /// this node's GPUs), and the plan says it spans the nodes.
    #[test]
    fn tensor_parallel_over_nodes() {
        use indexmap::IndexMap;
        use serde_json::json;
        let user = IndexMap::new();
        for (engine, key, want) in [
            (
                Engine::Vllm,
                "tensor-parallel-size",
                "vllm serve m --host 127.0.0.1 --port 9 --tensor-parallel-size 16 --served-model-name m --nnodes 2 --node-rank 1 --master-addr lead --master-port 29501 --headless",
            ),
            (
                Engine::Sglang,
                "tp-size",
                "python3 -m sglang.launch_server --model-path m --host 127.0.0.1 --port 9 --tp-size 16 --served-model-name m --nnodes 2 --node-rank 1 --dist-init-addr lead:29501",
            ),
        ] {
            let recipe: IndexMap<String, serde_json::Value> =
                [(key.to_string(), json!(16))].into_iter().collect();
            let (cmd, notes) = command_of(engine, &group(2, 1, "lead"), &recipe, &user);
            assert_eq!(cmd.argv.join(" "), want);
            assert!(
                notes
                    .iter()
                    .any(|n| n == "tensor parallel 16 spans 2 of the group's 2 nodes (8 GPUs each)"),
                "{notes:?}"
            );
            assert!(!notes.iter().any(|n| n.contains("replaced")), "{notes:?}");
        }
    }

    /// (engine, nodes, sizes given, the tensor parallel run or the words of the error); 8 GPUs
    /// per node.
    #[test]
    fn split_over_nodes_table() {
        type Row = (
            Engine,
            u32,
            &'static [(&'static str, u64)],
            Result<u32, &'static str>,
        );
        let rows: &[Row] = &[
            (Engine::Vllm, 2, &[("pipeline-parallel-size", 2)], Ok(8)),
            (Engine::Vllm, 2, &[("data-parallel-size", 2)], Ok(8)),
            (
                Engine::Vllm,
                4,
                &[("pipeline-parallel-size", 2), ("data-parallel-size", 2)],
                Ok(8),
            ),
            (
                Engine::Vllm,
                2,
                &[],
                Err(
                    "pipeline-parallel-size 1 x data-parallel-size 1 spans 1 node(s), not 2; set `pipeline-parallel-size: 2`, or `tensor-parallel-size: 16` to span 2 nodes with tensor parallel in the engine args (the recipe's, or --engine-args)",
                ),
            ),
            (
                Engine::Vllm,
                2,
                &[("pipeline-parallel-size", 4)],
                Err("spans 4 node(s), not 2; set `pipeline-parallel-size: 2` in the engine args"),
            ),
            // No one size fixes it.
            (
                Engine::Vllm,
                3,
                &[("data-parallel-size", 2)],
                Err("spans 2 node(s), not 3; lower them so that they multiply to 3"),
            ),
            // Tensor parallel over nodes: a multiple of the GPUs per node.
            (Engine::Vllm, 2, &[("tensor-parallel-size", 16)], Ok(16)),
            (
                Engine::Vllm,
                4,
                &[("tensor-parallel-size", 16), ("pipeline-parallel-size", 2)],
                Ok(16),
            ),
            (
                Engine::Vllm,
                2,
                &[("tensor-parallel-size", 16), ("pipeline-parallel-size", 2)],
                Err(
                    "tensor-parallel-size 16 (2 nodes of 8 GPUs) x pipeline-parallel-size 2 x data-parallel-size 1 spans 4 node(s), not 2; set `pipeline-parallel-size: 1`, or `tensor-parallel-size: 8` (tensor parallel inside each node) in",
                ),
            ),
            // Not a multiple: the system's size (this node's GPUs) and no span.
            (
                Engine::Vllm,
                2,
                &[("tensor-parallel-size", 12)],
                Err(
                    "tensor-parallel-size 12 (not a multiple of the 8 GPUs per node: runs as 8) x pipeline-parallel-size 1 x data-parallel-size 1 spans 1 node(s), not 2",
                ),
            ),
            (
                Engine::Vllm,
                2,
                &[("tensor-parallel-size", 8)],
                Err("spans 1 node(s), not 2"),
            ),
            (Engine::Sglang, 2, &[("pp-size", 2)], Ok(8)),
            (Engine::Sglang, 2, &[("tp-size", 16)], Ok(16)),
            (
                Engine::Sglang,
                2,
                &[("dp-size", 2)],
                Err("set `pp-size: 2`, or `tp-size: 16` to span 2 nodes with tensor parallel"),
            ),
        ];
        for (engine, nodes, given, want) in rows {
            let got = check_split(*engine, *nodes, 8, |n| {
                given.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
            });
            match (got, want) {
                (Ok(tp), Ok(want)) => assert_eq!(tp, *want, "{engine} {nodes} {given:?}"),
                (Err(e), Err(words)) => assert!(e.to_string().contains(words), "{e}"),
                (got, _) => panic!("{engine} {nodes} {given:?}: {got:?}"),
            }
        }
        for engine in [Engine::Vllm, Engine::Sglang] {
            let t = table::newest(engine);
            for name in spanning(engine) {
                assert!(
                    matches!(
                        crate::engine::flags::resolve(t, name),
                        crate::engine::flags::Resolved::Known { opt: Some(_), .. }
                    ),
                    "{engine} has no --{name}"
                );
            }
        }
    }
}
