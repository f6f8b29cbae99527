//! The one integration-test binary (ripgrep style): every suite is a module here, and all of
//! them run the real `aim-engine` binary.

mod support;

mod chaos;
mod deadlines;
mod download;
mod fake_engine;
mod fast_lane;
mod fd_limit;
mod gpu_fault;
mod gpus;
mod hang;
mod host;
mod http;
mod logpath;
mod multinode;
mod notify;
mod plan;
mod props;
mod real_engine;
mod restart_load;
mod supervise;
mod target_props;
