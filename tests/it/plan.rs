//! Integration tests: `plan`, `dry-run` and `recipes` run as the real binary on the fixture
//! sysfs trees, with the source tree's catalogue and an empty Hugging Face cache.

use crate::support::{AimEngine, Finished, project_root};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const MI300X: &str = "tests/fixtures/sysfs/mi300x-8gpu-spx";

/// The binary with a fixture root, the built-in catalogue of this tree, an empty HF cache
/// (so nothing on the test machine changes the result) and no inherited AIM_* settings.
fn cmd(root: &str, hf_cache: &Path) -> AimEngine {
    AimEngine::new()
        .env("AIM_ROOT", project_root().join(root))
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_HUB_CACHE", hf_cache)
        .env("AIM_LOG_LEVEL", "warn")
}

fn run(c: AimEngine, args: &[&str]) -> Finished {
    c.args(args).output()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status,
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// `aim-engine ARGS` on the 8x MI300X fixture with an empty Hugging Face cache, as JSON.
fn json_on_mi300x(args: &[&str]) -> serde_json::Value {
    let hf = tempfile::tempdir().unwrap();
    json(&run(cmd(MI300X, hf.path()), args))
}

#[test]
fn plan_json_qwen3_32b_on_8_mi300x() {
    let v = json_on_mi300x(&["plan", "Qwen/Qwen3-32B", "--format", "json"]);
    // Exactly the documented names, nothing else.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "model",
            "gpus",
            "recipe",
            "node",
            "reasons",
            "fallbacks",
            "command"
        ]
    );
    // One node: no role, no group facts.
    assert_eq!(
        v["node"],
        serde_json::json!({"nodes": 1, "gpus_per_node": 1, "role": null, "rank": null, "leader_addr": null, "dist_port": null})
    );
    assert_eq!(v["model"], "Qwen/Qwen3-32B");
    assert_eq!(v["gpus"]["usable"], 8);
    // The AMD-sourced optimized 1-GPU recipe beats the unoptimized one on the preferred 4
    // GPUs: type (rule 3) ranks before GPU count (rule 6).
    assert_eq!(v["gpus"]["selected"], serde_json::json!([0]));
    assert_eq!(v["gpus"]["gfx"], "gfx942");
    let r = &v["recipe"];
    assert_eq!(r["id"], "vllm-mi300x-bf16-tp1-latency");
    assert_eq!(r["type"], "optimized");
    assert_eq!(r["engine"], "vllm");
    assert_eq!(r["gpu_count"], 1);
    assert_eq!(r["precision"], "bf16");
    assert_eq!(r["metric"], "latency");
    assert!(
        r["path"]
            .as_str()
            .unwrap()
            .ends_with("recipes/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp1-latency.yaml")
    );
    for k in [
        "id",
        "path",
        "engine",
        "gpu_count",
        "nodes",
        "precision",
        "metric",
        "type",
    ] {
        assert!(r.get(k).is_some(), "recipe.{k}");
    }
    let fallbacks: Vec<&str> = v["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        fallbacks.first(),
        Some(&"vllm-mi300x-bf16-tp4-latency"),
        "{fallbacks:?}"
    );
    assert!(!fallbacks.contains(&"vllm-mi300x-bf16-tp1-latency"));
    assert!(
        !fallbacks.iter().any(|f| f.contains("mi355x")),
        "other GPUs never fall back: {fallbacks:?}"
    );
    let argv: Vec<&str> = v["command"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(argv.contains(&"Qwen/Qwen3-32B"), "{argv:?}");
    assert!(
        argv.contains(&"8001"),
        "engine port = public port + 1: {argv:?}"
    );
    assert_eq!(v["command"]["env"]["VLLM_ROCM_USE_AITER"], "1");
    let reasons = v["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("preferred 4 GPU(s) in bf16")),
        "{reasons:?}"
    );
}

