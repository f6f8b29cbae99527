//! A launch prepared as plain data: which free GPUs the container gets, its name, the
//! settings passed into it, and where the host's Hugging Face cache is. Pure: the IO shell
//! (`commands::host`) reads the host (sysfs card nodes, device group ids, `/etc/group`, the
//! environment) and Docker first, plans on the free GPUs, and hands the results in.

use super::alloc::{self, Holder, NotEnoughGpus, format_list};
use super::naming;
use super::spec::ChosenGpu;
use crate::gpu::{Gpu, Topology};
use crate::launch::Launch;
use crate::plan::Request;
use crate::types::Choice;
use std::path::{Path, PathBuf};

/// How many GPUs a launch asks for before planning (`auto` = 1: the plan may take more).
pub fn wanted_gpus(select: &Request) -> u32 {
    match select.gpu_count {
        Some(Choice::Is(n)) => n,
        _ => 1,
    }
}

/// The GPUs a launch plans on: those no running container holds, when there are `wanted`.
pub fn free_gpus(
    topo: &Topology,
    holders: &[Holder],
    wanted: u32,
) -> Result<Topology, NotEnoughGpus> {
    let free = alloc::free_topology(topo, holders);
    if free.gpus.is_empty() || (wanted as usize) > free.gpus.len() {
        return Err(alloc::not_enough(topo, holders, wanted));
    }
    Ok(free)
}

/// What to add to a planning failure on the free GPUs: how many were free and who holds the
/// others. None when no container holds any.
pub fn held_note(topo: &Topology, holders: &[Holder], free: usize) -> Option<String> {
    let held = alloc::holders_on(topo, holders);
    if held.is_empty() {
        return None;
    }
    let who: Vec<String> = held
        .iter()
        .map(|(n, gpus)| format!("{n} holds GPU {}", format_list(gpus)))
        .collect();
    Some(format!(
        " (planned on the {free} free GPU(s) only: {})",
        who.join(", ")
    ))
}

/// The free GPUs `launch` gets (host ordinals ascending), with their topology entries.
pub fn choose<'a>(
    topo: &'a Topology,
    holders: &[Holder],
    launch: &Launch,
) -> Result<(Vec<u32>, Vec<&'a Gpu>), NotEnoughGpus> {
    let ordinals = alloc::allocate(topo, holders, launch.gpu_count)?;
    let chosen = ordinals
        .iter()
        .filter_map(|o| topo.gpus.iter().find(|g| g.index == *o))
        .collect();
    Ok((ordinals, chosen))
}

/// The chosen GPUs as the spec needs them; `card_of` names the DRM card node of a render
/// minor (read from sysfs by the caller).
pub fn chosen_gpus(chosen: &[&Gpu], card_of: &dyn Fn(u32) -> Option<String>) -> Vec<ChosenGpu> {
    chosen
        .iter()
        .map(|g| ChosenGpu {
            ordinal: g.index,
            render_minor: g.render_minor,
            card: card_of(g.render_minor),
            pci: g.pci.clone(),
        })
        .collect()
}

/// `--name`, else a name from the model and the launch, made unique among `taken`.
pub fn container_name(
    requested: Option<&str>,
    model: &str,
    launch: &Launch,
    taken: &[String],
) -> String {
    match requested {
        Some(n) => n.to_string(),
        None => naming::unique_name(
            &naming::container_name(model, launch.gpu_count, launch.precision, launch.engine),
            taken,
        ),
    }
}

/// The AIM_* settings the user gave explicitly, passed into the container so that it plans
/// as the host did.
pub fn explicit_settings(select: &Request) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(m) = select.metric.get() {
        env.push(("AIM_METRIC".to_string(), m.as_str().to_string()));
    }
    if let Some(m) = &select.gpu_model {
        env.push(("AIM_GPU_MODEL".to_string(), m.clone()));
    }
    if !select.engine_flags.is_empty() {
        // The flags after `--` travel merged into the JSON (they win over it).
        if let Ok((args, _)) = crate::plan::resolve::user_engine_args(select) {
            let map: serde_json::Map<String, serde_json::Value> = args.into_iter().collect();
            env.push((
                "AIM_ENGINE_ARGS".to_string(),
                serde_json::Value::Object(map).to_string(),
            ));
        }
    } else if let Some(j) = &select.engine_args {
        env.push(("AIM_ENGINE_ARGS".to_string(), j.clone()));
    }
    if let Some(n) = &select.served_name {
        env.push(("AIM_CUSTOM_MODEL_NAME".to_string(), n.clone()));
    }
    if let Some(p) = select.engine_port {
        env.push(("AIM_ENGINE_PORT".to_string(), p.to_string()));
    }
    if let Some(r) = &select.revision {
        env.push(("AIM_MODEL_REVISION".to_string(), r.clone()));
    }
    if select.size_from_hub {
        env.push(("AIM_SIZE_FROM_HUB".to_string(), "1".to_string()));
    }
    env
}

/// The pass-through variables (`spec::PASS_THROUGH`) that `env` has, in that order.
pub fn pass_through(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    super::spec::PASS_THROUGH
        .iter()
        .filter_map(|k| env(k).map(|v| (k.to_string(), v)))
        .collect()
}

/// The host's Hugging Face cache: `--hf-cache` / AIM_HOST_HF_CACHE, else $HF_HOME, else
/// $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface (huggingface_hub's own order).
/// None when not even HOME is set. The result may be relative (to the working directory).
pub fn hf_cache_dir(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(p) = flag {
        Some(p.to_path_buf())
    } else if let Some(h) = env("HF_HOME") {
        Some(PathBuf::from(h))
    } else if let Some(x) = env("XDG_CACHE_HOME") {
        Some(PathBuf::from(x).join("huggingface"))
    } else {
        env("HOME").map(|home| PathBuf::from(home).join(".cache/huggingface"))
    }
}

