//! Exit statuses of the `aim-engine` process: one table, mapped at one place (`main`).
//!
//! When the engine ends on its own and we stop, its own status is ours (128+N when it was
//! killed by signal N). Our own failures use codes an engine does not normally produce.

/// Everything went as asked.
pub const OK: u8 = 0;
/// A generic internal failure (IO error, bug). The message says what.
pub const FAILURE: u8 = 1;
/// Bad command line, bad environment variable, invalid model id or malformed recipe.
pub const USAGE: u8 = 64;
/// A model the engine cannot get: not found, gated without a token, or offline without a cache.
pub const MODEL_UNAVAILABLE: u8 = 66;
/// No usable GPU, or no recipe (and no generated default) fits this host.
pub const NO_FIT: u8 = 69;
/// The model does not fit on the disk that would hold its cache (`download`,
/// `serve --download`).
pub const NO_SPACE: u8 = 73;
/// A download that may succeed later: the Hub kept throttling (429), could not be reached, or
/// sent a file that did not match its checksum, after every retry.
pub const DOWNLOAD_FAILED: u8 = 75;
/// The engine kept failing: every restart and every fallback recipe was used up.
pub const GAVE_UP: u8 = 70;
/// A multi-node group lost a node (or never formed): this node ended so that its launcher
/// (LeaderWorkerSet, Compose, systemd) starts the group again.
pub const GROUP_LOST: u8 = 76;
/// The engine's launcher exists but cannot be executed (permissions, bad interpreter).
pub const ENGINE_NOT_EXECUTABLE: u8 = 126;
/// The engine's launcher was not found (AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND / PATH).
pub const ENGINE_NOT_FOUND: u8 = 127;

/// The status a shell reports for a process killed by `signal`.
pub fn for_signal(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// An error that carries the exit status it should end the process with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

impl ExitError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        ExitError {
            code,
            message: message.into(),
        }
    }
}

/// The exit status for an error chain: the first `ExitError` in it, else FAILURE.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<ExitError>())
        .map(|e| e.code)
        .unwrap_or(FAILURE)
}