#[test]
fn plan_text_explains_the_choice() {
    let hf = tempfile::tempdir().unwrap();
    let o = run(cmd(MI300X, hf.path()), &["plan", "Qwen/Qwen3-32B"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    for words in [
        "Plan for Qwen/Qwen3-32B",
        "Recipe:  vllm-mi300x-bf16-tp1-latency",
        "ranks before vllm-mi300x-bf16-tp4-latency by rule 3, type: optimized",
        "GPU count: 1 GPU(s), not the preferred 4 GPU(s)",
        "Fallbacks, in order",
        "Command (engine on 127.0.0.1:8001)",
    ] {
        assert!(t.contains(words), "missing `{words}` in:\n{t}");
    }
}

#[test]
fn explicit_count_precision_and_ports() {
    let hf = tempfile::tempdir().unwrap();
    let o = run(
        cmd(MI300X, hf.path()).env("AIM_VLLM_COMMAND", "/opt/fake/vllm serve"),
        &[
            "plan",
            "meta-llama/Llama-3.1-70B-Instruct",
            "8",
            "--precision",
            "fp8",
            "--port",
            "9000",
            "--format",
            "json",
        ],
    );
    let v = json(&o);
    assert_eq!(v["recipe"]["id"], "vllm-mi300x-fp8-tp8-throughput");
    assert_eq!(v["gpus"]["selected"].as_array().unwrap().len(), 8);
    let argv: Vec<&str> = v["command"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv[0], "/opt/fake/vllm",
        "launcher words from AIM_VLLM_COMMAND: {argv:?}"
    );
    // The recipe swaps in AMD's FP8 checkpoint; clients still use the asked name.
    assert!(
        argv.contains(&"amd/Llama-3.1-70B-Instruct-FP8-KV"),
        "{argv:?}"
    );
    assert!(
        argv.contains(&"meta-llama/Llama-3.1-70B-Instruct"),
        "{argv:?}"
    );
    assert!(argv.contains(&"9001"), "{argv:?}");
}

#[test]
fn no_fit_exit_code_and_message() {
    let hf = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["plan", "Qwen/Qwen3-32B", "16"],
            &[
                "16 GPUs were asked for",
                "8 MI300X",
                "what would fit",
                "vllm-mi300x-bf16-tp1-latency",
            ],
        ),
        (
            &["plan", "Qwen/Qwen3-32B", "--precision", "int4"],
            &["int4 cannot be generated", "what would fit"],
        ),
        (
            &[
                "plan",
                "Qwen/Qwen3-32B",
                "--recipe",
                "vllm-mi355x-bf16-tp4-latency",
            ],
            &["cannot run here", "gpu_mismatch", "what would fit"],
        ),
    ];
    for (args, words) in cases {
        let o = run(cmd(MI300X, hf.path()), args);
        assert_eq!(o.status.code(), Some(69), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        for w in *words {
            assert!(e.contains(w), "{args:?}: `{w}` missing in: {e}");
        }
        assert!(
            o.stdout.is_empty(),
            "{args:?}: nothing on stdout when nothing fits"
        );
    }
}

#[test]
fn usage_errors_exit_64() {
    let hf = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["plan", "../etc/passwd"], "invalid model"),
        (&["plan", "Qwen/Qwen3-32B;reboot"], "not allowed"),
        (&["plan", "/no/such/model/dir"], "no such local folder"),
        (
            &["plan", "Qwen/Qwen3-32B", "--engine-args", "[1]"],
            "must be a JSON object",
        ),
        (
            &[
                "plan",
                "Qwen/Qwen3-32B",
                "--recipe",
                "vllm-mi300x-bf16-tp4-latncy",
            ],
            "did you mean: vllm-mi300x-bf16-tp4-latency",
        ),
        (&["plan"], "no model given"),
    ];
    for (args, words) in cases {
        let o = run(cmd(MI300X, hf.path()), args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(words), "{args:?}: {}", stderr(&o));
    }
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn recipes_dir_overrides_and_bad_files_name_line_and_column() {
    let hf = tempfile::tempdir().unwrap();
    let mine = tempfile::tempdir().unwrap();
    // Same id as the built-in one: the user's copy wins (and its own args show).
    write(
        mine.path(),
        "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp4-latency.yaml",
        "aim_id: Qwen/Qwen3-32B\nmodel_id: Qwen/Qwen3-32B\nmetadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: 4\n  precision: bf16\n  metric: latency\n  type: optimized\nengine_args:\n  max-model-len: 4096\n",
    );
    let o = run(
        cmd(MI300X, hf.path()),
        &[
            "--recipes-dir",
            mine.path().to_str().unwrap(),
            "plan",
            "Qwen/Qwen3-32B",
            "--format",
            "json",
        ],
    );
    let v = json(&o);
    assert!(
        v["recipe"]["path"]
            .as_str()
            .unwrap()
            .starts_with(mine.path().to_str().unwrap())
    );
    assert_eq!(v["recipe"]["type"], "optimized");
    assert!(
        v["command"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "4096")
    );

    // A recipe of the user's with a new id wins over the built-in optimized one though it is
    // unoptimized and on 2 GPUs: the user's folders rank first (rule 2).
    let other = tempfile::tempdir().unwrap();
    write(
        other.path(),
        "Qwen/Qwen3-32B/my-qwen.yaml",
        "aim_id: Qwen/Qwen3-32B\nmodel_id: Qwen/Qwen3-32B\nmetadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: 2\n  precision: bf16\n  metric: latency\n  type: unoptimized\n",
    );
    let v = json(&run(
        cmd(MI300X, hf.path()),
        &[
            "--recipes-dir",
            other.path().to_str().unwrap(),
            "plan",
            "Qwen/Qwen3-32B",
            "--format",
            "json",
        ],
    ));
    assert_eq!(v["recipe"]["id"], "my-qwen", "{}", v["reasons"]);
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("by rule 2, the user's recipe folders before the built-in ones"),
        "{reasons}"
    );

    // A typo in a key: exit 64 with file:line:column.
    let bad = write(
        mine.path(),
        "Qwen/Qwen3-32B/vllm-mi300x-bf16-tp2-latency.yaml",
        "aim_id: Qwen/Qwen3-32B\nmetadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: 2\n  precision: bf16\n  metric: latency\n  type: optimized\nenv_var:\n  A: '1'\n",
    );
    let o = run(
        cmd(MI300X, hf.path()).env("AIM_RECIPES_DIR", mine.path()),
        &["plan", "Qwen/Qwen3-32B"],
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:9:1", bad.display())), "{e}");
    assert!(e.contains("env_var"), "{e}");
}

