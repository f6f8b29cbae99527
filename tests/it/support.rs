//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `aim-engine` binary under test.
pub fn aim_engine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aim-engine"))
}

/// The project root (fixtures, recipes).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
