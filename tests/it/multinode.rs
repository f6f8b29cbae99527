//! Multi-node groups at the command line: the group facts from LeaderWorkerSet's variables
//! and ours, each role's command, and the errors that name the variable or the group to start.

use crate::support::{AimEngine, Running, free_port, project_root, request, wait_for};
use std::time::Duration;

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

/// One node of a 2-node group on loopback, serving with the fake engine (which forms the group
/// at the rendezvous port like the real engines), with short group timings.
fn node(hf: &std::path::Path, rank: u32, ports: &Ports) -> AimEngine {
    node_of(LLAMA_405B, hf, rank, ports)
}

fn node_of(model: &str, hf: &std::path::Path, rank: u32, ports: &Ports) -> AimEngine {
    let own = if rank == 0 {
        ports.leader
    } else {
        ports.worker
    };
    cmd(hf)
        .fake_engine()
        .env("AIM_LOG_LEVEL", "info")
        .env("AIM_NNODES", "2")
        .env("AIM_NODE_RANK", rank.to_string())
        .env("AIM_LEADER_ADDR", "127.0.0.1")
        .env("AIM_DIST_PORT", ports.dist.to_string())
        .env("FAKE_LOAD_SECS", "0.2")
        .env("HF_HUB_OFFLINE", "1")
        .args(["serve", model, "--host", "127.0.0.1"])
        .args([
            "--port",
            &own.to_string(),
            "--leader-port",
            &ports.leader.to_string(),
        ])
        .args(["--engine-port", &free_port().to_string()])
        .args(["--group-interval", "0.2s", "--group-loss-timeout", "2s"])
        .args(["--stop-timeout", "2s", "--liveness-interval", "60s"])
}

struct Ports {
    leader: u16,
    worker: u16,
    dist: u16,
}

fn ports() -> Ports {
    Ports {
        leader: free_port(),
        worker: free_port(),
        dist: free_port(),
    }
}

fn status_of(port: u16) -> serde_json::Value {
    request(port, "GET", "/status", "")
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

fn ready(port: u16) -> bool {
    matches!(request(port, "GET", "/health/ready", ""), Some((200, _)))
}

/// Starts the leader, checks it waits for rank 1, starts the worker, and waits until the
/// group serves.
fn form(hf: &std::path::Path, p: &Ports) -> (Running, Running) {
    form_with(hf, p, &[])
}

/// [`form`], with more environment for the leader.
fn form_with(hf: &std::path::Path, p: &Ports, leader_env: &[(&str, &str)]) -> (Running, Running) {
    let mut leader = node(hf, 0, p);
    for (k, v) in leader_env {
        leader = leader.env(k, v);
    }
    let mut leader = leader.spawn();
    let waiting = wait_for(Duration::from_secs(20), || {
        status_of(p.leader)["group"]["state"]
            .as_str()
            .is_some_and(|s| s.contains("not heard from node rank 1"))
    });
    assert!(
        waiting,
        "the leader never said it waits for rank 1\n{}",
        leader.report()
    );
    assert!(
        !ready(p.leader),
        "ready without its worker\n{}",
        leader.report()
    );
    let mut worker = node(hf, 1, p).spawn();
    let serving = wait_for(Duration::from_secs(30), || {
        ready(p.leader) && ready(p.worker)
    });
    assert!(
        serving,
        "the group did not serve\nLEADER {}\nWORKER {}",
        leader.report(),
        worker.report()
    );
    (leader, worker)
}

/// Two aim-engines form a 2-node group: the leader is ready only once its worker runs, the
/// API is the leader's alone, and each says its part in `/status`. When the worker's
/// aim-engine is killed, the leader hears nothing more from it and ends with GROUP_LOST
/// (76), naming the rank, so that its launcher restarts the group as one.
#[test]
fn a_group_serves_from_its_leader_and_ends_when_a_worker_is_lost() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    let (mut leader, mut worker) = form(hf.path(), &p);
    let chat = r#"{"model":"meta-llama/Llama-3.1-405B-Instruct","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
    let (code, body) =
        request(p.leader, "POST", "/v1/chat/completions", chat).expect("leader answers");
    assert_eq!(code, 200, "{body}");
    let (code, body) =
        request(p.worker, "POST", "/v1/chat/completions", chat).expect("worker answers");
    assert_eq!(code, 421, "{body}");
    assert!(
        body.contains(&format!("the leader at 127.0.0.1:{}", p.leader)),
        "{body}"
    );

    let ls = status_of(p.leader);
    assert_eq!(ls["group"]["role"], "leader", "{ls}");
    assert_eq!(ls["group"]["members"][0]["rank"], 1, "{ls}");
    assert_eq!(ls["group"]["members"][0]["state"], "running", "{ls}");
    let ws = status_of(p.worker);
    assert_eq!(ws["group"]["role"], "worker", "{ws}");
    assert!(
        ws["group"]["state"]
            .as_str()
            .unwrap_or("")
            .contains("serves"),
        "{ws}"
    );
    assert!(
        worker.stdout().contains("--headless") || worker.stderr().contains("--headless"),
        "the worker's engine runs headless\n{}",
        worker.report()
    );

    worker.signal(libc::SIGKILL);
    leader.expect_exit(76, Duration::from_secs(20));
    let err = leader.stderr() + &leader.stdout();
    assert!(
        err.contains("node rank 1 has not reported for"),
        "{}",
        leader.report()
    );
}

