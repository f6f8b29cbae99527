//! Property tests (the fuzz half of issue 7's fault campaign) for the parsers that read input
//! we do not control: the KFD `properties` text and the rest of the sysfs values, recipe
//! YAML, a model's config.json (and the sizing built on it) and model ids.
//!
//! Two kinds of property: "never panics, whatever the input" (arbitrary bytes and structured
//! mutations of real inputs), and "errors name the input" (the path of a recipe, the model id
//! given, the environment variable and its value). Where the input has a known meaning, the
//! parse is also checked against it (generated key/value lines read back exactly; line order
//! of a real properties file does not change the detected topology).
//!
//! Failing inputs are shrunk by proptest and printed; add them to the unit tests of the module
//! that failed.

use aim_engine::gpu::parse::{
    NodeProps, Props, compute_partition_mode, gfx_name, mem_bank_vram, numa_node,
    parse_visible_list, sysfs_u64, xgmi_link_target,
};
use aim_engine::gpu::{FsReader, SysReader, VisibilityEnv, detect_with};
use aim_engine::model::config::{facts, fit, max_context_that_fits, parse_config, preferred};
use aim_engine::model::{ModelRef, parse_model_id};
use aim_engine::recipe;
use proptest::prelude::*;
use std::io;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "tests/fixtures/sysfs/mi300x-8gpu-spx";
const NODE2: &str = "sys/devices/virtual/kfd/kfd/topology/nodes/2/properties";

fn fixture() -> PathBuf {
    crate::support::project_root().join(FIXTURE)
}

fn real_node_props() -> String {
    std::fs::read_to_string(fixture().join(NODE2)).expect("fixture node 2 properties")
}

/// The fixture machine with one KFD node's `properties` replaced by arbitrary text.
struct Patched {
    inner: FsReader,
    path: &'static str,
    text: String,
}

impl SysReader for Patched {
    fn read(&self, rel: &str) -> io::Result<String> {
        if rel == self.path {
            Ok(self.text.clone())
        } else {
            self.inner.read(rel)
        }
    }
    fn read_dir(&self, rel: &str) -> io::Result<Vec<String>> {
        self.inner.read_dir(rel)
    }
    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        self.inner.read_link(rel)
    }
    fn exists(&self, rel: &str) -> bool {
        self.inner.exists(rel)
    }
    fn access_rw(&self, rel: &str) -> io::Result<()> {
        self.inner.access_rw(rel)
    }
}

/// Text that looks like sysfs output: mostly `key value` lines with odd spacing, numbers at
/// the edges of u32/u64, negative and non-numeric values, plus raw noise.
fn sysfs_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("simd_count".to_string()),
        Just("simd_per_cu".to_string()),
        Just("gfx_target_version".to_string()),
        Just("cpu_cores_count".to_string()),
        Just("location_id".to_string()),
        Just("domain".to_string()),
        Just("drm_render_minor".to_string()),
        Just("num_xcc".to_string()),
        Just("unique_id".to_string()),
        Just("local_mem_size".to_string()),
        Just("device_id".to_string()),
        "[a-z_]{1,20}",
    ];
    let value = prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("0x1f".to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<u32>().prop_map(|v| v.to_string()),
        "\\PC{0,12}",
    ];
    let sep = prop_oneof![
        Just(" "),
        Just("\t"),
        Just("   "),
        Just(""),
        Just(" \u{0} ")
    ];
    let line = prop_oneof![
        8 => (key, sep, value).prop_map(|(k, s, v)| format!("{k}{s}{v}")),
        1 => "\\PC{0,40}",
        1 => ".{0,40}",
    ];
    (
        proptest::collection::vec(line, 0..40),
        prop_oneof![Just("\n"), Just("\r\n")],
    )
        .prop_map(|(lines, nl)| lines.join(nl))
}

