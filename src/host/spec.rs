//! The container an `aim-engine launch` creates, as plain data: what `--dry-run --format
//! json` prints and what is turned into the Docker Engine API's create body. Pure.
//!
//! What goes in, and why:
//! - `/dev/kfd` and only the chosen GPUs' `/dev/dri/renderD<N>` (and card) nodes, so the
//!   engine inside cannot touch another container's GPUs; inside, ROCm renumbers them 0..N-1
//!   and the container's own detection sees exactly these.
//! - the groups that own those nodes (numeric ids from the host, since the image may lack a
//!   `render` group), `ipc=host`, `cap_add SYS_PTRACE` and `seccomp=unconfined`, as AMD's
//!   ROCm vLLM/SGLang instructions run their containers.
//! - the host's Hugging Face cache, HF_TOKEN when set, and the chosen recipe pinned with
//!   AIM_PROFILE_ID (+ AIM_GPU_COUNT, AIM_PRECISION, AIM_ENGINE) so the container cannot pick
//!   differently from the plan the host made.
//! - labels that let `launch`, `list` and `stop` find the container and the GPUs it holds.
//!
//! Test seam (sysfs fixtures): when the host root (`--root`, AIM_ROOT) is not `/`, there are
//! no real devices to pass. Instead `<root>/sys` is bind-mounted read-only at
//! `/aim-root/sys`, `<root>/dev/kfd` and the chosen GPUs' `<root>/dev/dri/*` fixture files at
//! `/aim-root/dev/...` (read-write binds of empty files, because detection checks
//! `access(R_OK|W_OK)` as on a real node), and AIM_ROOT=/aim-root is set inside. Detection in
//! the container then finds exactly the chosen GPUs, as on a real host. With root `/` none of
//! this happens.

use crate::host::alloc::format_list;
use crate::launch::Launch;
use indexmap::IndexMap;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Label keys (all under `ai.amd.aim-engine.`).
pub mod label {
    pub const MANAGED: &str = "ai.amd.aim-engine.managed";
    pub const MODEL: &str = "ai.amd.aim-engine.model";
    pub const RECIPE: &str = "ai.amd.aim-engine.recipe";
    pub const GPUS: &str = "ai.amd.aim-engine.gpus";
    pub const RENDER_MINORS: &str = "ai.amd.aim-engine.render-minors";
    pub const PCI: &str = "ai.amd.aim-engine.pci";
    pub const GPU_COUNT: &str = "ai.amd.aim-engine.gpu-count";
    pub const PRECISION: &str = "ai.amd.aim-engine.precision";
    pub const ENGINE: &str = "ai.amd.aim-engine.engine";
    pub const PORT: &str = "ai.amd.aim-engine.port";
    pub const IMAGE: &str = "ai.amd.aim-engine.image";
    pub const VERSION: &str = "ai.amd.aim-engine.version";
    pub const ROOT: &str = "ai.amd.aim-engine.root";
}

/// The port the supervisor listens on inside every container.
pub const CONTAINER_PORT: u16 = 8000;
/// Where the host's Hugging Face cache appears inside (and HF_HOME there).
pub const CONTAINER_HF_HOME: &str = "/root/.cache/huggingface";
/// Where a fixture root appears inside (AIM_ROOT there).
pub const CONTAINER_ROOT: &str = "/aim-root";
/// Where the host's extra recipe folders appear inside (`/aim-recipes/0`, ...).
pub const CONTAINER_RECIPES: &str = "/aim-recipes";
/// Seconds Docker waits after SIGTERM (also `docker stop`'s default for the container):
/// the supervisor's own engine grace (30 s) plus draining, with room to spare.
pub const STOP_TIMEOUT_S: i64 = 60;
/// Environment variables passed through from the host when set.
pub const PASS_THROUGH: &[&str] = &[
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
];
/// Passed-through variables whose values `--dry-run` must not print.
const SECRETS: &[&str] = &["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"];

/// One chosen GPU, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChosenGpu {
    /// Host ordinal (`Gpu::index`).
    pub ordinal: u32,
    pub render_minor: u32,
    /// The DRM card node of the same device (`card17`), when sysfs names one.
    pub card: Option<String>,
    pub pci: String,
}