/// A worker's engine that dies ends the worker with 76 and, from its last report, the
/// leader at once (not after the loss timeout), naming the rank and the failure.
#[test]
fn a_worker_whose_engine_dies_ends_the_group() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    let mut leader = node(hf.path(), 0, &p).spawn();
    let mut worker = node(hf.path(), 1, &p)
        .env("FAKE_CRASH_AFTER_SECS", "3")
        .spawn();
    assert!(
        wait_for(Duration::from_secs(30), || ready(p.leader)),
        "{}",
        leader.report()
    );
    worker.expect_exit(76, Duration::from_secs(20));
    // The leader learns it from the worker's last report, well within the loss timeout of
    // the worker's silence.
    leader.expect_exit(76, Duration::from_secs(10));
    let said = leader.stderr() + &leader.stdout();
    assert!(
        said.contains("node rank 1 lost its engine"),
        "{}",
        leader.report()
    );
}

/// A node alone: the leader names the rank that never reported, the worker the leader that
/// never answered; both end with 76 after the join timeout.
#[test]
fn a_node_alone_names_what_did_not_come() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    let mut leader = node(hf.path(), 0, &p)
        .args(["--group-join-timeout", "1s"])
        .spawn();
    leader.expect_exit(76, Duration::from_secs(20));
    let said = leader.stderr() + &leader.stdout();
    assert!(
        said.contains("node rank 1 did not report to the leader within 1s"),
        "{}",
        leader.report()
    );
    let mut worker = node(hf.path(), 1, &p)
        .args(["--group-join-timeout", "1s"])
        .spawn();
    worker.expect_exit(76, Duration::from_secs(20));
    let said = worker.stderr() + &worker.stdout();
    assert!(
        said.contains(&format!(
            "the leader at 127.0.0.1:{} did not answer within",
            p.leader
        )),
        "{}",
        worker.report()
    );
}

/// A leader asked to stop ends with its engine's status; its worker loses the group and
/// ends with 76.
#[test]
fn a_stopped_leader_ends_its_workers() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    // vLLM's leader takes seconds to tear down (11.8 s in the real-engine tensor-parallel
    // group), and its worker hears that the leader is stopping before its engine goes: so
    // the fake leader takes a second here.
    let (mut leader, mut worker) = form_with(hf.path(), &p, &[("FAKE_SHUTDOWN_SECS", "1")]);
    leader.signal(libc::SIGTERM);
    worker.expect_exit(76, Duration::from_secs(20));
    let code = leader.exit_code(Duration::from_secs(20));
    assert_eq!(code, 0, "{}", leader.report());
    let said = worker.stderr();
    let line = format!("error: the leader at 127.0.0.1:{} is stopping", p.leader);
    assert!(said.contains(&line), "{}", worker.report());
}

