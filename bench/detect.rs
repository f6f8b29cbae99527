//! Criterion bench of in-process GPU detection: the committed 8x MI300X SPX tree and a
//! 64-partition MI300X CPX tree from the fixture builder (on tmpfs when available).
//! Run: `cargo bench --bench detect`. Target: well under 1 ms on the 8-GPU tree.

#[path = "../tests/fixtures/builder/mod.rs"]
mod builder;

use aim_engine::gpu::{self, VisibilityEnv};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;

fn bench_detect(c: &mut Criterion) {
    let vis = VisibilityEnv::default();
    let spx =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/mi300x-8gpu-spx");
    c.bench_function("detect_mi300x_8gpu_spx_fixture", |b| {
        b.iter(|| gpu::detect(black_box(&spx), &vis).map(|t| t.gpus.len()))
    });

    let cpx = builder::scratch_dir().expect("scratch dir");
    builder::build(cpx.path(), &builder::Host::mi300x_8(true)).expect("build CPX tree");
    c.bench_function("detect_mi300x_8x8_cpx_built", |b| {
        b.iter(|| gpu::detect(black_box(cpx.path()), &vis).map(|t| t.gpus.len()))
    });

    c.bench_function("read_vram_used_8_cards", |b| {
        let minors: Vec<u32> = (0..8).map(|i| 128 + 8 * i).collect();
        b.iter(|| gpu::read_vram_used(black_box(&spx), &minors))
    });
}

criterion_group!(benches, bench_detect);
criterion_main!(benches);