/// Everything the spec is made from; gathered by the IO shell.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub name: String,
    pub image: String,
    /// The model as the user gave it.
    pub model: String,
    /// The recipe the host chose (launches[0] of its plan).
    pub launch: &'a Launch,
    pub gpus: Vec<ChosenGpu>,
    pub host_port: u16,
    /// Host root of sysfs and /dev (absolute); `/` on a real host.
    pub root: PathBuf,
    /// Host Hugging Face cache folder (absolute).
    pub hf_cache: PathBuf,
    /// Supplementary groups (numeric ids as strings, or names).
    pub groups: Vec<String>,
    /// Pass-through variables that are set on the host (name, value).
    pub pass_through: Vec<(String, String)>,
    /// Further AIM_* settings the user gave explicitly (AIM_METRIC, AIM_GPU_MODEL, ...).
    pub extra_env: Vec<(String, String)>,
    /// Extra recipe folders the host planned with (absolute).
    pub recipes_dirs: Vec<PathBuf>,
    /// The model folder, when MODEL is a local path on the host (absolute).
    pub local_model: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub host: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub host: u16,
    pub container: u16,
    pub protocol: &'static str,
}

/// The container, as `--dry-run --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub devices: Vec<Device>,
    pub groups: Vec<String>,
    pub env: IndexMap<String, String>,
    pub labels: IndexMap<String, String>,
    pub ports: Vec<Port>,
    pub mounts: Vec<Mount>,
    pub ipc: String,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub restart: String,
    pub stop_timeout_s: i64,
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether `root` means the real machine.
pub fn is_real_root(root: &Path) -> bool {
    root == Path::new("/")
}

/// Builds the container spec.
pub fn build(input: &SpecInput<'_>) -> ContainerSpec {
    let real = is_real_root(&input.root);
    let (devices, mut mounts) = device_nodes(input, real);
    mounts.push(Mount {
        source: path_str(&input.hf_cache),
        target: CONTAINER_HF_HOME.to_string(),
        read_only: false,
    });
    let recipe_targets: Vec<String> = (0..input.recipes_dirs.len())
        .map(|i| format!("{CONTAINER_RECIPES}/{i}"))
        .collect();
    for (dir, target) in input.recipes_dirs.iter().zip(&recipe_targets) {
        mounts.push(Mount {
            source: path_str(dir),
            target: target.clone(),
            read_only: true,
        });
    }
    if let Some(m) = &input.local_model {
        // Same path inside, so MODEL (and the recipe's model_id) mean the same thing there.
        mounts.push(Mount {
            source: path_str(m),
            target: path_str(m),
            read_only: true,
        });
    }
    ContainerSpec {
        name: input.name.clone(),
        image: input.image.clone(),
        command: vec!["serve".into(), input.model.clone()],
        devices,
        groups: input.groups.clone(),
        env: env_of(input, real, &recipe_targets),
        labels: labels_of(input, real),
        ports: vec![Port {
            host: input.host_port,
            container: CONTAINER_PORT,
            protocol: "tcp",
        }],
        mounts,
        ipc: "host".into(),
        cap_add: vec!["SYS_PTRACE".into()],
        security_opt: vec!["seccomp=unconfined".into()],
        restart: "unless-stopped".into(),
        stop_timeout_s: STOP_TIMEOUT_S,
    }
}

/// Device nodes: real ones on a real host; fixture files as binds under a fixture root.
fn device_nodes(input: &SpecInput<'_>, real: bool) -> (Vec<Device>, Vec<Mount>) {
    let mut nodes: Vec<String> = vec!["/dev/kfd".to_string()];
    for g in &input.gpus {
        nodes.push(format!("/dev/dri/renderD{}", g.render_minor));
        if let Some(card) = &g.card {
            nodes.push(format!("/dev/dri/{card}"));
        }
    }
    if real {
        let devices = nodes
            .iter()
            .map(|n| Device {
                host: n.clone(),
                container: n.clone(),
            })
            .collect();
        return (devices, Vec::new());
    }
    let mut mounts = vec![Mount {
        source: path_str(&input.root.join("sys")),
        target: format!("{CONTAINER_ROOT}/sys"),
        read_only: true,
    }];
    for n in &nodes {
        let rel = n.trim_start_matches('/');
        mounts.push(Mount {
            source: path_str(&input.root.join(rel)),
            target: format!("{CONTAINER_ROOT}/{rel}"),
            read_only: false,
        });
    }
    (Vec::new(), mounts)
}