#[test]
fn user_args_of_one_engine_drop_the_other_engines_fallbacks() {
    // Qwen3-32B has vLLM and SGLang recipes on MI300X; a vLLM-only user flag keeps the
    // vLLM winner and leaves the SGLang fallback out of the chain, saying why.
    let v = json_on_mi300x(&[
        "plan",
        "Qwen/Qwen3-32B",
        "--format",
        "json",
        "--engine-args",
        r#"{"max-model-len": 8192}"#,
    ]);
    assert_eq!(v["recipe"]["id"], "vllm-mi300x-bf16-tp1-latency");
    let fallbacks: Vec<&str> = v["fallbacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(!fallbacks.is_empty());
    assert!(
        fallbacks.iter().all(|f| !f.contains("sglang")),
        "{fallbacks:?}"
    );
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("fallback sglang-mi300x-bf16-tp1-latency left out")
            && reasons.contains("max-model-len"),
        "{reasons}"
    );
    // Without user args the SGLang recipe stays in the chain.
    let v = json_on_mi300x(&["plan", "Qwen/Qwen3-32B", "--format", "json"]);
    let all = v["fallbacks"].to_string();
    assert!(all.contains("sglang-mi300x-bf16-tp1-latency"), "{all}");
}

#[test]
fn dry_run_has_the_aim_operator_shape() {
    let v = json_on_mi300x(&[
        "dry-run",
        "Qwen/Qwen3-32B",
        "--format",
        "json",
        "--engine-args",
        r#"{"max-model-len": 8192}"#,
    ]);
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 1);
    let it = &items[0];
    assert_eq!(it["filename"], "vllm-mi300x-bf16-tp1-latency.yaml");
    let keys: Vec<&str> = it["profile"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["model", "metadata", "engine_args", "env_vars"]);
    assert_eq!(it["profile"]["model"], "Qwen/Qwen3-32B");
    // The optimized 1-GPU recipe wins (type before GPU count).
    assert_eq!(it["profile"]["metadata"]["gpu_count"], 1);
    assert_eq!(it["profile"]["metadata"]["type"], "optimized");
    assert_eq!(
        it["profile"]["engine_args"]["max-model-len"], 8192,
        "user args merged over the recipe"
    );
    let m = &it["models"][0];
    assert_eq!(m["name"], "Qwen/Qwen3-32B");
    assert_eq!(m["source"], "hf://Qwen/Qwen3-32B");
    assert!(m["size_gb"].as_f64().unwrap() > 60.0);
}

#[test]
fn recipes_lists_every_recipe_with_a_verdict() {
    let hf = tempfile::tempdir().unwrap();
    let o = run(
        cmd(MI300X, hf.path()),
        &["recipes", "Qwen/Qwen3-32B", "--format", "json"],
    );
    let rows = json(&o);
    let rows = rows.as_array().unwrap();
    let verdict = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed"))["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict("vllm-mi300x-bf16-tp4-latency"), "compatible");
    assert_eq!(verdict("vllm-mi355x-bf16-tp4-latency"), "gpu_mismatch");
    assert_eq!(
        verdict("general/vllm-mi300x-bf16-tp8-latency"),
        "compatible"
    );
    // Only this model's recipes and general ones.
    assert!(
        rows.iter()
            .all(|r| r["model"].is_null() || r["model"] == "Qwen/Qwen3-32B")
    );

    // Constraints show up as verdicts.
    let o = run(
        cmd(MI300X, hf.path()),
        &[
            "recipes",
            "Qwen/Qwen3-32B",
            "--backend",
            "sglang",
            "--format",
            "json",
        ],
    );
    let rows = json(&o);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["verdict"] == "engine_mismatch")
    );

    // Without a model: the whole catalogue, as text.
    let o = run(cmd(MI300X, hf.path()), &["recipes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("deepseek") || t.contains("sglang-mi300x-fp8-tp8-throughput"),
        "{t}"
    );
    assert!(t.contains("VERDICT"));
}