/// Mutations of a real properties file: drop, duplicate, corrupt or reorder lines.
fn mutated_props() -> impl Strategy<Value = String> {
    let real: Vec<String> = real_node_props().lines().map(str::to_string).collect();
    let n = real.len();
    proptest::collection::vec((0..n, 0u8..5, "\\PC{0,16}"), 0..12).prop_map(move |edits| {
        let mut lines = real.clone();
        for (i, op, noise) in edits {
            if lines.is_empty() {
                break;
            }
            let i = i % lines.len();
            match op {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.push(l);
                }
                2 => {
                    let key = lines[i].split(' ').next().unwrap_or("").to_string();
                    lines[i] = format!("{key} {noise}");
                }
                3 => {
                    let mut cut = lines[i].len() / 2;
                    while !lines[i].is_char_boundary(cut) {
                        cut -= 1;
                    }
                    lines[i].truncate(cut);
                }
                _ => lines.swap(0, i),
            }
        }
        lines.join("\n")
    })
}

fn config_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let num = prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(u64::MAX)),
        Just(json!(u32::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("4096")),
        Just(Value::Null),
        (0u64..200_000).prop_map(|v| json!(v)),
        any::<u64>().prop_map(|v| json!(v)),
    ];
    let keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "num_experts",
        "moe_intermediate_size",
        "n_shared_experts",
        "shared_expert_intermediate_size",
        "first_k_dense_replace",
        "kv_lora_rank",
        "q_lora_rank",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
    ];
    let fields = proptest::collection::vec(
        (proptest::sample::select(keys.to_vec()), num),
        0..keys.len() + 4,
    );
    let dtype = prop_oneof![
        Just(Value::Null),
        Just(json!("bfloat16")),
        Just(json!("float32")),
        Just(json!(7)),
    ];
    let quant = prop_oneof![
        Just(Value::Null),
        Just(json!({"quant_method": "fp8", "weight_block_size": [128, 128]})),
        Just(json!({"quant_method": "FP8", "weight_block_size": [0]})),
        Just(json!({"quant_method": "mxfp4"})),
        Just(json!({"quant_method": ["awq"]})),
        Just(json!("fp8")),
    ];
    let model_type = prop_oneof![
        Just(Value::Null),
        Just(json!("qwen3")),
        Just(json!("qwen2")),
        Just(json!("deepseek_v3")),
    ];
    (fields, dtype, quant, model_type, any::<bool>()).prop_map(
        |(fields, dtype, quant, model_type, nested)| {
            let mut m = serde_json::Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            m.insert("torch_dtype".into(), dtype);
            m.insert("model_type".into(), model_type);
            let inner = Value::Object(m);
            let mut root = if nested {
                json!({ "text_config": inner })
            } else {
                inner
            };
            if !quant.is_null()
                && let Some(o) = root.as_object_mut()
            {
                o.insert("quantization_config".into(), quant);
            }
            root
        },
    )
}

const VALID_RECIPE: &str = "\
aim_id: Qwen/Qwen3-32B
model_id: Qwen/Qwen3-32B
metadata:
  engine: vllm
  gpu: MI300X
  gpu_count: 4
  precision: bf16
  metric: latency
  type: optimized
engine_args:
  tensor-parallel-size: 4
  max-model-len: 32768
  compilation-config: {level: 3}
  enforce-eager: null
env_vars:
  VLLM_ROCM_USE_AITER: \"1\"
";

