//! A launch prepared from what was read: the IO shell around `prepare`. It plans on the free
//! GPUs (`plan::resolve`), allocates, names, reads what the spec needs from this machine
//! (`local`: card nodes, device groups, the Hugging Face cache folder) and builds the spec.
//! `commands::host` reads Docker first, calls [`prepare()`] and prints.

use super::alloc::{Holder, NotEnoughGpus};
use super::local::{self, LocalError};
use super::prepare;
use super::spec::{self, CONTAINER_PORT, ContainerSpec, SpecInput};
use crate::exit::{FAILURE, NO_FIT};
use crate::gpu::Topology;
use crate::plan::resolve::{self, ResolveError};
use crate::plan::{Request, Sources};
use std::path::{Path, PathBuf};

/// What `launch` was asked for (the library's form of its flags).
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// Where the recipes are read from (the extra folders are mounted into the container).
    pub sources: Sources,
    /// What to serve, and how.
    pub request: Request,
    /// The image to run.
    pub image: String,
    /// The container name asked for (`--name`).
    pub name: Option<String>,
    /// The host Hugging Face cache to mount (`--hf-cache`).
    pub hf_cache: Option<PathBuf>,
}

/// What was read from the host and Docker before a launch is prepared.
pub struct Seen<'a> {
    /// The host root (absolute).
    pub root: &'a Path,
    pub topo: &'a Topology,
    /// The running aim-engine containers and the GPUs they hold.
    pub holders: &'a [Holder],
    /// Container names in use.
    pub taken_names: &'a [String],
}

/// What [`prepare()`] decided, besides the spec.
pub struct Prepared {
    pub spec: ContainerSpec,
    pub ordinals: Vec<u32>,
    pub port: u16,
    pub recipe_id: String,
    pub served_model: String,
}

/// Why a launch could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    NotEnoughGpus(NotEnoughGpus),
    /// Planning on the free GPUs failed; `note` says who holds the others, if anyone.
    #[error("{source}{}", .note.as_deref().unwrap_or_default())]
    Plan {
        source: Box<ResolveError>,
        note: Option<String>,
    },
    #[error("the plan has no launch")]
    NoLaunch,
    #[error("no free host port from 8000 up; pass --port")]
    NoPort,
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl LaunchError {
    /// The exit status this failure ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::NotEnoughGpus(_) | LaunchError::NoLaunch => NO_FIT,
            LaunchError::Plan { source, .. } => source.exit_code(),
            LaunchError::NoPort => FAILURE,
            LaunchError::Local(e) => e.exit_code(),
        }
    }
}

/// Plan, allocation, naming and the spec, from what was read from the host and Docker.
pub fn prepare(
    req: &LaunchRequest,
    model: &str,
    seen: &Seen<'_>,
    pick_port: &dyn Fn() -> Option<u16>,
) -> Result<Prepared, LaunchError> {
    let Seen {
        root,
        topo,
        holders,
        taken_names,
    } = *seen;
    let free = prepare::free_gpus(topo, holders, prepare::wanted_gpus(&req.request))
        .map_err(LaunchError::NotEnoughGpus)?;
    // The same selection as `plan`, on the free GPUs only; the container's own public port
    // is what the plan is for.
    let planned =
        resolve::plan_on(&free, &req.sources, &req.request, CONTAINER_PORT).map_err(|source| {
            LaunchError::Plan {
                source: Box::new(source),
                note: prepare::held_note(topo, holders, free.gpus.len()),
            }
        })?;
    let Some(chosen_launch) = planned.plan.launches.first() else {
        return Err(LaunchError::NoLaunch);
    };
    let (ordinals, chosen) =
        prepare::choose(topo, holders, chosen_launch).map_err(LaunchError::NotEnoughGpus)?;
    let gpus = prepare::chosen_gpus(&chosen, &|minor| local::card_node(root, minor));
    let name = prepare::container_name(req.name.as_deref(), model, chosen_launch, taken_names);
    let Some(port) = pick_port() else {
        return Err(LaunchError::NoPort);
    };
    let device_gids = if spec::is_real_root(root) {
        local::device_gids(&gpus)
    } else {
        Vec::new()
    };
    let host_groups = local::host_groups();
    let recipes_dirs: Vec<PathBuf> = req
        .sources
        .recipes_dir
        .iter()
        .filter(|d| d.is_dir())
        .filter_map(|d| local::absolute(d).ok())
        .collect();
    let input = SpecInput {
        name,
        image: req.image.clone(),
        model: model.to_string(),
        launch: chosen_launch,
        gpus,
        host_port: port,
        root: root.to_path_buf(),
        hf_cache: local::hf_cache(req.hf_cache.as_deref())?,
        groups: spec::groups(&host_groups, &device_gids),
        pass_through: prepare::pass_through(&|k| std::env::var(k).ok()),
        extra_env: prepare::explicit_settings(&req.request),
        recipes_dirs,
        local_model: local::local_model_dir(model),
    };
    Ok(Prepared {
        spec: spec::build(&input),
        ordinals,
        port,
        recipe_id: chosen_launch.recipe_id.clone(),
        served_model: chosen_launch.served_model_name.clone(),
    })
}
