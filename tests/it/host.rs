//! Integration tests: the host commands (`launch`, `list`, `stop`) as far as they run without
//! a Docker daemon: the dry-run spec on a fixture host and the errors that say what to do.
//! The tests against a real Docker engine are in tests/container/host-commands.sh.

use crate::support::{AimEngine, Finished, project_root};

const NO_DOCKER: &str = "unix:///nonexistent/aim-test/docker.sock";

fn run(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut run = AimEngine::new()
        .args(args)
        .env("DOCKER_HOST", NO_DOCKER)
        .env("AIM_HOST_HF_CACHE", "/tmp/aim-test-hf");
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

fn fixture() -> String {
    project_root()
        .join("tests/fixtures/sysfs/mi300x-8gpu-spx")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn dry_run_prints_the_container_spec_without_docker() {
    let root = fixture();
    let out = run(
        &[
            "--root",
            &root,
            "launch",
            "Qwen/Qwen3-32B",
            "4",
            "--image",
            "aim-engine:test",
            "--dry-run",
            "--format",
            "json",
        ],
        &[("HF_TOKEN", "hf_do_not_print")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        !stdout.contains("hf_do_not_print"),
        "token leaked: {stdout}"
    );
    let spec: serde_json::Value = serde_json::from_str(&stdout).expect("JSON spec");

    let name = spec["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("aim-engine-qwen-qwen3-32b-4gpu-"),
        "name {name}"
    );
    assert_eq!(spec["image"], "aim-engine:test");
    assert_eq!(spec["command"][1], "Qwen/Qwen3-32B");
    // Fixture root: no real devices, the chosen render nodes' fixture files instead.
    assert_eq!(spec["devices"].as_array().map(Vec::len), Some(0));
    let targets: Vec<&str> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["target"].as_str())
        .collect();
    let renders: Vec<&&str> = targets
        .iter()
        .filter(|t| t.starts_with("/aim-root/dev/dri/renderD"))
        .collect();
    assert_eq!(renders.len(), 4, "mounts {targets:?}");
    assert!(targets.contains(&"/aim-root/sys"));
    assert!(targets.contains(&"/aim-root/dev/kfd"));

    let env = &spec["env"];
    let recipe = env["AIM_PROFILE_ID"].as_str().unwrap_or_default();
    assert!(!recipe.is_empty(), "recipe pinned: {env}");
    assert_eq!(spec["labels"]["ai.amd.aim-engine.recipe"], recipe);
    assert_eq!(env["AIM_GPU_COUNT"], "4");
    assert_eq!(env["AIM_ROOT"], "/aim-root");
    assert_eq!(env["HF_TOKEN"], "***");
    assert_eq!(spec["labels"]["ai.amd.aim-engine.managed"], "true");
    assert_eq!(spec["labels"]["ai.amd.aim-engine.gpus"], "0,1,2,3");
    assert_eq!(
        spec["labels"]["ai.amd.aim-engine.render-minors"],
        "128,136,144,152"
    );
    assert_eq!(spec["ports"][0]["host"], 8000);
    assert_eq!(spec["ports"][0]["container"], 8000);
    assert_eq!(spec["ipc"], "host");
    assert_eq!(spec["cap_add"][0], "SYS_PTRACE");
    assert_eq!(spec["security_opt"][0], "seccomp=unconfined");
    assert!(
        !spec["groups"].as_array().map(Vec::is_empty).unwrap_or(true),
        "groups: {}",
        spec["groups"]
    );
}

#[test]
fn dry_run_text_shows_an_equivalent_docker_run() {
    let root = fixture();
    let out = run(
        &[
            "--root",
            &root,
            "launch",
            "Qwen/Qwen3-32B",
            "2",
            "--port",
            "9100",
            "--name",
            "my-qwen",
            "--dry-run",
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Container my-qwen",
        "docker run -d",
        "-p 9100:8000",
        "--ipc=host",
        "-e AIM_PROFILE_ID=",
    ] {
        assert!(stdout.contains(want), "{want} missing in {stdout}");
    }
}

#[test]
fn errors_say_what_to_do() {
    let root = fixture();
    struct Case {
        args: Vec<String>,
        code: i32,
        says: &'static [&'static str],
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases = [
        Case {
            args: s(&["list"]),
            code: 1,
            says: &["/nonexistent/aim-test/docker.sock", "DOCKER_HOST"],
        },
        Case {
            args: s(&["stop", "x"]),
            code: 1,
            says: &["DOCKER_HOST"],
        },
        Case {
            args: s(&["stop"]),
            code: 64,
            says: &["--all"],
        },
        Case {
            args: s(&["--root", &root, "launch", "Qwen/Qwen3-32B", "4", "--detach"]),
            code: 1,
            says: &["docker.sock", "DOCKER_HOST"],
        },
        Case {
            args: s(&[
                "--root",
                &root,
                "launch",
                "m/n",
                "--name",
                "bad name",
                "--dry-run",
            ]),
            code: 64,
            says: &["--name"],
        },
        Case {
            args: s(&[
                "--root",
                &root,
                "launch",
                "Qwen/Qwen3-32B",
                "16",
                "--dry-run",
            ]),
            code: 69,
            says: &["16 GPUs wanted", "8 of 8"],
        },
    ];
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(c.code), "{args:?}: {stderr}");
        for want in c.says {
            assert!(
                stderr.contains(want),
                "{args:?}: {want} missing in {stderr}"
            );
        }
    }
}