#[test]
fn sizes_from_config_json_in_the_hf_cache() {
    // An unknown model whose config.json (Qwen3-32B's shape) is in the cache, on a GPU
    // product no recipe is tuned for: generated defaults, checked against the model.
    let hf = tempfile::tempdir().unwrap();
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let repo = hf.path().join("models--acme--Custom");
    write(&repo, "refs/main", rev);
    let config = r#"{"model_type":"qwen3","hidden_size":5120,"intermediate_size":25600,"num_hidden_layers":64,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"torch_dtype":"bfloat16"}"#;
    write(&repo, &format!("snapshots/{rev}/config.json"), config);
    let o = run(
        cmd(MI300X, hf.path()),
        &[
            "plan",
            "acme/Custom",
            "--gpu-model",
            "MI999X",
            "--format",
            "json",
        ],
    );
    let v = json(&o);
    assert_eq!(v["recipe"]["id"], "generated/vllm-mi300x-bf16-tp4-latency");
    assert!(v["recipe"]["path"].is_null());
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let all = reasons.join("\n");
    assert!(all.contains("from config.json"), "{all}");
    assert!(all.contains("memory check on 4 GPU(s): fits"), "{all}");
    assert!(
        all.contains("divides the model's 64 attention heads"),
        "{all}"
    );
}

#[test]
fn radeon_host_gets_generated_defaults_or_a_clear_no_fit() {
    const RX: &str = "tests/fixtures/sysfs/rx7900xtx-raphael-igpu";
    let hf = tempfile::tempdir().unwrap();
    // No recipe is tuned for an RX 7900 XTX: generated defaults on its one usable GPU.
    let v = json(&run(
        cmd(RX, hf.path()),
        &["plan", "Qwen/Qwen3-8B", "--format", "json"],
    ));
    assert_eq!(v["gpus"]["usable"], 1, "the iGPU is not usable");
    assert_eq!(v["gpus"]["gfx"], "gfx1100");
    assert_eq!(v["recipe"]["id"], "generated/vllm-rx7900-fp16-tp1-latency");
    assert_eq!(v["fallbacks"], serde_json::json!([]));
    // 32B parameters in bf16 (~60 GiB) cannot fit in 24 GiB: NO_FIT, saying what it needs.
    let o = run(cmd(RX, hf.path()), &["plan", "Qwen/Qwen3-32B"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("does not fit on 1 RX7900 GPU(s)") && e.contains("needs at least 4"),
        "{e}"
    );
}

#[test]
fn no_gpu_driver_is_no_fit() {
    let hf = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let c = cmd(MI300X, hf.path()).env("AIM_ROOT", empty.path());
    let o = run(c, &["plan", "Qwen/Qwen3-32B"]);
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(stderr(&o).contains("amdgpu"), "{}", stderr(&o));
}

#[test]
fn catalogue_choices_on_8_mi300x() {
    let hf = tempfile::tempdir().unwrap();
    // (args, chosen recipe, GPUs used)
    let cases: &[(&[&str], &str, usize)] = &[
        (
            &["deepseek-ai/DeepSeek-R1"],
            "vllm-mi300x-fp8-tp8-latency",
            8,
        ),
        (
            &["deepseek-ai/DeepSeek-R1", "--backend", "sglang"],
            "sglang-mi300x-fp8-tp8-throughput",
            8,
        ),
        (
            &["openai/gpt-oss-120b", "1"],
            "vllm-mi300x-fp4-tp1-latency",
            1,
        ),
        // Both optimized bf16: latency (rule 4) before the GPU count closest to 8 (rule 6).
        (&["Qwen/Qwen3-235B-A22B"], "vllm-mi300x-bf16-tp4-latency", 4),
        // The optimized 1-GPU recipe, not the unoptimized one on the preferred 4.
        (&["Qwen/Qwen3-32B"], "vllm-mi300x-bf16-tp1-latency", 1),
        (
            &["meta-llama/Llama-3.1-70B-Instruct"],
            "vllm-mi300x-fp16-tp8-latency",
            8,
        ),
        (
            &["Qwen/Qwen3-235B-A22B", "4", "--precision", "fp8"],
            "vllm-mi300x-fp8-tp4-latency",
            4,
        ),
        (
            &["meta-llama/Llama-3.1-8B-Instruct"],
            "vllm-mi300x-fp16-tp1-latency",
            1,
        ),
        (&["Qwen/Qwen3-8B"], "vllm-mi300x-bf16-tp1-latency", 1),
        (
            &["Qwen/Qwen3-32B", "--metric", "throughput"],
            "vllm-mi300x-bf16-tp4-throughput",
            4,
        ),
        (
            &[
                "Qwen/Qwen3-32B",
                "--recipe",
                "general/vllm-mi300x-bf16-tp2-latency",
            ],
            "general/vllm-mi300x-bf16-tp2-latency",
            2,
        ),
    ];
    for (args, id, n) in cases {
        let mut a = vec!["plan"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "json"]);
        let v = json(&run(cmd(MI300X, hf.path()), &a));
        assert_eq!(v["recipe"]["id"], *id, "{args:?}: {:?}", v["reasons"]);
        assert_eq!(
            v["gpus"]["selected"].as_array().unwrap().len(),
            *n,
            "{args:?}"
        );
    }
}