/// The LeaderWorkerSet manifest stays what the README promises: a group of the 2-node
/// recipe's size, recreated as one, every pod running `aim-engine serve` (the image's
/// entrypoint, no command override) with its recipe's GPUs per node, the probes on both
/// roles, the rendezvous port declared where the group facts say, and the Service on the
/// leader only.
#[test]
fn the_leaderworkerset_manifest_matches_the_recipe_and_the_probes() {
    let text =
        std::fs::read_to_string(project_root().join("deploy/kubernetes/aim-engine-multinode.yaml"))
            .expect("manifest");
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("YAML: {e}")))
        .collect();
    let lws = docs
        .iter()
        .find(|d| d["kind"] == "LeaderWorkerSet")
        .expect("a LeaderWorkerSet");
    let svc = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    let recipe = std::fs::read_to_string(
        project_root()
            .join("recipes")
            .join(LLAMA_405B)
            .join(format!("{TWO_NODES}.yaml")),
    )
    .expect("recipe");
    let recipe: serde_json::Value = serde_saphyr::from_str(&recipe).expect("recipe YAML");
    let t = &lws["spec"]["leaderWorkerTemplate"];
    assert_eq!(
        t["size"], recipe["metadata"]["nodes"],
        "group size = the recipe's nodes"
    );
    assert_eq!(t["restartPolicy"], "RecreateGroupOnPodRestart");
    let gpus = recipe["metadata"]["gpu_count"].as_u64().expect("gpu_count");
    for role in ["leaderTemplate", "workerTemplate"] {
        let c = &t[role]["spec"]["containers"][0];
        assert!(
            c.get("command").is_none(),
            "{role}: the image's entrypoint runs serve"
        );
        assert_eq!(c["args"][0], LLAMA_405B, "{role}");
        let limit = &c["resources"]["limits"]["amd.com/gpu"];
        assert_eq!(
            limit.as_u64(),
            Some(gpus),
            "{role}: GPUs per pod = the recipe's gpu_count"
        );
        for (probe, path) in [
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
            ("startupProbe", "/health/live"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{role} {probe}");
        }
        let env = |name: &str| {
            c["env"]
                .as_array()
                .and_then(|e| e.iter().find(|v| v["name"] == name))
                .map(|v| v["value"].clone())
        };
        let port = env("AIM_PORT").expect("AIM_PORT");
        let declared: Vec<String> = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["containerPort"].to_string())
            .collect();
        assert!(
            declared.contains(&port.as_str().unwrap_or("").to_string()),
            "{role}: {declared:?}"
        );
        if role == "leaderTemplate" {
            let dist = env("AIM_DIST_PORT").expect("AIM_DIST_PORT");
            assert!(
                declared.contains(&dist.as_str().unwrap_or("").to_string()),
                "dist port: {declared:?}"
            );
        }
    }
    assert_eq!(
        svc["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"],
        "0"
    );
}

/// The two-host examples (systemd's environment files and Compose's two services) give each
/// host its role: every variable they set is one `serve` reads, and `plan` under each host's
/// settings shows the rank, the leader and the 2-node recipe.
#[test]
fn the_two_host_examples_give_each_host_its_role() {
    let help = AimEngine::new().args(["serve", "--help"]).output();
    let help = help.expect_code(0).stdout();
    let compose = std::fs::read_to_string(project_root().join("deploy/multinode/compose.yaml"))
        .expect("compose file");
    let compose: serde_json::Value =
        serde_saphyr::from_str(&compose).unwrap_or_else(|e| panic!("compose YAML: {e}"));
    let mut hosts: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (file, rank) in [("multinode-leader.env", "0"), ("multinode-worker.env", "1")] {
        let path = project_root().join("deploy/systemd").join(file);
        let text = std::fs::read_to_string(&path).expect("env file");
        let vars = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{file}: {l}"));
                (k.to_string(), v.to_string())
            })
            .collect::<Vec<_>>();
        assert!(
            vars.contains(&("AIM_NODE_RANK".into(), rank.into())),
            "{file}: {vars:?}"
        );
        hosts.push((file.to_string(), vars));
    }
    for (service, rank) in [("leader", "0"), ("worker", "1")] {
        let env = compose["services"][service]["environment"]
            .as_array()
            .unwrap_or_else(|| panic!("compose {service}: no environment"));
        let vars = env
            .iter()
            .filter_map(|e| e.as_str()?.split_once('='))
            // Compose's own defaults stand in for the host's exports.
            .map(|(k, v)| {
                let v = match v.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                    Some(x) if x.starts_with("AIM_LEADER_ADDR") => "10.0.0.1".to_string(),
                    Some(x) => x
                        .split_once(":-")
                        .map(|(_, d)| d.to_string())
                        .unwrap_or_default(),
                    None => v.to_string(),
                };
                (k.to_string(), v)
            })
            .collect::<Vec<_>>();
        assert!(
            vars.contains(&("AIM_NODE_RANK".into(), rank.into())),
            "compose {service}: {vars:?}"
        );
        hosts.push((format!("compose {service}"), vars));
    }
    let hf = tempfile::tempdir().unwrap();
    for (host, vars) in &hosts {
        let rank = &vars
            .iter()
            .find(|(k, _)| k == "AIM_NODE_RANK")
            .expect("rank")
            .1;
        // Compose passes the model as the command (from the host's export).
        if let Some((_, model)) = vars.iter().find(|(k, _)| k == "AIM_MODEL_ID") {
            assert_eq!(model, LLAMA_405B, "{host}: the model planned below");
        }
        for (k, _) in vars.iter().filter(|(k, _)| k.starts_with("AIM_")) {
            assert!(
                help.contains(&format!("[env: {k}=")),
                "{host}: `serve` reads no {k}"
            );
        }
        let mut plan = cmd(hf.path());
        for (k, v) in vars.iter().filter(|(k, _)| k != "AIM_MODEL_ID") {
            plan = plan.env(k, v);
        }
        let out = plan.args(["plan", LLAMA_405B, "--format", "json"]).output();
        let v = out.expect_code(0).json();
        assert_eq!(v["recipe"]["id"], TWO_NODES, "{host}: {}", out.report());
        assert_eq!(v["node"]["rank"].to_string(), *rank, "{host}");
        assert_eq!(
            v["node"]["role"],
            if rank == "0" { "leader" } else { "worker" },
            "{host}"
        );
        assert_eq!(v["node"]["leader_addr"], "10.0.0.1", "{host}");
    }
}

