use super::*;
use crate::gpu::Gpu;

pub(crate) fn gpu(index: u32, product: &str, gfx: &str, vram_gib: u64, hive: u64) -> Gpu {
    Gpu {
        index,
        kfd_node: index + 2,
        gpu_id: 1000 + index,
        pci: format!("0000:{:02x}:00.0", index + 5),
        render_minor: 128 + 8 * index,
        gfx: gfx.into(),
        device_id: 0x74a1,
        product: product.into(),
        vram_bytes: vram_gib << 30,
        vram_used_bytes: None,
        compute_units: 304,
        numa_node: Some(0),
        physical_index: index,
        partition: None,
        hive_id: hive,
        unique_id: index as u64,
    }
}

#[test]
fn gpu_picking_prefers_hives_and_links() {
    // GPUs 0,1 in hive A; 2..5 in hive B: 4 GPUs come from hive B.
    let gs: Vec<Gpu> = (0..6)
        .map(|i| gpu(i, "MI300X", "gfx942", 192, if i < 2 { 7 } else { 9 }))
        .collect();
    let refs: Vec<&Gpu> = gs.iter().collect();
    let got: Vec<u32> = pick_gpus(&refs, &[], 4).iter().map(|g| g.index).collect();
    assert_eq!(got, vec![2, 3, 4, 5]);
    let got: Vec<u32> = pick_gpus(&refs, &[], 2).iter().map(|g| g.index).collect();
    assert_eq!(got, vec![0, 1]);
    // No hive ids: links decide; 0 is linked to nobody, 1-2-3 are a clique.
    let gs: Vec<Gpu> = (0..4).map(|i| gpu(i, "MI300X", "gfx942", 192, 0)).collect();
    let refs: Vec<&Gpu> = gs.iter().collect();
    let links = [(1, 2), (1, 3), (2, 3)];
    let got: Vec<u32> = pick_gpus(&refs, &links, 3)
        .iter()
        .map(|g| g.index)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    // Nothing known: the first N.
    let got: Vec<u32> = pick_gpus(&refs, &[], 2).iter().map(|g| g.index).collect();
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn usable_is_the_first_product() {
    let t = Topology {
        gpus: vec![
            gpu(0, "RX 7900 XTX", "gfx1100", 24, 0),
            gpu(1, "Raphael", "gfx1036", 1, 0),
        ],
        ..Default::default()
    };
    assert_eq!(usable_gpus(&t).len(), 1);
}

use crate::model::config::{facts, tests::QWEN3_32B};
use crate::recipe::{Origin, parse};
use std::path::Path;

fn recipe(id: &str, model: Option<&str>, meta: &str, priority: usize) -> LoadedRecipe {
    let head = model
        .map(|m| format!("aim_id: {m}\nmodel_id: {m}\n"))
        .unwrap_or_default();
    let text = format!("{head}metadata: {{{meta}}}\n");
    LoadedRecipe {
        id: id.into(),
        path: format!("/r/{id}.yaml").into(),
        origin: Origin {
            priority,
            builtin: priority > 0,
        },
        recipe: parse(&text, Path::new(id)).unwrap(),
    }
}

fn catalogue() -> Vec<LoadedRecipe> {
    let q = Some("Qwen/Qwen3-32B");
    vec![
        recipe(
            "vllm-mi300x-bf16-tp1-latency",
            q,
            "engine: vllm, gpu: MI300X, gpu_count: 1, precision: bf16, metric: latency, type: optimized",
            1,
        ),
        recipe(
            "vllm-mi300x-bf16-tp4-latency",
            q,
            "engine: vllm, gpu: MI300X, gpu_count: 4, precision: bf16, metric: latency, type: unoptimized",
            1,
        ),
        recipe(
            "vllm-mi355x-bf16-tp4-latency",
            q,
            "engine: vllm, gpu: MI355X, gpu_count: 4, precision: bf16, metric: latency, type: optimized",
            1,
        ),
        recipe(
            "general/vllm-mi300x-bf16-tp2-latency",
            None,
            "engine: vllm, gpu: MI300X, gpu_count: 2, precision: bf16, metric: latency, type: general",
            1,
        ),
        recipe(
            "general/vllm-mi300x-bf16-tp8-latency",
            None,
            "engine: vllm, gpu: MI300X, gpu_count: 8, precision: bf16, metric: latency, type: general",
            1,
        ),
    ]
}

fn mi300x(n: u32) -> Topology {
    Topology {
        gpus: (0..n).map(|i| gpu(i, "MI300X", "gfx942", 192, 0)).collect(),
        ..Default::default()
    }
}

struct Case {
    what: &'static str,
    model: &'static str,
    config: Option<&'static str>,
    topology: Topology,
    want: Want,
    recipes: Vec<LoadedRecipe>,
    /// Ok(chosen id, fallback ids, selected ordinals) or Err(words in the error)
    expect: Result<(&'static str, Vec<&'static str>, Vec<u32>), &'static str>,
}

fn run(c: &Case) -> Result<Planned, PlanError> {
    let f = facts(c.model, c.config, None);
    let args = IndexMap::new();
    let launchers = Launchers::default();
    decide(&PlanInput {
        topology: &c.topology,
        model: c.model,
        checkpoint: c.model,
        facts: &f,
        recipes: &c.recipes,
        want: &c.want,
        user_args: &args,
        launchers: &launchers,
        engine_port: 8001,
    })
}

#[test]
fn planning_table() {
    let cases = vec![
        Case {
            what: "Qwen3-32B on 8 MI300X: the optimized 1-GPU recipe beats the unoptimized one \
                   on the preferred 4 (type before GPU count), the rest as fallbacks",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want::default(),
            recipes: catalogue(),
            expect: Ok((
                "vllm-mi300x-bf16-tp1-latency",
                vec![
                    "vllm-mi300x-bf16-tp4-latency",
                    "general/vllm-mi300x-bf16-tp2-latency",
                    "general/vllm-mi300x-bf16-tp8-latency",
                ],
                vec![0],
            )),
        },
        Case {
            what: "one GPU: the tp1 recipe",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(1),
            want: Want::default(),
            recipes: catalogue(),
            expect: Ok(("vllm-mi300x-bf16-tp1-latency", vec![], vec![0])),
        },
        Case {
            what: "--recipe picks exactly that one",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want {
                recipe: Some("general/vllm-mi300x-bf16-tp8-latency".into()),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Ok((
                "general/vllm-mi300x-bf16-tp8-latency",
                vec![],
                (0..8).collect(),
            )),
        },
        Case {
            what: "--recipe unknown: close ids",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want {
                recipe: Some("vllm-mi300x-bf16-tp4-latncy".into()),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Err("did you mean: vllm-mi300x-bf16-tp4-latency"),
        },
        Case {
            what: "--recipe for another GPU is still checked against the host",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want {
                recipe: Some("vllm-mi355x-bf16-tp4-latency".into()),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Err("gpu_mismatch"),
        },
        Case {
            what: "--gpu-model MI355X matches the MI355X recipe",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want {
                gpu_model: Some("MI355X".into()),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Ok(("vllm-mi355x-bf16-tp4-latency", vec![], vec![0, 1, 2, 3])),
        },
        Case {
            what: "more GPUs than usable",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: mi300x(8),
            want: Want {
                gpu_count: Some(16),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Err("what would fit: recipe vllm-mi300x-bf16-tp1-latency"),
        },
        Case {
            what: "no GPU",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: Topology::default(),
            want: Want::default(),
            recipes: catalogue(),
            expect: Err("no AMD GPU"),
        },
        Case {
            what: "int4 cannot be generated from a bf16 checkpoint",
            model: "Qwen/Qwen3-32B",
            config: Some(QWEN3_32B),
            topology: mi300x(8),
            want: Want {
                precision: Some(Precision::Int4),
                ..Default::default()
            },
            recipes: catalogue(),
            expect: Err("int4 cannot be generated"),
        },
        Case {
            what: "no recipes at all: generated defaults sized from config.json",
            model: "org/Custom-32B",
            config: Some(QWEN3_32B),
            topology: mi300x(8),
            want: Want::default(),
            recipes: vec![],
            expect: Ok((
                "generated/vllm-mi300x-bf16-tp4-latency",
                vec![],
                vec![0, 1, 2, 3],
            )),
        },
        Case {
            what: "generated with an invalid explicit count",
            model: "org/Custom-32B",
            config: Some(QWEN3_32B),
            topology: mi300x(8),
            want: Want {
                gpu_count: Some(3),
                ..Default::default()
            },
            recipes: vec![],
            expect: Err("not divisible by tensor-parallel size 3"),
        },
        Case {
            what: "does not fit on one 24 GiB card",
            model: "org/Custom-32B",
            config: Some(QWEN3_32B),
            topology: Topology {
                gpus: vec![gpu(0, "Radeon RX 7900 XTX", "gfx1100", 24, 0)],
                ..Default::default()
            },
            want: Want::default(),
            recipes: catalogue(),
            expect: Err("does not fit on 1"),
        },
    ];
    for c in &cases {
        match (run(c), &c.expect) {
            (Ok(p), Ok((id, fallbacks, ordinals))) => {
                let ids: Vec<&str> = p.sources.iter().map(|s| s.id.as_str()).collect();
                assert_eq!(ids[0], *id, "{}: {:?}", c.what, p.plan.reasons);
                assert_eq!(&ids[1..], fallbacks.as_slice(), "{}", c.what);
                let got: Vec<u32> = p.plan.launches[0].gpus.iter().map(|g| g.ordinal).collect();
                assert_eq!(&got, ordinals, "{}", c.what);
                // Launches and sources line up; every launch serves the asked model name.
                assert_eq!(p.plan.launches.len(), p.sources.len());
                for (l, s) in p.plan.launches.iter().zip(&p.sources) {
                    assert_eq!(l.recipe_id, s.id);
                    assert_eq!(l.served_model_name, crate::model::served_names(c.model).0);
                    assert_eq!(l.gpus.len() as u32, l.gpu_count);
                    assert_eq!(l.engine_port, 8001);
                }
                assert!(!p.plan.reasons.is_empty());
            }
            (Err(e), Err(words)) => {
                assert!(
                    e.to_string().contains(words),
                    "{}: `{e}` should contain `{words}`",
                    c.what
                )
            }
            (got, want) => panic!(
                "{}: got {:?}, want {want:?}",
                c.what,
                got.map(|p| p.sources[0].id.clone())
            ),
        }
    }
}

#[test]
fn generated_plan_limits_context_to_fit() {
    // 80 GiB GPUs: Qwen3-32B weights fit on one, 32k of KV cache does not.
    let c = Case {
        what: "context",
        model: "org/Custom-32B",
        config: Some(QWEN3_32B),
        topology: Topology {
            gpus: vec![gpu(0, "MI210", "gfx90a", 80, 0)],
            ..Default::default()
        },
        want: Want::default(),
        recipes: vec![],
        expect: Err(""),
    };
    let p = run(&c).unwrap();
    let args = &p.sources[0].recipe.engine_args;
    let len = args.get("max-model-len").and_then(Value::as_u64).unwrap();
    assert!((2048..32768).contains(&len), "{len}");
    assert!(
        p.plan.reasons.iter().any(|r| r.contains("context limited")),
        "{:?}",
        p.plan.reasons
    );
    assert!(
        p.plan
            .reasons
            .iter()
            .any(|r| r.contains("divides the model's 64 attention heads"))
    );
}

/// A model not in the cache: the Hub's listing of its weight files, not the size in its
/// name, decides the GPU count and the memory fit.
#[test]
fn hub_listing_sizes_override_the_name_guess() {
    use crate::model::HubWeights;
    let topology = Topology {
        gpus: (0..8).map(|i| gpu(i, "MI210", "gfx90a", 80, 0)).collect(),
        ..Default::default()
    };
    let plan = |f: &crate::model::ModelFacts, want: &Want| {
        let args = IndexMap::new();
        let launchers = Launchers::default();
        decide(&PlanInput {
            topology: &topology,
            model: "org/Odd-7B",
            checkpoint: "org/Odd-7B",
            facts: f,
            recipes: &[],
            want,
            user_args: &args,
            launchers: &launchers,
            engine_port: 8001,
        })
    };
    let guess = facts("org/Odd-7B", None, None);
    let listed = |gib: u64| {
        guess.clone().with_hub_weights(&HubWeights {
            bytes: gib << 30,
            files: 9,
            format: "safetensors",
        })
    };
    // By its name: 7B, one GPU in fp16.
    let p = plan(&guess, &Want::default()).unwrap();
    assert_eq!(p.plan.launches[0].gpu_count, 1);
    assert_eq!(p.preferred_precision, Precision::Fp16);
    // By the listing: 40 GiB of weights (21B parameters in bf16): four GPUs, and the
    // reasons say where the size came from.
    let p = plan(&listed(40), &Want::default()).unwrap();
    assert_eq!(p.plan.launches[0].gpu_count, 4, "{:?}", p.plan.reasons);
    assert_eq!(p.weight_bytes, Some(40 << 30));
    let reasons = p.plan.reasons.join("\n");
    assert!(
        reasons.contains("org/Odd-7B: 21B parameters, 40.0 GiB of weights in 9 file(s) (from the Hub's file listing"),
        "{reasons}"
    );
    assert!(
        reasons.contains("memory checked for the weights only (size from the Hub's file listing)"),
        "{reasons}"
    );
    // One GPU asked for: the name's 14 GB fit on 80 GiB, the listing's 150 GiB do not.
    let one = Want {
        gpu_count: Some(1),
        ..Default::default()
    };
    assert_eq!(plan(&guess, &one).unwrap().plan.launches[0].gpu_count, 1);
    let e = plan(&listed(150), &one).unwrap_err();
    assert!(matches!(e, PlanError::NoFit { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("150.0 GiB weights (from the Hub's file listing)"),
        "{e}"
    );
}

#[test]
fn general_recipes_are_checked_against_the_model() {
    // A 12-head model cannot use TP 8; the general tp8 recipe gets tp_invalid.
    let cfg = QWEN3_32B.replace("\"num_attention_heads\":64", "\"num_attention_heads\":12");
    let f = facts("org/Odd-32B", Some(&cfg), None);
    let rows = assess_all(
        &mi300x(8),
        Some("org/Odd-32B"),
        Some(&f),
        &catalogue(),
        &Want::default(),
    );
    let v = |id: &str| rows.iter().find(|r| r.id == id).unwrap().verdict;
    assert_eq!(
        v("general/vllm-mi300x-bf16-tp8-latency"),
        Verdict::TpInvalid
    );
    assert_eq!(
        v("general/vllm-mi300x-bf16-tp2-latency"),
        Verdict::Compatible
    );
    assert_eq!(v("vllm-mi300x-bf16-tp4-latency"), Verdict::ModelMismatch);
}

/// A general recipe over 2 nodes: the tensor parallel the group runs (its own multiple of
/// the GPUs per node, else the GPUs per node) is checked against the heads, and the memory
/// over every GPU of the group, not one node's.
#[test]
fn general_multi_node_recipes_are_checked_over_the_group() {
    let gib = 1u64 << 30;
    // 12 heads: TP 4 splits them, TP 8 does not.
    let cfg = QWEN3_32B.replace("\"num_attention_heads\":64", "\"num_attention_heads\":12");
    // 1,200 GiB of weights: 300 GiB per GPU over 4, 150 over 8 (192 GiB GPUs).
    let index = format!("{{\"metadata\":{{\"total_size\":{}}}}}", 1200 * gib);
    let f = facts("org/Big", Some(&cfg), Some(&index));
    let general = |nodes: u32, tp: Option<u64>| {
        let mut r = recipe(
            "general/x",
            None,
            &format!(
                "engine: vllm, gpu: MI300X, gpu_count: 4, nodes: {nodes}, precision: bf16, \
                 metric: latency, type: general"
            ),
            1,
        );
        if let Some(tp) = tp {
            r.recipe
                .engine_args
                .insert("tensor-parallel-size".into(), serde_json::json!(tp));
        }
        super::fit::general_check(&f, &r.recipe, Some(192 * gib))
    };
    // One node of 4: too big.
    let one = general(1, None);
    assert!(
        matches!(one, Some((Verdict::DoesNotFit, _))),
        "one node: {one:?}"
    );
    // Two nodes of 4 (pipeline parallel across): fits over the 8 GPUs.
    assert_eq!(general(2, None), None);
    // Tensor parallel 8 over the two nodes: the heads do not split.
    let tp8 = general(2, Some(8));
    assert!(
        matches!(&tp8, Some((Verdict::TpInvalid, why)) if why.contains("8")),
        "tp 8 over 2 nodes: {tp8:?}"
    );
    // A TP that is not a multiple of the GPUs per node runs as 4: valid.
    assert_eq!(general(2, Some(6)), None);
}

fn case(topology: Topology, want: Want) -> Case {
    Case {
        what: "errors",
        model: "Qwen/Qwen3-32B",
        config: Some(QWEN3_32B),
        topology,
        want,
        recipes: catalogue(),
        expect: Err(""),
    }
}

#[test]
fn errors_are_data_rendered_by_display() {
    let too_many = Want {
        gpu_count: Some(16),
        ..Default::default()
    };
    let e = run(&case(mi300x(8), too_many)).unwrap_err();
    let PlanError::NoFit { why, hint } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        **why,
        NoFit::TooFewGpus {
            asked: 16,
            usable: 8,
            product: "MI300X".into()
        }
    );
    let Suggestion::Recipe { id, gpu_count, .. } = hint else {
        panic!("{hint:?}")
    };
    assert_eq!(
        (id.as_str(), *gpu_count),
        ("vllm-mi300x-bf16-tp1-latency", 1)
    );
    assert_eq!(
        e.to_string(),
        "16 GPUs were asked for but only 8 MI300X GPU(s) are usable; what would fit: recipe \
         vllm-mi300x-bf16-tp1-latency (1 GPU(s), bf16, vllm, latency): \
         `aim-engine plan Qwen/Qwen3-32B 1 --precision bf16 --backend vllm`"
    );

    let e = run(&case(Topology::default(), Want::default())).unwrap_err();
    assert_eq!(e, PlanError::NoGpu(NoGpu::NoneFound));
    let excluded = Topology {
        excluded: vec![crate::gpu::Excluded {
            kfd_node: 3,
            reason: "not visible".into(),
        }],
        ..Default::default()
    };
    let e = run(&case(excluded, Want::default())).unwrap_err();
    assert_eq!(
        e,
        PlanError::NoGpu(NoGpu::AllExcluded(vec![(3, "not visible".into())]))
    );
    assert_eq!(e.to_string(), "no usable AMD GPU (node 3: not visible)");

    let unknown = Want {
        recipe: Some("vllm-mi300x-bf16-tp1-latencyy".into()),
        ..Default::default()
    };
    let e = run(&case(mi300x(8), unknown)).unwrap_err();
    let PlanError::UnknownRecipe { id, close, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(id, "vllm-mi300x-bf16-tp1-latencyy");
    assert!(
        close.contains(&"vllm-mi300x-bf16-tp1-latency".to_string()),
        "{close:?}"
    );
}

/// The "Why" text names the rule that decided, and never states a preference the choice
/// contradicts without saying why (a user's recipe, fp8 chosen while bf16 is preferred).
#[test]
fn reasons_name_the_deciding_rule() {
    let r1 = Some("deepseek-ai/DeepSeek-R1");
    let cat = vec![
        recipe(
            "general/vllm-mi300x-bf16-tp8-latency",
            None,
            "engine: vllm, gpu: MI300X, gpu_count: 8, precision: bf16, metric: latency, type: general",
            1,
        ),
        recipe(
            "vllm-mi300x-fp8-tp8-latency",
            r1,
            "engine: vllm, gpu: MI300X, gpu_count: 8, precision: fp8, metric: latency, type: optimized",
            1,
        ),
    ];
    let c = Case {
        what: "DeepSeek-R1",
        model: "deepseek-ai/DeepSeek-R1",
        config: None,
        topology: mi300x(8),
        want: Want::default(),
        recipes: cat,
        expect: Err(""),
    };
    let p = run(&c).unwrap();
    assert_eq!(p.sources[0].id, "vllm-mi300x-fp8-tp8-latency");
    assert_eq!(p.preferred_precision, Precision::Bf16);
    let why = p.plan.reasons.join("\n");
    assert!(
        why.contains(
            "ranks before general/vllm-mi300x-bf16-tp8-latency by rule 3, type: optimized"
        ),
        "{why}"
    );
    assert!(
        why.contains(
            "precision: fp8, not the preferred bf16: general/vllm-mi300x-bf16-tp8-latency has \
             bf16 but ranks lower by rule 3"
        ),
        "{why}"
    );
    // Only fp8 recipes: the reason says none has the preferred precision.
    let only = Case {
        recipes: c.recipes[1..].to_vec(),
        ..c
    };
    let why = run(&only).unwrap().plan.reasons.join("\n");
    assert!(why.contains("the only compatible recipe"), "{why}");
    assert!(
        why.contains(
            "precision: fp8, not the preferred bf16: no compatible recipe for \
             deepseek-ai/DeepSeek-R1 here has bf16"
        ),
        "{why}"
    );

    // A recipe from the user's folder (priority 0) beats the built-in optimized one.
    let mut cat = catalogue();
    cat.push(recipe(
        "my-qwen",
        Some("Qwen/Qwen3-32B"),
        "engine: vllm, gpu: MI300X, gpu_count: 2, precision: bf16, metric: latency, type: unoptimized",
        0,
    ));
    let c = Case {
        what: "user folder",
        model: "Qwen/Qwen3-32B",
        config: None,
        topology: mi300x(8),
        want: Want::default(),
        recipes: cat,
        expect: Err(""),
    };
    let p = run(&c).unwrap();
    assert_eq!(p.sources[0].id, "my-qwen");
    let why = p.plan.reasons.join("\n");
    assert!(
        why.contains(
            "(--recipes-dir); ranks before vllm-mi300x-bf16-tp1-latency by rule 2, the user's \
             recipe folders"
        ),
        "{why}"
    );
    assert!(
        why.contains("GPU count: 2 GPU(s), not the preferred 4 GPU(s): vllm-mi300x-bf16-tp4-latency has 4 GPU(s) but ranks lower by rule 2"),
        "{why}"
    );
}

/// GPUs whose card already has more than 10 % of its VRAM in use are skipped when enough
/// free ones exist, else taken with a warning.
#[test]
fn busy_gpus_are_skipped_when_enough_are_free() {
    let busy = |mut t: Topology, which: &[u32], gib: u64| {
        for g in &mut t.gpus {
            g.vram_used_bytes = Some(if which.contains(&g.index) {
                gib << 30
            } else {
                284 << 20 // the fixture's idle value: not busy
            });
        }
        t
    };
    // 20 GiB of 192 is over 10 %; 19 GiB is not.
    let t = busy(mi300x(2), &[0], 20);
    assert!(crate::plan::gpus::is_busy(&t.gpus[0], &t.gpus));
    assert!(!crate::plan::gpus::is_busy(&t.gpus[1], &t.gpus));
    let t = busy(mi300x(1), &[0], 19);
    assert!(!crate::plan::gpus::is_busy(&t.gpus[0], &t.gpus));

    let case = |topology: Topology, want: Want| Case {
        what: "busy",
        model: "Qwen/Qwen3-32B",
        config: None,
        topology,
        want,
        recipes: catalogue(),
        expect: Err(""),
    };
    // GPUs 0 and 1 busy: the 1-GPU recipe runs on GPU 2, the 4-GPU fallback on 2..5.
    let p = run(&case(busy(mi300x(8), &[0, 1], 100), Want::default())).unwrap();
    let ords =
        |i: usize| -> Vec<u32> { p.plan.launches[i].gpus.iter().map(|g| g.ordinal).collect() };
    assert_eq!(p.sources[0].id, "vllm-mi300x-bf16-tp1-latency");
    assert_eq!(ords(0), vec![2]);
    assert_eq!(ords(1), vec![2, 3, 4, 5]);
    let why = p.plan.reasons.join("\n");
    assert!(
        why.contains("busy GPU(s) skipped, more than 10 % of their VRAM already in use: 0 (100 GiB in use), 1 (100 GiB in use); 6 free GPU(s) are enough"),
        "{why}"
    );
    // 8 GPUs asked, 2 busy: all 8 taken, with a warning.
    let eight = Want {
        gpu_count: Some(8),
        ..Default::default()
    };
    let p = run(&case(busy(mi300x(8), &[0, 1], 100), eight)).unwrap();
    assert_eq!(p.plan.launches[0].gpus.len(), 8);
    let why = p.plan.reasons.join("\n");
    assert!(
        why.contains("warning: only 6 free GPU(s) for 8: busy GPU(s) taken")
            && why.contains("the engine may run out of memory"),
        "{why}"
    );
    // Nothing busy: no note.
    let p = run(&case(busy(mi300x(8), &[], 0), Want::default())).unwrap();
    assert!(!p.plan.reasons.join("\n").contains("busy"));
}

/// With the GPU count given, the precision preference the later reasons refer to is stated.
#[test]
fn asked_count_still_states_the_precision_preference() {
    let c = Case {
        what: "count asked",
        model: "Qwen/Qwen3-32B",
        config: None,
        topology: mi300x(8),
        want: Want {
            gpu_count: Some(4),
            ..Default::default()
        },
        recipes: catalogue(),
        expect: Err(""),
    };
    let why = run(&c).unwrap().plan.reasons.join("\n");
    assert!(
        why.contains("4 GPU(s) asked for; preferred precision bf16 (a tie-breaker, rule 5)"),
        "{why}"
    );
    assert!(!why.contains("not the preferred"), "{why}");
}

/// Multi-node planning: in a group the recipe of its node count wins and the command is this
/// node's; outside one a model too big for the node picks it and planning says to start a
/// group; a model that fits never gets it.
#[test]
fn multi_node_planning_table() {
    use crate::group::{Group, Role, Source};
    let q = Some("Qwen/Qwen3-32B");
    let recipes = vec![
        recipe(
            "vllm-mi300x-bf16-tp8-latency",
            q,
            "engine: vllm, gpu: MI300X, gpu_count: 8, precision: bf16, metric: latency, type: optimized",
            1,
        ),
        recipe(
            "vllm-mi300x-bf16-tp8-nodes2-latency",
            q,
            "engine: vllm, gpu: MI300X, gpu_count: 8, nodes: 2, precision: bf16, metric: latency, type: unoptimized",
            1,
        ),
    ];
    let mut recipes = recipes;
    // The nodes are spanned by pipeline parallel (engine::multinode::check_split).
    recipes[1]
        .recipe
        .engine_args
        .insert("pipeline-parallel-size".into(), serde_json::json!(2));
    let group = |rank| Group {
        nnodes: 2,
        rank,
        leader_addr: "lead".into(),
        dist_port: 29501,
        source: Source::Aim,
    };
    let plan = |want: Want, topology: Topology| {
        run(&Case {
            what: "",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology,
            want,
            recipes: recipes.clone(),
            expect: Err(""),
        })
    };
    // (what, group rank, GPUs of the node, GiB each, chosen id, role, argv words)
    type Row = (
        &'static str,
        Option<u32>,
        u32,
        u64,
        Result<&'static str, ()>,
        Option<Role>,
        &'static str,
    );
    let rows: &[Row] = &[
        (
            "fits one node",
            None,
            8,
            192,
            Ok("vllm-mi300x-bf16-tp8-latency"),
            None,
            "--tensor-parallel-size 8 --served-model-name",
        ),
        (
            "leader",
            Some(0),
            8,
            192,
            Ok("vllm-mi300x-bf16-tp8-nodes2-latency"),
            Some(Role::Leader),
            "--nnodes 2 --node-rank 0 --master-addr lead --master-port 29501",
        ),
        (
            "worker",
            Some(1),
            8,
            192,
            Ok("vllm-mi300x-bf16-tp8-nodes2-latency"),
            Some(Role::Worker),
            "--node-rank 1 --master-addr lead --master-port 29501 --headless",
        ),
        // ~64 GB of weights over 8 GPUs of 8 GiB (48 GiB usable): too big for the node. The
        // one-node recipe still ranks first (the size from the name is rough); the 2-node
        // one leaves the chain, as nothing here says where the other node is.
        (
            "beyond one node, no group",
            None,
            8,
            8,
            Ok("vllm-mi300x-bf16-tp8-latency"),
            None,
            "--tensor-parallel-size 8",
        ),
    ];
    for (what, rank, n, gib, want, role, words) in rows {
        let topology = Topology {
            gpus: (0..*n)
                .map(|i| gpu(i, "MI300X", "gfx942", *gib, 0))
                .collect(),
            ..Default::default()
        };
        let got = plan(
            Want {
                group: rank.map(group),
                ..Default::default()
            },
            topology,
        );
        match (got, want) {
            (Ok(p), Ok(id)) => {
                let l = &p.plan.launches[0];
                assert_eq!(l.recipe_id, *id, "{what}");
                assert_eq!(l.role, *role, "{what}");
                assert_eq!(l.nodes, if role.is_some() { 2 } else { 1 }, "{what}");
                assert!(l.argv.join(" ").contains(words), "{what}: {:?}", l.argv);
                // A launch in a group never falls back to one that does not span it.
                assert!(p.plan.launches.iter().all(|x| x.nodes == l.nodes), "{what}");
            }
            (got, _) => panic!("{what}: {got:?}"),
        }
    }
    // Only the 2-node recipe, no group: a model too big for the node is told to start one; a
    // model that fits gets the generated one-node defaults instead.
    let only_two = vec![recipes[1].clone()];
    for (gib, want) in [(8u64, Err("AIM_NNODES=2")), (192, Ok("generated/"))] {
        let got = run(&Case {
            what: "",
            model: "Qwen/Qwen3-32B",
            config: None,
            topology: Topology {
                gpus: (0..8).map(|i| gpu(i, "MI300X", "gfx942", gib, 0)).collect(),
                ..Default::default()
            },
            want: Want::default(),
            recipes: only_two.clone(),
            expect: Err(""),
        });
        match (got, want) {
            (
                Err(
                    e @ PlanError::NeedsGroup {
                        nodes: 2,
                        total: 16,
                        ..
                    },
                ),
                Err(words),
            ) => {
                assert!(e.to_string().contains(words), "{e}");
            }
            (Ok(p), Ok(prefix)) => assert!(p.plan.launches[0].recipe_id.starts_with(prefix)),
            (got, _) => panic!("{gib} GiB: {got:?}"),
        }
    }
}
