//! Integration tests: `aim-engine gpus` over fixture trees (the committed real-layout trees
//! and trees from the fixture builder), run as the real binary.

#[path = "../fixtures/builder/mod.rs"]
mod builder;

use crate::support::{AimEngine, Finished, project_root};
use serde_json::Value;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    project_root().join("tests/fixtures/sysfs").join(name)
}

/// Runs `aim-engine --root ROOT gpus ARGS` with no visibility variables inherited, plus `env`.
fn gpus(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut run = AimEngine::new().root(root).arg("gpus").args(args);
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("json")
}

/// A root whose `sys` is the fixture's and whose `dev` holds only `dev` (relative paths):
/// a container given some of the host's device nodes.
fn container_root(fixture_name: &str, dev: &[&str]) -> tempfile::TempDir {
    let dir = builder::scratch_dir().expect("tempdir");
    symlink(fixture(fixture_name).join("sys"), dir.path().join("sys")).expect("link sys");
    for d in dev {
        let p = dir.path().join(d);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, "").expect("dev node");
    }
    dir
}

const GPU_KEYS: [&str; 14] = [
    "index",
    "kfd_node",
    "gpu_id",
    "pci",
    "render_minor",
    "gfx",
    "device_id",
    "product",
    "vram_bytes",
    "vram_used_bytes",
    "compute_units",
    "numa_node",
    "physical_index",
    "partition",
];

/// (HIP ordinal, KFD node) of every GPU in `gpus --format json` output.
fn ordinal_and_node(v: &serde_json::Value) -> Vec<(u64, u64)> {
    v["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .map(|g| {
            (
                g["index"].as_u64().expect("i"),
                g["kfd_node"].as_u64().expect("k"),
            )
        })
        .collect()
}

#[test]
fn json_on_mi300x_spx_matches_expected_and_has_the_documented_shape() {
    let root = fixture("mi300x-8gpu-spx");
    let v = json_of(&gpus(&root, &["--format", "json"], &[]));
    let top: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["gpus", "excluded"]);
    let exp = read_json(&root.join("expected.json"));
    let want = exp["gpus"].as_array().expect("gpus");
    let got = v["gpus"].as_array().expect("gpus");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let keys: Vec<&str> = g
            .as_object()
            .expect("gpu")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, GPU_KEYS);
        assert_eq!(g["index"], i);
        assert_eq!(g["kfd_node"], w["kfd_node"]);
        assert_eq!(g["pci"], w["bdf"]);
        assert_eq!(g["render_minor"], w["render_minor"]);
        assert_eq!(g["gfx"], w["gfx"]);
        assert_eq!(g["device_id"], w["device_id"], "hex string form");
        assert_eq!(g["vram_bytes"], w["vram_bytes"]);
        assert_eq!(g["compute_units"], w["cu"]);
        assert_eq!(g["numa_node"], w["numa"]);
        assert_eq!(g["product"], "MI300X");
        assert_eq!(g["physical_index"], i);
        assert_eq!(g["partition"], Value::Null);
    }
    let excluded: Vec<&Value> = v["excluded"].as_array().expect("excluded").iter().collect();
    let nodes: Vec<&Value> = excluded.iter().map(|e| &e["kfd_node"]).collect();
    assert_eq!(
        nodes,
        exp["cpu_nodes"]
            .as_array()
            .expect("cpu")
            .iter()
            .collect::<Vec<_>>()
    );
}

