//! aim-engine: picks the right vLLM/SGLang recipe for the AMD GPUs it finds, supervises the
//! engine as PID 1 (or a subreaper), and owns the public port.
//!
//! The crate is a pure core (`gpu::parse`, `recipe`, `model`, `engine`, `plan`,
//! `supervise::machine`) wrapped by a thin IO shell (sysfs reads, processes, sockets).
//! See ARCHITECTURE.md for the map and the invariants.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cli;
pub mod commands;
pub mod download;
pub mod engine;
pub mod exit;
pub mod gpu;
pub mod group;
pub mod host;
pub mod http;
pub mod launch;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod plan;
pub mod recipe;
pub mod shared;
pub mod status;
pub mod supervise;
pub mod types;