fn mutated_recipe() -> impl Strategy<Value = String> {
    let bytes: Vec<char> = VALID_RECIPE.chars().collect();
    let n = bytes.len();
    let noise = prop_oneof![
        Just(":".to_string()),
        Just("\t".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("[".to_string()),
        Just("&a *a".to_string()),
        Just("!!binary".to_string()),
        Just("\"".to_string()),
        Just("\n  ".to_string()),
        Just("99999999999999999999".to_string()),
        "\\PC{1,6}",
    ];
    proptest::collection::vec((0..n, 0u8..3, noise), 1..6).prop_map(move |edits| {
        let mut s = bytes.clone();
        for (at, op, noise) in edits {
            let at = at.min(s.len());
            match op {
                0 => {
                    s.splice(at..at, noise.chars());
                }
                1 => {
                    let end = (at + noise.chars().count()).min(s.len());
                    s.drain(at..end);
                }
                _ => {
                    let end = (at + 1).min(s.len());
                    s.splice(at..end, noise.chars());
                }
            }
        }
        s.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn kfd_properties_any_text_never_panics(text in prop_oneof![sysfs_like(), ".*", mutated_props()]) {
        let p = NodeProps::parse(&text);
        let _ = p.compute_units();
        let _ = p.card_key();
        let _ = p.is_cpu(Some(0));
        let _ = gfx_name(p.gfx_target_version);
        let _ = sysfs_u64(&text);
        let _ = numa_node(&text);
        let _ = mem_bank_vram(&text);
        let _ = xgmi_link_target(&text);
        let _ = compute_partition_mode(&text);
    }

    /// Well-formed `key value` lines read back exactly, the last occurrence winning, whatever
    /// the whitespace, unknown keys and garbage lines around them.
    #[test]
    fn kfd_properties_read_back(
        pairs in proptest::collection::vec(("[a-z_]{1,16}", any::<u64>(), prop_oneof![Just(" "), Just("\t"), Just("  \t ")]), 0..30),
        garbage in proptest::collection::vec("[A-Z ]{0,10}", 0..5),
    ) {
        let mut text = String::new();
        for g in &garbage {
            text.push_str(g);
            text.push('\n');
        }
        for (k, v, sep) in &pairs {
            text.push_str(&format!("{k}{sep}{v}\n"));
        }
        let props = Props::parse(&text);
        for (k, _, _) in &pairs {
            let last = pairs.iter().rev().find(|(k2, _, _)| k2 == k).map(|(_, v, _)| *v);
            prop_assert_eq!(props.get(k), last, "key {} in {:?}", k, text);
        }
    }

    /// Whatever one GPU node's properties say, detection of the whole machine returns (never
    /// panics), keeps at most the fixture's 8 GPUs, and the 7 untouched GPUs stay detected.
    #[test]
    fn detection_survives_any_node_properties(text in prop_oneof![sysfs_like(), mutated_props()]) {
        let r = Patched { inner: FsReader::new(&fixture()), path: NODE2, text };
        match detect_with(&r, &VisibilityEnv::default()) {
            Ok(t) => {
                prop_assert!(t.gpus.len() <= 8, "{} GPUs from an 8-GPU machine", t.gpus.len());
                prop_assert!(t.gpus.len() >= 7, "only {} GPUs: a bad node took others down", t.gpus.len());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Line order of a real properties file does not matter.
    #[test]
    fn kfd_properties_line_order_is_irrelevant(seed in proptest::collection::vec(any::<proptest::sample::Index>(), 1..20)) {
        let real = real_node_props();
        let mut lines: Vec<&str> = real.lines().collect();
        let n = lines.len();
        for (i, ix) in seed.iter().enumerate() {
            lines.swap(i % n, ix.index(n));
        }
        let base = detect_with(&FsReader::new(&fixture()), &VisibilityEnv::default()).expect("fixture detects");
        let r = Patched { inner: FsReader::new(&fixture()), path: NODE2, text: lines.join("\n") };
        let shuffled = detect_with(&r, &VisibilityEnv::default()).expect("shuffled fixture detects");
        prop_assert_eq!(base, shuffled);
    }

    /// Visibility lists: never a panic; an error names the variable and quotes its value.
    #[test]
    fn visible_devices_errors_name_the_variable(value in prop_oneof![".{0,30}", "[0-9, ]{0,12}", "(GPU-[0-9a-fA-F]{0,18},?){0,3}"]) {
        if let Err(e) = parse_visible_list("HIP_VISIBLE_DEVICES", &value) {
            prop_assert!(e.contains("HIP_VISIBLE_DEVICES="), "{}", e);
            prop_assert!(e.contains(&format!("{value:?}")), "{}", e);
        }
    }

    /// Any text as a recipe: never a panic; every error starts with the file's path and
    /// carries a message.
    #[test]
    fn recipe_any_text_errors_name_the_file(text in prop_oneof![".*", "\\PC{0,200}", mutated_recipe()]) {
        let path = Path::new("recipes/Org/Model/vllm-mi300x-bf16-tp4-latency.yaml");
        if let Err(e) = recipe::parse(&text, path) {
            let shown = e.to_string();
            prop_assert!(shown.starts_with(&path.display().to_string()), "{}", shown);
            prop_assert!(!e.message.trim().is_empty(), "empty message for {:?}", text);
        }
    }

    /// gpu_count is checked whatever the number: 1..=64 parses, anything else is an error
    /// that says the value.
    #[test]
    fn recipe_gpu_count_range(n in prop_oneof![0u64..200, any::<u64>()]) {
        let text = VALID_RECIPE.replace("gpu_count: 4", &format!("gpu_count: {n}"));
        let path = Path::new("r.yaml");
        match recipe::parse(&text, path) {
            Ok(r) => prop_assert!((1..=64).contains(&n) && u64::from(r.metadata.gpu_count) == n),
            Err(e) => {
                prop_assert!(!(1..=64).contains(&n), "valid count {} rejected: {}", n, e);
                prop_assert!(e.to_string().starts_with("r.yaml"), "{}", e);
            }
        }
    }

    /// config.json of any shape, with numbers up to u64::MAX: parsing, sizing, the TP check,
    /// the memory fit and the preferred GPU count never panic (no arithmetic overflow).
    #[test]
    fn config_json_sizing_never_panics(
        cfg in config_json(),
        tp in prop_oneof![Just(0u32), 1u32..=16, any::<u32>()],
        usable in 0u32..=16,
        vram in prop_oneof![Just(0u64), Just(192u64 << 30), any::<u64>()],
        context in prop_oneof![Just(0u64), 1u64..1_000_000, any::<u64>()],
        index_total in proptest::option::of(any::<u64>()),
    ) {
        let text = cfg.to_string();
        match parse_config(&text) {
            Ok(c) => {
                let _ = c.param_count();
                let _ = c.bytes_per_param();
                let _ = c.kv_bytes_per_token_per_gpu(tp, 2);
                let _ = c.tp_check(tp);
            }
            Err(e) => prop_assert!(e.to_string().contains("config.json"), "error does not name config.json: {}", e),
        }
        let index = index_total.map(|t| format!("{{\"metadata\": {{\"total_size\": {t}}}}}"));
        let f = facts("Org/Model-32B", Some(&text), index.as_deref());
        let _ = f.describe();
        let (count, _, why) = preferred(&f, usable, Some(vram));
        prop_assert!(count >= 1 && count <= usable.max(1), "count {} for {} usable: {}", count, usable, why);
        let _ = fit(&f, tp, vram, context, 0.9, 2);
        let _ = max_context_that_fits(&f, tp, vram, 0.9, 2);
    }

    #[test]
    fn config_json_any_text_never_panics(text in prop_oneof![".*", "\\{\"hidden_size\": [0-9]{0,25}\\}"]) {
        if let Err(e) = parse_config(&text) {
            prop_assert!(e.to_string().contains("config.json"), "{}", e);
        }
        let _ = facts(&text, Some(&text), Some(&text)).describe();
    }

    /// Any string as a model id: never a panic, and an error repeats the input.
    #[test]
    fn model_id_errors_name_the_input(given in prop_oneof![".*", "\\PC{0,120}", "[a-zA-Z0-9._/-]{0,40}", "hf://[a-z./]{0,20}"]) {
        match parse_model_id(&given) {
            Ok(ModelRef::Hub(id)) => {
                prop_assert_eq!(id.split('/').count(), 2);
                prop_assert!(!id.contains(".."));
            }
            Ok(ModelRef::Local(p)) => prop_assert!(p.is_absolute()),
            Err(e) => {
                prop_assert_eq!(&e.given, &given);
                prop_assert!(e.to_string().contains(&format!("`{given}`")), "{}", e);
            }
        }
    }

    /// Every well-formed `org/name` is accepted as is.
    #[test]
    fn model_id_wellformed_accepted(org in "[A-Za-z0-9][A-Za-z0-9_-]{0,30}", name in "[A-Za-z0-9][A-Za-z0-9._-]{0,40}") {
        prop_assume!(!name.contains(".."));
        let id = format!("{org}/{name}");
        prop_assert_eq!(parse_model_id(&id), Ok(ModelRef::Hub(id.clone())));
    }
}
