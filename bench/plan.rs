//! Planning cost vs catalogue size: load + select + argv for one model with a catalogue of 10
//! recipes (1 model x 10) and of 10,000 (1,000 models x 10), generated into a temp dir.
//! A launch reads only its model's folder and general/, so the two must be about equal.
//!
//! Run: `cargo bench --bench plan`. Besides criterion's report it prints the median of each
//! case and their ratio (target: under 2 ms, ratio under 1.5).

use aim_engine::gpu::{Gpu, Topology};
use aim_engine::model::config::facts;
use aim_engine::plan::{Launchers, PlanInput, Want, decide};
use aim_engine::recipe::load::{SearchPath, load_for_model};
use criterion::Criterion;
use indexmap::IndexMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const TARGET: &str = "org0/model-0";

/// `models` models with 10 recipes each (TP 1/2/4/8 x latency/throughput, plus 2 fp8).
fn catalogue(root: &Path, models: usize) {
    for m in 0..models {
        let id = format!("org{}/model-{}", m % 37, m);
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut n = 0;
        for (prec, tps) in [("bf16", &[1u32, 2, 4, 8][..]), ("fp8", &[4, 8][..])] {
            for &tp in tps {
                for metric in ["latency", "throughput"] {
                    if n == 10 {
                        break;
                    }
                    n += 1;
                    let text = format!(
                        "aim_id: {id}\nmodel_id: {id}\nmetadata:\n  engine: vllm\n  gpu: MI300X\n  gpu_count: {tp}\n  precision: {prec}\n  metric: {metric}\n  type: optimized\n  manual_selection_only: false\nengine_args:\n  tensor-parallel-size: {tp}\n  max-model-len: 32768\n  gpu-memory-utilization: 0.9\n  no-enable-prefix-caching: null\nenv_vars:\n  VLLM_ROCM_USE_AITER: '1'\n"
                    );
                    std::fs::write(
                        dir.join(format!("vllm-mi300x-{prec}-tp{tp}-{metric}.yaml")),
                        text,
                    )
                    .expect("write");
                }
            }
        }
    }
}

fn topology() -> Topology {
    let gpus = (0..8u32)
        .map(|i| Gpu {
            gpu_id: i,
            hive_id: 1,
            unique_id: u64::from(i),
            ..Gpu::mi300x(i)
        })
        .collect();
    Topology {
        gpus,
        ..Default::default()
    }
}

fn once(sp: &SearchPath, topo: &Topology) -> usize {
    once_for(sp, topo, TARGET)
}

fn once_for(sp: &SearchPath, topo: &Topology, model: &str) -> usize {
    let recipes = load_for_model(sp, Some(model)).expect("load");
    let f = facts("org0/model-0-32B", None, None);
    let want = Want::default();
    let args = IndexMap::new();
    let launchers = Launchers::default();
    let p = decide(&PlanInput {
        topology: topo,
        model,
        checkpoint: model,
        facts: &f,
        recipes: &recipes,
        want: &want,
        user_args: &args,
        launchers: &launchers,
        engine_port: 8001,
    })
    .expect("plan");
    p.plan.launches.len()
}

type Stats = (Duration, Duration, Duration);

/// (min, median, p90) of 301 runs of each case, the cases interleaved run by run so that a
/// noisy neighbour or a frequency change hits them alike (a shared VM drifts by 50% between
/// back-to-back series).
fn stats(cases: &[(&SearchPath, &str)], topo: &Topology) -> Vec<Stats> {
    let mut runs: Vec<Vec<Duration>> = vec![Vec::with_capacity(301); cases.len()];
    for _ in 0..301 {
        for (i, (sp, model)) in cases.iter().enumerate() {
            let t = Instant::now();
            black_box(once_for(sp, topo, model));
            runs[i].push(t.elapsed());
        }
    }
    runs.into_iter()
        .map(|mut v| {
            v.sort();
            (v[0], v[v.len() / 2], v[v.len() * 9 / 10])
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let small = tempfile::tempdir().expect("tempdir");
    let big = tempfile::tempdir().expect("tempdir");
    catalogue(small.path(), 1);
    catalogue(big.path(), 1000);
    let sp = |p: &Path| SearchPath {
        extra: vec![],
        builtin: Some(p.to_path_buf()),
    };
    let (sp_small, sp_big) = (sp(small.path()), sp(big.path()));
    let topo = topology();
    assert_eq!(once(&sp_small, &topo), 10);
    assert_eq!(once(&sp_big, &topo), 10);

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("plan_load_select");
    g.bench_function("catalogue_10", |b| b.iter(|| once(&sp_small, &topo)));
    g.bench_function("catalogue_10000", |b| b.iter(|| once(&sp_big, &topo)));
    g.finish();
    c.final_summary();

    // The third case, a model with no folder: the case-insensitive lookup lists the org
    // level once.
    let all = stats(
        &[
            (&sp_small, TARGET),
            (&sp_big, TARGET),
            (&sp_big, "Org0/Unknown-Model"),
        ],
        &topo,
    );
    let (a, b, c) = (all[0], all[1], all[2]);
    for (what, (min, med, p90)) in [
        ("10 recipes", a),
        ("10,000 recipes", b),
        ("10,000 recipes, model without recipes", c),
    ] {
        println!(
            "plan load+select {what}: min {:.3} ms, median {:.3} ms, p90 {:.3} ms",
            ms(min),
            ms(med),
            ms(p90)
        );
    }
    println!(
        "ratio 10,000 / 10: median {:.2}, min {:.2}",
        b.1.as_secs_f64() / a.1.as_secs_f64(),
        b.0.as_secs_f64() / a.0.as_secs_f64()
    );
}