/// The container's environment: the chosen recipe pinned, then the user's settings and the
/// pass-through variables.
fn env_of(
    input: &SpecInput<'_>,
    real: bool,
    recipe_targets: &[String],
) -> IndexMap<String, String> {
    let l = input.launch;
    let mut env: IndexMap<String, String> = IndexMap::new();
    env.insert("AIM_PROFILE_ID".into(), l.recipe_id.clone());
    env.insert("AIM_GPU_COUNT".into(), l.gpu_count.to_string());
    env.insert("AIM_PRECISION".into(), l.precision.as_str().into());
    env.insert("AIM_ENGINE".into(), l.engine.as_str().into());
    env.insert("AIM_PORT".into(), CONTAINER_PORT.to_string());
    env.insert("HF_HOME".into(), CONTAINER_HF_HOME.into());
    if !real {
        env.insert("AIM_ROOT".into(), CONTAINER_ROOT.into());
    }
    if !recipe_targets.is_empty() {
        env.insert("AIM_RECIPES_DIR".into(), recipe_targets.join(":"));
    }
    for (k, v) in input.extra_env.iter().chain(&input.pass_through) {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// The labels `launch`, `list` and `stop` find the container and its GPUs by.
fn labels_of(input: &SpecInput<'_>, real: bool) -> IndexMap<String, String> {
    let l = input.launch;
    let ordinals: Vec<u32> = input.gpus.iter().map(|g| g.ordinal).collect();
    let minors: Vec<u32> = input.gpus.iter().map(|g| g.render_minor).collect();
    let pci: Vec<&str> = input.gpus.iter().map(|g| g.pci.as_str()).collect();
    let mut labels: IndexMap<String, String> = IndexMap::new();
    labels.insert(label::MANAGED.into(), "true".into());
    labels.insert(label::MODEL.into(), input.model.clone());
    labels.insert(label::RECIPE.into(), l.recipe_id.clone());
    labels.insert(label::GPUS.into(), format_list(&ordinals));
    labels.insert(label::RENDER_MINORS.into(), format_list(&minors));
    labels.insert(label::PCI.into(), pci.join(","));
    labels.insert(label::GPU_COUNT.into(), l.gpu_count.to_string());
    labels.insert(label::PRECISION.into(), l.precision.as_str().into());
    labels.insert(label::ENGINE.into(), l.engine.as_str().into());
    labels.insert(label::PORT.into(), input.host_port.to_string());
    labels.insert(label::IMAGE.into(), input.image.clone());
    labels.insert(label::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    if !real {
        labels.insert(label::ROOT.into(), path_str(&input.root));
    }
    labels
}

impl ContainerSpec {
    /// The spec as JSON for `--dry-run`, with secret values replaced by `***`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut copy = self.clone();
        for (k, v) in copy.env.iter_mut() {
            if SECRETS.contains(&k.as_str()) {
                *v = "***".into();
            }
        }
        serde_json::to_value(&copy).unwrap_or(serde_json::Value::Null)
    }

    /// The Docker Engine API create body.
    pub fn to_create_body(&self) -> bollard::models::ContainerCreateBody {
        use bollard::models::{
            ContainerCreateBody, DeviceMapping, HostConfig, Mount as DMount, MountType,
            PortBinding, RestartPolicy, RestartPolicyNameEnum,
        };
        use std::collections::HashMap;
        let mut port_bindings = HashMap::new();
        let mut exposed = Vec::new();
        for p in &self.ports {
            let key = format!("{}/{}", p.container, p.protocol);
            exposed.push(key.clone());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(p.host.to_string()),
                }]),
            );
        }
        let host_config = HostConfig {
            devices: Some(
                self.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host.clone()),
                        path_in_container: Some(d.container.clone()),
                        cgroup_permissions: Some("rwm".into()),
                    })
                    .collect(),
            ),
            group_add: Some(self.groups.clone()),
            ipc_mode: Some(self.ipc.clone()),
            cap_add: Some(self.cap_add.clone()),
            security_opt: Some(self.security_opt.clone()),
            port_bindings: Some(port_bindings),
            mounts: Some(
                self.mounts
                    .iter()
                    .map(|m| DMount {
                        source: Some(m.source.clone()),
                        target: Some(m.target.clone()),
                        typ: Some(MountType::BIND),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    })
                    .collect(),
            ),
            restart_policy: Some(RestartPolicy {
                name: Some(match self.restart.as_str() {
                    "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                    "always" => RestartPolicyNameEnum::ALWAYS,
                    "no" => RestartPolicyNameEnum::NO,
                    _ => RestartPolicyNameEnum::UNLESS_STOPPED,
                }),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.command.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            exposed_ports: Some(exposed),
            stop_timeout: Some(self.stop_timeout_s),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// Supplementary groups for the container: the groups owning the device nodes (their host
/// ids) plus the host's `video` and `render` groups, as numeric ids so the image need not
/// know the names. Group 0 is left out (root needs no help; fixture files are root's).
/// Without any id known, `video` by name (every Debian/Ubuntu image has it).
pub fn groups(host_groups: &[(String, u32)], device_gids: &[u32]) -> Vec<String> {
    let mut ids: Vec<u32> = device_gids.iter().copied().filter(|&g| g != 0).collect();
    for (name, gid) in host_groups {
        if (name == "video" || name == "render") && *gid != 0 {
            ids.push(*gid);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return vec!["video".into()];
    }
    ids.iter().map(u32::to_string).collect()
}

/// `/etc/group` text -> (name, gid) pairs.
pub fn parse_etc_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.trim();
            let _pw = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then(|| (name.to_string(), gid))
        })
        .collect()
}

