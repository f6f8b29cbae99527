//! Host side: launch, list and stop aim-engine containers through the Docker Engine API
//! (bollard), never the docker CLI.
//!
//! Pure core: `naming` (container names), `alloc` (which GPUs running containers hold, which
//! a new launch gets), `spec` (the container to create), `view` (list rows, uptime, status
//! text). IO shell: `docker` (the bollard client, error translation, /status polling).
//! `commands::host` strings them together.

pub mod alloc;
pub mod docker;
pub mod naming;
pub mod spec;
pub mod view;

pub use alloc::{Holder, NotEnoughGpus, allocate, free_topology};
pub use naming::{container_name, model_slug, unique_name};
pub use spec::{ChosenGpu, ContainerSpec, SpecInput, label};