/// The harness's failure report names the command, its status and what it printed.
#[test]
fn harness_reports_the_command_status_and_output() {
    let hf = tempfile::tempdir().unwrap();
    let o = run(cmd(MI300X, hf.path()), &["plan"]);
    o.expect_code(64);
    let r = o.report();
    assert!(r.contains("aim-engine plan"), "{r}");
    assert!(r.contains("AIM_LOG_LEVEL=warn"), "{r}");
    assert!(r.contains("status: exit status: 64"), "{r}");
    assert!(r.contains("no model given"), "{r}");
    let failed = std::panic::catch_unwind(|| {
        o.expect_code(0);
    });
    let msg = failed.expect_err("a wrong exit code fails the test");
    let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("command: ") && text.contains("no model given"),
        "{text}"
    );
}

/// `api-key` among the engine args would make the engine refuse the supervisor's own
/// readiness checks: refused up front, pointing at `--api-key`. A model id part that starts
/// with `-` would land in the engine's argv as a flag: refused too.
#[test]
fn api_key_engine_arg_and_dash_model_ids_are_refused() {
    let hf = tempfile::tempdir().unwrap();
    for args in [
        r#"{"api-key":"k"}"#,
        r#"{"api_key":"k"}"#,
        r#"{"--api-key":"k"}"#,
    ] {
        let o = run(
            cmd(MI300X, hf.path()),
            &["plan", "Qwen/Qwen3-32B", "--engine-args", args],
        );
        o.expect_code(64);
        assert!(o.stderr().contains("AIM_API_KEY"), "{args}: {}", o.report());
    }
    for id in ["--api-key/x", "org/-x", "-org/name", "hf://-o/n"] {
        let o = run(cmd(MI300X, hf.path()).env("AIM_MODEL_ID", id), &["plan"]);
        o.expect_code(64);
        assert!(
            o.stderr().contains("starts with `-`"),
            "{id}: {}",
            o.report()
        );
    }
}

