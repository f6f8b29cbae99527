//! Host side: launch, list and stop aim-engine containers through the Docker Engine API
//! (bollard), never the docker CLI.
//!
//! Pure core: `naming` (container names), `alloc` (which GPUs running containers hold, which
//! a new launch gets), `prepare` (a launch's GPUs, name and settings from what was read),
//! `spec` (the container to create), `view` (list rows, uptime, status text, the dry run's
//! `docker run` line). IO shell: `docker` (the bollard client, error translation, /status
//! polling), `local` (what a launch reads from this machine besides Docker), `launch` (a
//! launch prepared: plan on the free GPUs, allocation, name, spec; `LaunchRequest` is what
//! it is asked). `commands::host` calls them in order and prints.

pub mod alloc;
pub mod docker;
pub mod launch;
pub mod local;
pub mod naming;
pub mod prepare;
pub mod spec;
pub mod view;

pub use alloc::{Holder, NotEnoughGpus, allocate, free_topology};
pub use naming::{container_name, model_slug, unique_name};
pub use spec::{ChosenGpu, ContainerSpec, SpecInput, label};