/// The first port from `from` not in `used` (and accepted by `bindable`), or None when every
/// port up to 65535 is taken.
pub fn first_free_port(from: u16, used: &[u16], bindable: &dyn Fn(u16) -> bool) -> Option<u16> {
    (from..=u16::MAX).find(|p| !used.contains(p) && bindable(*p))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::launch::SelectedGpu;
    use crate::types::{Engine, Precision};

    /// A 2-GPU vLLM launch (also the host side's other tests' fixture).
    pub(crate) fn launch() -> Launch {
        Launch {
            recipe_id: "vllm-mi300x-bf16-tp2-latency".into(),
            engine: Engine::Vllm,
            precision: Precision::Bf16,
            gpu_count: 2,
            nodes: 1,
            role: None,
            group: None,
            gpus: vec![SelectedGpu {
                ordinal: 0,
                product: "MI300X".into(),
                pci: "0000:05:00.0".into(),
                render_minor: 128,
            }],
            served_model_name: "Qwen/Qwen3-8B".into(),
            argv: vec!["vllm".into(), "serve".into()],
            env: IndexMap::new(),
            engine_port: 8001,
            user_flags: Vec::new(),
        }
    }

    fn input<'a>(l: &'a Launch, root: &str) -> SpecInput<'a> {
        SpecInput {
            name: "aim-engine-qwen-qwen3-8b-2gpu-bf16-vllm".into(),
            image: "aim-engine:latest".into(),
            model: "Qwen/Qwen3-8B".into(),
            launch: l,
            gpus: vec![
                ChosenGpu {
                    ordinal: 2,
                    render_minor: 144,
                    card: Some("card17".into()),
                    pci: "0000:47:00.0".into(),
                },
                ChosenGpu {
                    ordinal: 3,
                    render_minor: 152,
                    card: None,
                    pci: "0000:65:00.0".into(),
                },
            ],
            host_port: 8001,
            root: PathBuf::from(root),
            hf_cache: PathBuf::from("/home/u/.cache/huggingface"),
            groups: vec!["44".into(), "992".into()],
            pass_through: vec![("HF_TOKEN".into(), "hf_secret".into())],
            extra_env: vec![("AIM_METRIC".into(), "throughput".into())],
            recipes_dirs: vec![],
            local_model: None,
        }
    }

    /// The dry run's text: the GPUs, the recipe and an equivalent `docker run`, secrets
    /// redacted.
    #[test]
    fn dry_run_text_is_an_equivalent_docker_run() {
        let l = launch();
        let t = crate::host::view::docker_run_text(&build(&input(&l, "/")));
        assert!(
            t.starts_with(
                "Container aim-engine-qwen-qwen3-8b-2gpu-bf16-vllm (image aim-engine:latest)\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("  GPUs (host ordinals): 2,3   render minors: 144,152\n"),
            "{t}"
        );
        for part in [
            "docker run -d",
            "--stop-timeout 60",
            "--device /dev/dri/renderD144",
            "--group-add 992",
            "-p 8001:8000",
            "-e HF_TOKEN=***",
            "-e AIM_METRIC=throughput",
            "aim-engine:latest \\\n      serve \\\n      Qwen/Qwen3-8B\n",
        ] {
            assert!(t.contains(part), "{part:?} not in {t}");
        }
        assert!(!t.contains("hf_secret"), "{t}");
    }

    #[test]
    fn real_host_spec_passes_only_the_chosen_devices() {
        let l = launch();
        let s = build(&input(&l, "/"));
        let devs: Vec<&str> = s.devices.iter().map(|d| d.host.as_str()).collect();
        assert_eq!(
            devs,
            [
                "/dev/kfd",
                "/dev/dri/renderD144",
                "/dev/dri/card17",
                "/dev/dri/renderD152"
            ]
        );
        assert!(s.devices.iter().all(|d| d.host == d.container));
        assert_eq!(s.groups, ["44", "992"]);
        assert_eq!(s.ipc, "host");
        assert_eq!(s.cap_add, ["SYS_PTRACE"]);
        assert_eq!(s.security_opt, ["seccomp=unconfined"]);
        assert_eq!(s.restart, "unless-stopped");
        assert_eq!(
            s.ports,
            [Port {
                host: 8001,
                container: 8000,
                protocol: "tcp"
            }]
        );
        assert_eq!(s.command, ["serve", "Qwen/Qwen3-8B"]);
        // Only the HF cache is mounted on a real host.
        assert_eq!(
            s.mounts,
            [Mount {
                source: "/home/u/.cache/huggingface".into(),
                target: CONTAINER_HF_HOME.into(),
                read_only: false
            }]
        );
        assert!(!s.env.contains_key("AIM_ROOT"));
        assert!(!s.labels.contains_key(label::ROOT));
    }

    #[test]
    fn env_pins_the_recipe_and_passes_the_token() {
        let l = launch();
        let s = build(&input(&l, "/"));
        let want = [
            ("AIM_PROFILE_ID", "vllm-mi300x-bf16-tp2-latency"),
            ("AIM_GPU_COUNT", "2"),
            ("AIM_PRECISION", "bf16"),
            ("AIM_ENGINE", "vllm"),
            ("AIM_PORT", "8000"),
            ("HF_HOME", CONTAINER_HF_HOME),
            ("AIM_METRIC", "throughput"),
            ("HF_TOKEN", "hf_secret"),
        ];
        let got: Vec<(&str, &str)> = s
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
        let json = s.to_redacted_json();
        assert_eq!(json["env"]["HF_TOKEN"], "***");
        assert_eq!(
            json["env"]["AIM_PROFILE_ID"],
            "vllm-mi300x-bf16-tp2-latency"
        );
        assert!(!json.to_string().contains("hf_secret"));
    }

    #[test]
    fn labels_record_model_recipe_gpus_and_port() {
        let l = launch();
        let s = build(&input(&l, "/"));
        let want = [
            (label::MANAGED, "true"),
            (label::MODEL, "Qwen/Qwen3-8B"),
            (label::RECIPE, "vllm-mi300x-bf16-tp2-latency"),
            (label::GPUS, "2,3"),
            (label::RENDER_MINORS, "144,152"),
            (label::PCI, "0000:47:00.0,0000:65:00.0"),
            (label::GPU_COUNT, "2"),
            (label::PRECISION, "bf16"),
            (label::ENGINE, "vllm"),
            (label::PORT, "8001"),
            (label::IMAGE, "aim-engine:latest"),
        ];
        for (k, v) in want {
            assert_eq!(s.labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
    }

    #[test]
    fn fixture_root_maps_fixture_files_instead_of_devices() {
        let l = launch();
        let s = build(&input(&l, "/fx/mi300x"));
        assert!(s.devices.is_empty(), "no real devices under a fixture root");
        let m: Vec<(&str, &str, bool)> = s
            .mounts
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str(), m.read_only))
            .collect();
        assert_eq!(
            m,
            [
                ("/fx/mi300x/sys", "/aim-root/sys", true),
                ("/fx/mi300x/dev/kfd", "/aim-root/dev/kfd", false),
                (
                    "/fx/mi300x/dev/dri/renderD144",
                    "/aim-root/dev/dri/renderD144",
                    false
                ),
                (
                    "/fx/mi300x/dev/dri/card17",
                    "/aim-root/dev/dri/card17",
                    false
                ),
                (
                    "/fx/mi300x/dev/dri/renderD152",
                    "/aim-root/dev/dri/renderD152",
                    false
                ),
                ("/home/u/.cache/huggingface", CONTAINER_HF_HOME, false),
            ]
        );
        assert_eq!(s.env["AIM_ROOT"], "/aim-root");
        assert_eq!(s.labels[label::ROOT], "/fx/mi300x");
    }

    #[test]
    fn recipe_dirs_and_local_models_are_mounted_read_only() {
        let l = launch();
        let mut i = input(&l, "/");
        i.recipes_dirs = vec![PathBuf::from("/etc/aim/r1"), PathBuf::from("/srv/r2")];
        i.local_model = Some(PathBuf::from("/models/Qwen3-8B"));
        let s = build(&i);
        assert_eq!(s.env["AIM_RECIPES_DIR"], "/aim-recipes/0:/aim-recipes/1");
        let ro: Vec<(&str, &str)> = s
            .mounts
            .iter()
            .filter(|m| m.read_only)
            .map(|m| (m.source.as_str(), m.target.as_str()))
            .collect();
        assert_eq!(
            ro,
            [
                ("/etc/aim/r1", "/aim-recipes/0"),
                ("/srv/r2", "/aim-recipes/1"),
                ("/models/Qwen3-8B", "/models/Qwen3-8B")
            ]
        );
    }

    #[test]
    fn create_body_carries_the_spec() {
        let l = launch();
        let s = build(&input(&l, "/"));
        let b = s.to_create_body();
        assert_eq!(b.image.as_deref(), Some("aim-engine:latest"));
        assert_eq!(b.cmd, Some(vec!["serve".into(), "Qwen/Qwen3-8B".into()]));
        let env = b.env.unwrap_or_default();
        assert!(env.contains(&"AIM_PROFILE_ID=vllm-mi300x-bf16-tp2-latency".to_string()));
        let hc = b.host_config.unwrap_or_default();
        assert_eq!(hc.ipc_mode.as_deref(), Some("host"));
        assert_eq!(hc.devices.as_ref().map(Vec::len), Some(4));
        let binding = hc
            .port_bindings
            .as_ref()
            .and_then(|p| p.get("8000/tcp").cloned())
            .flatten()
            .unwrap_or_default();
        assert_eq!(binding[0].host_port.as_deref(), Some("8001"));
        assert_eq!(hc.group_add, Some(vec!["44".into(), "992".into()]));
        assert_eq!(
            b.labels
                .unwrap_or_default()
                .get(label::RENDER_MINORS)
                .cloned(),
            Some("144,152".into())
        );
    }

    #[test]
    fn groups_are_numeric_and_deduplicated() {
        let etc = "root:x:0:\nvideo:x:44:u\n# c\nrender:x:992:\nbad line\n";
        let host = parse_etc_group(etc);
        assert_eq!(
            host,
            [
                ("root".to_string(), 0),
                ("video".to_string(), 44),
                ("render".to_string(), 992)
            ]
        );
        assert_eq!(groups(&host, &[992, 0, 110]), ["44", "110", "992"]);
        assert_eq!(groups(&[], &[0]), ["video"]);
    }

    #[test]
    fn first_free_port_skips_used_and_unbindable() {
        let yes = |_: u16| true;
        assert_eq!(first_free_port(8000, &[], &yes), Some(8000));
        assert_eq!(first_free_port(8000, &[8000, 8001], &yes), Some(8002));
        let odd_only = |p: u16| p % 2 == 1;
        assert_eq!(first_free_port(8000, &[8001], &odd_only), Some(8003));
        assert_eq!(first_free_port(u16::MAX, &[u16::MAX], &yes), None);
    }
}