/// `aim-engine plan | head -1`: a reader that closed the pipe ends the command quietly (killed
/// by SIGPIPE, as other command-line tools end), not with a panic about a failed print.
#[test]
fn a_closed_stdout_ends_plan_quietly() {
    use std::os::fd::OwnedFd;
    use std::os::unix::process::ExitStatusExt;
    let hf = tempfile::tempdir().unwrap();
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read_end);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aim-engine"))
        .env("AIM_ROOT", project_root().join(MI300X))
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_HUB_CACHE", hf.path())
        .args(["plan", "Qwen/Qwen3-32B"])
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A stand-in installed vLLM: `DIR/vllm` (never run by `plan`) and the `python3` beside it,
/// which answers the version probe with `version`.
fn installed_vllm(dir: &Path, version: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let vllm = dir.join("vllm");
    for (path, body) in [
        (vllm.clone(), "#!/bin/sh\nexit 1\n".to_string()),
        (dir.join("python3"), format!("#!/bin/sh\necho {version}\n")),
    ] {
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    vllm
}

/// `plan` plans for the engine version: `--engine-version` first, else what the installed
/// engine reports, else the newest pinned table; the first reason says which, and the
/// version's rules apply (`swap-space` is gone from 0.18 on, kept before).
#[test]
fn plan_uses_the_given_else_the_installed_engine_version() {
    let hf = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let args = [
        "plan",
        "Qwen/Qwen3-32B",
        "--engine-args",
        r#"{"swap-space": 4}"#,
        "--format",
        "json",
    ];
    let plan_with = |extra: &[(&str, &str)]| -> Value {
        let mut c = cmd(MI300X, hf.path());
        for (k, v) in extra {
            c = c.env(k, v);
        }
        let o = run(c, &args);
        o.expect_code(0);
        serde_json::from_str(&o.stdout()).unwrap()
    };
    let reasons = |p: &Value| p["reasons"].to_string();
    let argv = |p: &Value| p["command"]["argv"].to_string();

    let old = installed_vllm(bin.path(), "0.17.1");
    let p = plan_with(&[("AIM_VLLM_COMMAND", old.to_str().unwrap())]);
    assert!(
        reasons(&p).contains("vllm 0.17.1 (reported by the installed engine"),
        "{p}"
    );
    assert!(argv(&p).contains("--swap-space"), "{p}");

    let new = installed_vllm(bin.path(), "0.32.0");
    let p = plan_with(&[("AIM_VLLM_COMMAND", new.to_str().unwrap())]);
    assert!(
        reasons(&p).contains("vllm 0.32.0 (reported by the installed engine"),
        "{p}"
    );
    assert!(!argv(&p).contains("--swap-space"), "{p}");
    assert!(reasons(&p).contains("dropped `--swap-space 4`"), "{p}");

    // --engine-version wins over the installed engine.
    let p = plan_with(&[
        ("AIM_VLLM_COMMAND", new.to_str().unwrap()),
        ("AIM_ENGINE_VERSION", "vllm=0.17.0"),
    ]);
    assert!(reasons(&p).contains("vllm 0.17.0 (--engine-version"), "{p}");
    assert!(argv(&p).contains("--swap-space"), "{p}");

    // No engine here (a launcher that is not the real engine has no probe): the newest table.
    let p = plan_with(&[("AIM_VLLM_COMMAND", "/bin/true")]);
    assert!(reasons(&p).contains("the newest pinned table"), "{p}");
}

fn argv_of(v: &Value) -> Vec<String> {
    v["command"]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The words after `--served-model-name` (up to the next flag).
fn served_names(argv: &[String]) -> Vec<String> {
    let at = argv
        .iter()
        .position(|a| a == "--served-model-name")
        .expect("--served-model-name");
    argv[at + 1..]
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .cloned()
        .collect()
}

/// AIM_ID alone (AIM's per-model images) selects the recipe folder and the model; MODEL /
/// AIM_MODEL_ID beside it overrides the checkpoint; the engine answers to both names on vLLM
/// (`--served-model-name <model id> <aim id>`, as AIM runs it), and dry-run says
/// `quantized_model`.
#[test]
fn aim_id_selects_the_folder_and_aim_model_id_the_checkpoint() {
    let hf = tempfile::tempdir().unwrap();
    let c = || cmd(MI300X, hf.path()).env("AIM_ID", "Qwen/Qwen3-32B");
    let v = json(&run(c(), &["plan", "--format", "json"]));
    assert_eq!(v["model"], "Qwen/Qwen3-32B");
    assert_eq!(v["recipe"]["id"], "vllm-mi300x-bf16-tp1-latency");
    let argv = argv_of(&v);
    assert_eq!(served_names(&argv), ["Qwen/Qwen3-32B"]);
    // Override the checkpoint: AIM_ID's recipes, MODEL's weights, both names.
    let v = json(&run(
        c().env("AIM_MODEL_ID", "acme/Qwen3-32B-FT"),
        &["plan", "--format", "json"],
    ));
    assert_eq!(v["recipe"]["id"], "vllm-mi300x-bf16-tp1-latency");
    let argv = argv_of(&v);
    assert_eq!(
        argv[1..3],
        ["serve".to_string(), "acme/Qwen3-32B-FT".into()],
        "{argv:?}"
    );
    assert_eq!(served_names(&argv), ["acme/Qwen3-32B-FT", "Qwen/Qwen3-32B"]);
    assert!(
        v["reasons"]
            .to_string()
            .contains("recipes of AIM_ID Qwen/Qwen3-32B"),
        "{}",
        v["reasons"]
    );
    let d = json(&run(
        c().env("AIM_MODEL_ID", "acme/Qwen3-32B-FT"),
        &["dry-run", "--format", "json"],
    ));
    assert_eq!(d[0]["profile"]["model"], "Qwen/Qwen3-32B");
    assert_eq!(d[0]["profile"]["quantized_model"], "acme/Qwen3-32B-FT");
    assert_eq!(d[0]["models"][0]["name"], "acme/Qwen3-32B-FT");
    // A recipe that swaps in AMD's FP8 checkpoint: both names, and quantized_model.
    let args = [
        "meta-llama/Llama-3.1-70B-Instruct",
        "8",
        "--precision",
        "fp8",
        "--format",
        "json",
    ];
    let mut plan = vec!["plan"];
    plan.extend(args);
    let argv = argv_of(&json(&run(cmd(MI300X, hf.path()), &plan)));
    assert_eq!(
        served_names(&argv),
        [
            "amd/Llama-3.1-70B-Instruct-FP8-KV",
            "meta-llama/Llama-3.1-70B-Instruct"
        ]
    );
    let mut dry = vec!["dry-run"];
    dry.extend(args);
    let d = json(&run(cmd(MI300X, hf.path()), &dry));
    assert_eq!(
        d[0]["profile"]["model"],
        "meta-llama/Llama-3.1-70B-Instruct"
    );
    assert_eq!(
        d[0]["profile"]["quantized_model"],
        "amd/Llama-3.1-70B-Instruct-FP8-KV"
    );
    // AIM_CUSTOM_MODEL_NAME: the name clients use, first; SGLang gets it alone.
    let v = json(&run(
        cmd(MI300X, hf.path()).env("AIM_CUSTOM_MODEL_NAME", "my-qwen"),
        &["plan", "Qwen/Qwen3-32B", "--format", "json"],
    ));
    assert_eq!(served_names(&argv_of(&v)), ["my-qwen", "Qwen/Qwen3-32B"]);
    let v = json(&run(
        cmd(MI300X, hf.path()).env("AIM_CUSTOM_MODEL_NAME", "my-qwen"),
        &[
            "plan",
            "Qwen/Qwen3-32B",
            "--backend",
            "sglang",
            "--format",
            "json",
        ],
    ));
    assert_eq!(served_names(&argv_of(&v)), ["my-qwen"]);
    // AIM_ID must be a Hub id.
    let o = run(cmd(MI300X, hf.path()).env("AIM_ID", "/models/x"), &["plan"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("AIM_ID `/models/x` must be a Hugging Face id"),
        "{}",
        stderr(&o)
    );
}

/// AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false (AIM's per-model images): general recipes are
/// not chosen, and `plan` and `recipes` say why; `--recipe` still picks one. Unset: true.
#[test]
fn general_fallback_off_leaves_general_recipes_out_and_says_so() {
    let hf = tempfile::tempdir().unwrap();
    // A model without recipes of its own: general recipes serve it by default.
    let on = json(&run(
        cmd(MI300X, hf.path()),
        &["plan", "acme/Tiny-8B", "--format", "json"],
    ));
    assert!(
        on["recipe"]["id"].as_str().unwrap().starts_with("general/"),
        "{on}"
    );
    let off = || cmd(MI300X, hf.path()).env("AIM_ALLOW_GENERAL_PROFILE_FALLBACK", "false");
    let v = json(&run(off(), &["plan", "acme/Tiny-8B", "--format", "json"]));
    let id = v["recipe"]["id"].as_str().unwrap();
    assert!(!id.starts_with("general/"), "{v}");
    assert!(
        v["fallbacks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !f.as_str().unwrap().starts_with("general/")),
        "{v}"
    );
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("general recipe(s) not eligible: general recipes are off (AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false)"),
        "{reasons}"
    );
    let t = stdout(&run(off(), &["recipes", "acme/Tiny-8B"]));
    let line = t
        .lines()
        .find(|l| l.starts_with("general/vllm-mi300x-bf16-tp1-latency"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.contains(
            "manual_only (general recipes are off (AIM_ALLOW_GENERAL_PROFILE_FALLBACK=false)"
        ),
        "{line}"
    );
    let v = json(&run(
        off(),
        &[
            "plan",
            "acme/Tiny-8B",
            "--recipe",
            "general/vllm-mi300x-bf16-tp1-latency",
            "--format",
            "json",
        ],
    ));
    assert_eq!(v["recipe"]["id"], "general/vllm-mi300x-bf16-tp1-latency");
    // `list-profiles` is AIM's name for `recipes`.
    let o = run(off(), &["list-profiles", "acme/Tiny-8B"]);
    assert_eq!(stdout(&o), t);
}

/// Engine flags after `--`, as vLLM's image takes them: the same map as AIM_ENGINE_ARGS, the
/// same flag tables (unknown: exit 64 with a did-you-mean), and they win over the JSON.
#[test]
fn engine_flags_after_double_dash() {
    let hf = tempfile::tempdir().unwrap();
    let v = json(&run(
        cmd(MI300X, hf.path()),
        &[
            "plan",
            "Qwen/Qwen3-32B",
            "--format",
            "json",
            "--",
            "--max-model-len",
            "8192",
            "--enforce-eager",
        ],
    ));
    let argv = argv_of(&v).join(" ");
    assert!(argv.contains("--max-model-len 8192"), "{argv}");
    assert!(argv.contains("--enforce-eager"), "{argv}");
    // The default command too: `aim-engine MODEL -- ...` is `serve MODEL -- ...`; both ways.
    let v = json(&run(
        cmd(MI300X, hf.path()).env(
            "AIM_ENGINE_ARGS",
            r#"{"max-model-len": 4096, "max-num-seqs": 8}"#,
        ),
        &[
            "dry-run",
            "Qwen/Qwen3-32B",
            "--format",
            "json",
            "--",
            "--max-model-len=16384",
        ],
    ));
    assert_eq!(v[0]["profile"]["engine_args"]["max-model-len"], 16384);
    assert_eq!(v[0]["profile"]["engine_args"]["max-num-seqs"], 8);
    let p = json(&run(
        cmd(MI300X, hf.path()).env("AIM_ENGINE_ARGS", r#"{"max-model-len": 4096}"#),
        &[
            "plan",
            "Qwen/Qwen3-32B",
            "--format",
            "json",
            "--",
            "--max-model-len",
            "16384",
        ],
    ));
    assert!(argv_of(&p).join(" ").contains("--max-model-len 16384"));
    assert!(
        p["reasons"]
            .to_string()
            .contains("engine flag `--max-model-len` after `--` wins over `max-model-len: 4096`"),
        "{}",
        p["reasons"]
    );
    for (flags, words) in [
        (
            &["--max-modle-len", "8192"][..],
            "did you mean `max-model-len`",
        ),
        (
            &["8192"][..],
            "engine flags after `--`: `8192` is not a flag",
        ),
    ] {
        let mut args = vec!["plan", "Qwen/Qwen3-32B", "--"];
        args.extend(flags);
        let o = run(cmd(MI300X, hf.path()), &args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(words), "{args:?}: {}", stderr(&o));
    }
    // Without a subcommand (`serve` is inserted before the model, flags stay after `--`).
    let o = run(
        cmd(MI300X, hf.path()),
        &["Qwen/Qwen3-32B", "--", "--max-modle-len", "8192"],
    );
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did you mean `max-model-len`"),
        "{}",
        stderr(&o)
    );
}

/// A bad value from a variable is reported under the variable's name, not the flag's.
#[test]
fn bad_env_values_are_named_by_their_variable() {
    let hf = tempfile::tempdir().unwrap();
    for (var, value, name) in [
        (
            "AIM_PRECISION",
            "fp9",
            "AIM_PRECISION (the variable of --precision)",
        ),
        (
            "AIM_GPU_COUNT",
            "many",
            "AIM_GPU_COUNT (the variable of GPU_COUNT)",
        ),
        (
            "AIM_STOP_TIMEOUT",
            "soon",
            "AIM_STOP_TIMEOUT (the variable of --stop-timeout)",
        ),
    ] {
        let sub = if var == "AIM_STOP_TIMEOUT" {
            "serve"
        } else {
            "plan"
        };
        let o = run(
            cmd(MI300X, hf.path()).env(var, value),
            &[sub, "Qwen/Qwen3-32B"],
        );
        assert_eq!(o.status.code(), Some(64), "{var}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!("invalid value '{value}' for {name}")),
            "{var}: {e}"
        );
    }
    let o = run(
        cmd(MI300X, hf.path()),
        &["plan", "Qwen/Qwen3-32B", "--precision", "fp9"],
    );
    assert!(
        stderr(&o).contains("'--precision <PRECISION>'"),
        "{}",
        stderr(&o)
    );
}

/// `custom/` under a recipes folder is searched before the rest of it, as AIM does.
#[test]
fn custom_recipes_come_first() {
    let hf = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "custom/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp2-latency.yaml",
        "aim_id: Qwen/Qwen3-32B\nmodel_id: Qwen/Qwen3-32B\nmetadata: {engine: vllm, gpu: MI300X, gpu_count: 2, precision: bf16, metric: latency, type: optimized}\nengine_args: {max-model-len: 1234}\n",
    );
    let v = json(&run(
        cmd(MI300X, hf.path()).env("AIM_RECIPES_DIR", dir.path()),
        &["plan", "Qwen/Qwen3-32B", "2", "--format", "json"],
    ));
    assert!(
        v["recipe"]["path"]
            .as_str()
            .unwrap()
            .contains("/custom/Qwen/Qwen3-32B/"),
        "{v}"
    );
    assert!(argv_of(&v).join(" ").contains("--max-model-len 1234"));
    // AIM's id of a custom profile picks it too.
    let v = json(&run(
        cmd(MI300X, hf.path()).env("AIM_RECIPES_DIR", dir.path()),
        &[
            "plan",
            "Qwen/Qwen3-32B",
            "--recipe",
            "custom/Qwen/Qwen3-32B/vllm-mi300x-bf16-tp2-latency",
            "--format",
            "json",
        ],
    ));
    assert!(
        v["recipe"]["path"].as_str().unwrap().contains("/custom/"),
        "{v}"
    );
}

/// AIM_LOG_LEVEL_ROOT stands in for an unset AIM_LOG_LEVEL (the operator's discovery job sets
/// both to CRITICAL for clean output); AIM_LOG_LEVEL wins when both are set.
#[test]
fn aim_log_level_root_is_read() {
    let hf = tempfile::tempdir().unwrap();
    let warning = "HF_HUB_OFFLINE is set, so the Hub is not asked";
    let run_with = |env: &[(&str, &str)]| {
        let mut c = cmd(MI300X, hf.path())
            .env_remove("AIM_LOG_LEVEL")
            .env("HF_HUB_OFFLINE", "1");
        for (k, v) in env {
            c = c.env(k, v);
        }
        let o = run(c, &["plan", "Qwen/Qwen3-32B", "--size-from-hub"]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    assert!(run_with(&[]).contains(warning), "default info");
    assert!(!run_with(&[("AIM_LOG_LEVEL_ROOT", "CRITICAL")]).contains(warning));
    assert!(
        run_with(&[
            ("AIM_LOG_LEVEL_ROOT", "CRITICAL"),
            ("AIM_LOG_LEVEL", "WARNING")
        ])
        .contains(warning)
    );
}

/// GPUs with much VRAM in use by someone else (over 10 %) are skipped when enough are free:
/// the fixture with 100 GiB in use on GPU 0's card.
#[test]
fn busy_gpus_are_skipped_in_the_plan() {
    let hf = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(project_root().join(MI300X).join("."))
        .arg(root.path())
        .status()
        .unwrap();
    assert!(st.success());
    let used = root
        .path()
        .join("sys/bus/pci/drivers/amdgpu/0000:05:00.0/mem_info_vram_used");
    std::fs::write(&used, format!("{}\n", 100u64 << 30)).unwrap();
    let v = json(&run(
        cmd(root.path().to_str().unwrap(), hf.path()),
        &["plan", "Qwen/Qwen3-32B", "--format", "json"],
    ));
    assert_eq!(v["recipe"]["id"], "vllm-mi300x-bf16-tp1-latency");
    assert_eq!(v["gpus"]["selected"], serde_json::json!([1]));
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("busy GPU(s) skipped") && reasons.contains("0 (100 GiB in use)"),
        "{reasons}"
    );
}