/// SGLang's group (`--dist-init-addr`; its leader listens at once and answers 503 until the
/// group formed) is served the same way.
#[test]
fn an_sglang_group_serves_from_its_leader() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    let r1 = "deepseek-ai/DeepSeek-R1";
    let mut leader = node_of(r1, hf.path(), 0, &p).spawn();
    let mut worker = node_of(r1, hf.path(), 1, &p).spawn();
    let serving = wait_for(Duration::from_secs(30), || {
        ready(p.leader) && ready(p.worker)
    });
    assert!(
        serving,
        "LEADER {}\nWORKER {}",
        leader.report(),
        worker.report()
    );
    let st = status_of(p.leader);
    assert_eq!(st["recipe"]["engine"], "sglang", "{st}");
    assert_eq!(st["group"]["members"][0]["state"], "running", "{st}");
    let chat = r#"{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#;
    let (code, body) = request(p.leader, "POST", "/v1/chat/completions", chat).expect("answer");
    assert_eq!(code, 200, "{body}");
    let line = format!("--dist-init-addr 127.0.0.1:{}", p.dist);
    assert!(worker.stderr().contains(&line), "{}", worker.report());
}

/// A loading leader whose engine sits silent at the rendezvous is waiting for its group, not
/// hung: the startup-stall rule does not fire while a worker is missing.
#[test]
fn a_leader_waiting_for_its_group_is_not_hung() {
    let hf = tempfile::tempdir().unwrap();
    let p = ports();
    let mut leader = node(hf.path(), 0, &p)
        .args([
            "--startup-stall-window",
            "1s",
            "--hang-sample-interval",
            "0.2s",
        ])
        .spawn();
    std::thread::sleep(Duration::from_secs(3));
    let st = status_of(p.leader);
    assert_eq!(
        st["failures"],
        serde_json::json!([]),
        "{st}\n{}",
        leader.report()
    );
    let mut worker = node(hf.path(), 1, &p).spawn();
    let serving = wait_for(Duration::from_secs(30), || ready(p.leader));
    assert!(
        serving,
        "LEADER {}\nWORKER {}",
        leader.report(),
        worker.report()
    );
    assert_eq!(status_of(p.leader)["restarts"], 0);
}

/// A worker whose leader port is a plain one-node aim-engine (no group) is refused there and
/// ends with 76, saying so, rather than waiting for the join timeout.
#[test]
fn a_worker_refused_by_its_leader_ends_saying_why() {
    let hf = tempfile::tempdir().unwrap();
    let alone = AimEngine::new()
        .fixture("mi300x-8gpu-spx")
        .quick_watched_fake()
        .spawn();
    let p = Ports {
        leader: alone.port,
        worker: free_port(),
        dist: free_port(),
    };
    let mut worker = node(hf.path(), 1, &p).spawn();
    worker.expect_exit(76, Duration::from_secs(20));
    let said = worker.stderr() + &worker.stdout();
    assert!(
        said.contains("refused this node: it is not a group's leader"),
        "{}",
        worker.report()
    );
}
