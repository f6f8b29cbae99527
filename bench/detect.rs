//! Criterion bench of in-process GPU detection: the committed 8x MI300X SPX tree and a
//! 64-partition MI300X CPX tree from the fixture builder (on tmpfs when available).
//! Run: `cargo bench --bench detect`. Target: well under 1 ms on the 8-GPU tree.

#[path = "../tests/fixtures/builder/mod.rs"]
mod builder;

use aim_engine::gpu::{self, VisibilityEnv};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;

/// CPU time (user + system) this process has used, from getrusage(2). On a loaded machine
/// wall-clock figures mostly measure waiting for a core; CPU time per call does not.
fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage only writes the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live rusage, RUSAGE_SELF is a valid `who`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        std::time::Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Prints the mean CPU time of `n` calls of `f`.
fn report_cpu_time<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    let start = cpu_time();
    for _ in 0..n {
        black_box(f());
    }
    let per_call = (cpu_time() - start) / n;
    println!("{name}: {per_call:?} CPU time per call (mean of {n})");
}

fn bench_detect(c: &mut Criterion) {
    let vis = VisibilityEnv::default();
    let spx =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/mi300x-8gpu-spx");
    report_cpu_time("detect_mi300x_8gpu_spx_fixture", 2000, || {
        gpu::detect(&spx, &vis).is_ok()
    });
    c.bench_function("detect_mi300x_8gpu_spx_fixture", |b| {
        b.iter(|| gpu::detect(black_box(&spx), &vis).map(|t| t.gpus.len()))
    });

    let cpx = builder::scratch_dir().expect("scratch dir");
    builder::build(cpx.path(), &builder::Host::mi300x_8(true)).expect("build CPX tree");
    report_cpu_time("detect_mi300x_8x8_cpx_built", 100, || {
        gpu::detect(cpx.path(), &vis).is_ok()
    });
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