/// Whether MODEL is written as a local path (absolute, `./` or `../`) rather than a hub id.
pub fn looks_local(model: &str) -> bool {
    model.starts_with('/') || model.starts_with("./") || model.starts_with("../")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;

    fn eight() -> Topology {
        Topology {
            gpus: (0..8).map(Gpu::mi300x).collect(),
            ..Default::default()
        }
    }

    fn holder(name: &str, ordinals: &[u32]) -> Holder {
        Holder {
            name: name.into(),
            ordinals: ordinals.to_vec(),
            render_minors: Vec::new(),
        }
    }

    fn launch(gpu_count: u32) -> Launch {
        Launch {
            gpu_count,
            ..crate::host::spec::tests::launch()
        }
    }

    fn select() -> Request {
        Request {
            model: Some("Qwen/Qwen3-8B".into()),
            ..Request::default()
        }
    }

    #[test]
    fn free_gpus_leave_out_the_held_ones_or_say_who_holds_them() {
        let t = eight();
        let held = [holder("a", &[0, 1, 2, 3]), holder("b", &[4, 5])];
        let free = free_gpus(&t, &held, 2).unwrap();
        assert_eq!(
            free.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![6, 7]
        );
        let e = free_gpus(&t, &held, 4).unwrap_err();
        assert_eq!(e.wanted, 4);
        assert_eq!(e.free, vec![6, 7]);
        assert_eq!(
            held_note(&t, &held, 2).as_deref(),
            Some(" (planned on the 2 free GPU(s) only: a holds GPU 0,1,2,3, b holds GPU 4,5)")
        );
        assert_eq!(held_note(&t, &[], 8), None);
    }

    #[test]
    fn choose_takes_free_gpus_for_the_launch() {
        let t = eight();
        let held = [holder("a", &[0, 1])];
        let (ordinals, chosen) = choose(&t, &held, &launch(2)).unwrap();
        assert_eq!(ordinals, vec![2, 3]);
        assert_eq!(chosen.iter().map(|g| g.index).collect::<Vec<_>>(), ordinals);
        let gpus = chosen_gpus(&chosen, &|minor| {
            (minor == 144).then(|| "card2".to_string())
        });
        assert_eq!(gpus[0].render_minor, 144);
        assert_eq!(gpus[0].card.as_deref(), Some("card2"));
        assert_eq!(gpus[1].card, None);
        assert!(choose(&t, &held, &launch(8)).is_err());
    }

    #[test]
    fn names_are_requested_or_unique() {
        let l = launch(2);
        assert_eq!(
            container_name(Some("mine"), "Qwen/Qwen3-8B", &l, &[]),
            "mine"
        );
        let first = container_name(None, "Qwen/Qwen3-8B", &l, &[]);
        let second = container_name(None, "Qwen/Qwen3-8B", &l, std::slice::from_ref(&first));
        assert_ne!(first, second);
        assert!(second.starts_with(&first), "{second}");
    }

    #[test]
    fn explicit_settings_and_pass_through() {
        assert!(explicit_settings(&select()).is_empty());
        let s = Request {
            metric: Choice::Is(Metric::Throughput),
            gpu_model: Some("MI300X".into()),
            engine_args: Some(r#"{"max-model-len": 8192}"#.into()),
            engine_port: Some(9001),
            revision: Some("v2".into()),
            size_from_hub: true,
            ..select()
        };
        let settings = explicit_settings(&s);
        let pairs: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("AIM_METRIC", "throughput"),
                ("AIM_GPU_MODEL", "MI300X"),
                ("AIM_ENGINE_ARGS", r#"{"max-model-len": 8192}"#),
                ("AIM_ENGINE_PORT", "9001"),
                ("AIM_MODEL_REVISION", "v2"),
                ("AIM_SIZE_FROM_HUB", "1")
            ]
        );
        assert_eq!(wanted_gpus(&select()), 1);
        assert_eq!(
            wanted_gpus(&Request {
                gpu_count: Some(Choice::Is(4)),
                ..select()
            }),
            4
        );
        let env = |k: &str| match k {
            "HF_TOKEN" => Some("secret".to_string()),
            "HF_ENDPOINT" => Some("https://mirror".to_string()),
            _ => None,
        };
        assert_eq!(
            pass_through(&env),
            vec![
                ("HF_TOKEN".to_string(), "secret".to_string()),
                ("HF_ENDPOINT".to_string(), "https://mirror".to_string())
            ]
        );
    }

    #[test]
    fn hf_cache_follows_huggingface_hub_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let all = env(&[
            ("HF_HOME", "/hf"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            hf_cache_dir(Some(Path::new("/flag")), &all),
            Some("/flag".into())
        );
        assert_eq!(hf_cache_dir(None, &all), Some("/hf".into()));
        let xdg = env(&[("HF_HOME", " "), ("XDG_CACHE_HOME", "/xdg"), ("HOME", "/h")]);
        assert_eq!(hf_cache_dir(None, &xdg), Some("/xdg/huggingface".into()));
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            hf_cache_dir(None, &home),
            Some("/home/u/.cache/huggingface".into())
        );
        assert_eq!(hf_cache_dir(None, &env(&[])), None);
        assert!(looks_local("/models/x") && looks_local("./x") && looks_local("../x"));
        assert!(!looks_local("Qwen/Qwen3-8B"));
    }
}