#[test]
fn text_lists_the_table_and_the_excluded_nodes() {
    let out = gpus(&fixture("rx7900xtx-raphael-igpu"), &[], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().expect("header");
    for col in ["IDX", "KFD", "PCI", "GFX", "PRODUCT", "VRAM", "PARTITION"] {
        assert!(header.contains(col), "{header}");
    }
    let row = text.lines().nth(1).expect("row");
    for cell in [
        "0000:03:00.0",
        "gfx1100",
        "renderD128",
        "RX7900",
        "24.0 GiB",
    ] {
        assert!(row.contains(cell), "{row}");
    }
    assert!(text.contains("Excluded KFD nodes:"), "{text}");
    assert!(text.contains("node 2: integrated GPU (gfx1036"), "{text}");
    assert!(text.contains("node 0: CPU node"), "{text}");
}

#[test]
fn igpu_is_excluded_with_its_reason_in_json() {
    let v = json_of(&gpus(
        &fixture("rx7900xtx-raphael-igpu"),
        &["--format", "json"],
        &[],
    ));
    let g = v["gpus"].as_array().expect("gpus");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["kfd_node"], 1);
    assert_eq!(g[0]["index"], 0);
    let igpu = v["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .find(|e| e["kfd_node"] == 2)
        .expect("iGPU listed");
    assert!(
        igpu["reason"]
            .as_str()
            .expect("reason")
            .contains("integrated")
    );
}

#[test]
fn without_dev_kfd_it_says_which_docker_flags_and_exits_no_fit() {
    let root = container_root("mi300x-8gpu-spx", &[]);
    let out = gpus(root.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(69), "exit::NO_FIT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/kfd does not exist"), "{err}");
    assert!(err.contains("--device /dev/kfd --device /dev/dri"), "{err}");
    assert!(
        err.contains("--group-add video --group-add render"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn without_amdgpu_it_says_so() {
    let dir = builder::scratch_dir().expect("tempdir");
    let out = gpus(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no AMD GPU driver"), "{err}");
    assert!(err.contains("amdgpu"), "{err}");
}

#[test]
fn container_given_one_render_node_sees_one_gpu() {
    let root = container_root("mi300x-8gpu-spx", &["dev/kfd", "dev/dri/renderD144"]);
    let v = json_of(&gpus(root.path(), &["--format", "json"], &[]));
    let g = v["gpus"].as_array().expect("gpus");
    assert_eq!(g.len(), 1, "{v:#}");
    assert_eq!(g[0]["index"], 0);
    assert_eq!(g[0]["kfd_node"], 4);
    assert_eq!(g[0]["pci"], "0000:47:00.0");
    let reasons: Vec<&str> = v["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .filter(|e| e["kfd_node"].as_u64().is_some_and(|n| n >= 2))
        .map(|e| e["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons.len(), 7);
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("not assigned to this container"))
    );
}

#[test]
fn visibility_variables_filter_without_renumbering() {
    let root = fixture("mi300x-8gpu-spx");
    let v = json_of(&gpus(
        &root,
        &["--format", "json"],
        &[
            ("HIP_VISIBLE_DEVICES", "1,3"),
            ("CUDA_VISIBLE_DEVICES", "1,3"),
        ],
    ));
    let got = ordinal_and_node(&v);
    assert_eq!(got, [(1, 3), (3, 5)]);

    // ROCR renumbers: ROCR=4,6 makes KFD node 6 ordinal 0 and node 8 ordinal 1.
    let v = json_of(&gpus(
        &root,
        &["--format", "json"],
        &[("ROCR_VISIBLE_DEVICES", "4,6")],
    ));
    let got = ordinal_and_node(&v);
    assert_eq!(got, [(0, 6), (1, 8)]);

    let out = gpus(
        &root,
        &[],
        &[("HIP_VISIBLE_DEVICES", "0"), ("CUDA_VISIBLE_DEVICES", "1")],
    );
    assert_eq!(out.status.code(), Some(64), "exit::USAGE");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Inconsistent GPU visibility env vars"),
        "{err}"
    );
}

#[test]
fn cpx_partitions_from_the_builder_via_aim_root() {
    let dir = builder::scratch_dir().expect("tempdir");
    builder::build(dir.path(), &builder::Host::mi300x_cpx_63()).expect("build");
    let v = AimEngine::new()
        .args(["gpus", "--format", "json"])
        .env("AIM_ROOT", dir.path())
        .output()
        .json();
    let g = v["gpus"].as_array().expect("gpus");
    assert_eq!(g.len(), 63);
    for (i, gpu) in g.iter().enumerate() {
        assert_eq!(gpu["index"], i);
        assert_eq!(gpu["physical_index"], i / 8);
        assert_eq!(gpu["partition"]["mode"], "CPX");
        assert_eq!(gpu["partition"]["index"], i % 8);
        assert_eq!(gpu["vram_bytes"], 206141652992u64 / 8);
    }
}

/// sysfs attributes are read with a bound and only from regular files: a 300 MB file, one
/// linked to /dev/zero and a FIFO each fail at once with an error that names the file, and
/// never grow memory or block.
#[test]
fn sysfs_reads_are_bounded_and_regular_files_only() {
    use aim_engine::gpu::{FsReader, SysReader};
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("sys/a");
    std::fs::create_dir_all(&base).expect("mkdir");
    std::fs::write(base.join("small"), "ok\n").expect("small");
    std::fs::File::create(base.join("big"))
        .and_then(|f| f.set_len(300 << 20))
        .expect("sparse 300 MB file");
    symlink("/dev/zero", base.join("zero")).expect("symlink");
    nix::unistd::mkfifo(&base.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let root = dir.path().to_path_buf();
    for (name, why) in [
        ("big", "larger than"),
        ("zero", "not a regular file"),
        ("fifo", "not a regular file"),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let root = root.clone();
        std::thread::spawn(move || {
            let _ = tx.send(FsReader::new(&root).read(&format!("sys/a/{name}")));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("reading {name} did not end within 5 s"));
        let err = match got {
            Ok(text) => panic!("{name}: read {} bytes instead of failing", text.len()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("sys/a/{name}")), "{name}: {err}");
        assert!(err.contains(why), "{name}: {err}");
    }
    assert_eq!(
        FsReader::new(&root).read("sys/a/small").expect("small"),
        "ok\n"
    );
}
