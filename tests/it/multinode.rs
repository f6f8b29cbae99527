//! Multi-node groups at the command line: the group facts from LeaderWorkerSet's variables
//! and ours, each role's command, and the errors that name the variable or the group to start.

use crate::support::{AimEngine, project_root};

const MI300X: &str = "tests/fixtures/sysfs/mi300x-8gpu-spx";
const LLAMA_405B: &str = "meta-llama/Llama-3.1-405B-Instruct";
const TWO_NODES: &str = "vllm-mi300x-fp16-tp8-nodes2-throughput";

fn cmd(hf: &std::path::Path) -> AimEngine {
    AimEngine::new()
        .env("AIM_ROOT", project_root().join(MI300X))
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_HUB_CACHE", hf)
        .env("AIM_LOG_LEVEL", "warn")
}

/// A LeaderWorkerSet group of 2 (its three variables): the leader and the worker plan the
/// 2-node recipe, each with its own role and flags.
#[test]
fn lws_roles_plan_their_own_commands() {
    let hf = tempfile::tempdir().unwrap();
    let leader = "llama-0.llama.default.svc.cluster.local";
    for (index, role, tail) in [
        ("0", "leader", "--master-port 29501 --async-scheduling"),
        (
            "1",
            "worker",
            "--master-port 29501 --headless --async-scheduling",
        ),
    ] {
        let out = cmd(hf.path())
            .env("LWS_GROUP_SIZE", "2")
            .env("LWS_WORKER_INDEX", index)
            .env("LWS_LEADER_ADDRESS", leader)
            .args(["plan", LLAMA_405B, "--format", "json"])
            .output();
        let v = out.expect_code(0).json();
        assert_eq!(v["recipe"]["id"], TWO_NODES, "{}", out.report());
        assert_eq!(v["recipe"]["nodes"], 2);
        assert_eq!(v["node"]["role"], role);
        assert_eq!(v["node"]["gpus_per_node"], 8);
        assert_eq!(v["node"]["leader_addr"], leader);
        let argv: Vec<&str> = v["command"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let line = argv.join(" ");
        let want = format!("--nnodes 2 --node-rank {index} --master-addr {leader} {tail}");
        assert!(line.contains(&want), "{role}: {line}");
    }
}

/// Bad or partial group facts are usage errors that name the variable; the 2-node recipe
/// outside a group says how to start one.
#[test]
fn group_errors_name_the_variable() {
    let hf = tempfile::tempdir().unwrap();
    // (environment, extra arguments, exit status, words of the error)
    type Row<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], i32, &'a str);
    let rows: &[Row] = &[
        (
            &[
                ("LWS_GROUP_SIZE", "2"),
                ("LWS_WORKER_INDEX", "5"),
                ("LWS_LEADER_ADDRESS", "l"),
            ],
            &[],
            64,
            "LWS_WORKER_INDEX=5",
        ),
        (
            &[("AIM_NNODES", "2"), ("AIM_NODE_RANK", "0")],
            &[],
            64,
            "AIM_LEADER_ADDR",
        ),
        (&[], &["--nnodes", "two"], 64, "AIM_NNODES=\"two\""),
        (
            &[],
            &["--recipe", TWO_NODES],
            69,
            "AIM_NNODES=2, AIM_NODE_RANK",
        ),
    ];
    for (env, extra, code, words) in rows {
        let mut c = cmd(hf.path()).args(["plan", LLAMA_405B]).args(*extra);
        for (k, v) in *env {
            c = c.env(k, v);
        }
        let out = c.output();
        out.expect_code(*code);
        assert!(out.stderr().contains(words), "{words}: {}", out.report());
    }
}

/// `serve` as a worker refuses with the reason, before it plans or starts anything.
#[test]
fn serve_as_worker_is_refused() {
    let hf = tempfile::tempdir().unwrap();
    let out = cmd(hf.path())
        .fake_engine()
        .env("AIM_NNODES", "2")
        .env("AIM_NODE_RANK", "1")
        .env("AIM_LEADER_ADDR", "127.0.0.1")
        .args(["serve", LLAMA_405B])
        .output();
    out.expect_code(64);
    assert!(
        out.stderr().contains("worker 1 of a group of 2"),
        "{}",
        out.report()
    );
}

/// `recipes` shows a 2-node recipe's GPUs as `8x2` and, outside a group, why it is not used;
/// in a group of 2 it is the compatible one and the one-node recipes are not.
#[test]
fn recipes_show_the_node_count() {
    let hf = tempfile::tempdir().unwrap();
    let row = |out: &crate::support::Finished| {
        out.stdout()
            .lines()
            .find(|l| l.starts_with(TWO_NODES))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {TWO_NODES} row: {}", out.report()))
    };
    let alone = cmd(hf.path()).args(["recipes", LLAMA_405B]).output();
    let line = row(alone.expect_code(0));
    assert!(
        line.contains(" 8x2 ") && line.contains("multi_node"),
        "{line}"
    );
    let grouped = cmd(hf.path())
        .args(["recipes", LLAMA_405B, "--nnodes", "2", "--node-rank", "0"])
        .args(["--leader-addr", "10.0.0.1"])
        .output();
    let line = row(grouped.expect_code(0));
    assert!(line.contains("compatible"), "{line}");
    assert!(
        grouped
            .stdout()
            .contains("node_count_mismatch (spans 1 node(s), this group has 2)"),
        "{}",
        grouped.report()
    );
}
