//! What can stop a download, as data; `Display` says what to do about it and `exit_code`
//! maps each class to its exit status.

use crate::exit;
use crate::gpu::detect::human_bytes;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "HF_ENDPOINT `{0}` is not an http(s) URL with a host; set it like `https://huggingface.co` or unset it"
    )]
    BadEndpoint(String),
    #[error("{}", unauthorized(.repo, .page, *.status, *.token_set))]
    Unauthorized {
        repo: String,
        /// The model page, `{endpoint}/{repo}`.
        page: String,
        status: u16,
        token_set: bool,
    },
    #[error(
        "{repo} was not found at {page} (404): the model id is wrong (it is `org/name`, as on the Hub)"
    )]
    RepoNotFound { repo: String, page: String },
    #[error(
        "revision `{revision}` of {repo} was not found (404): the --revision is wrong; use a branch, tag or commit listed on {page}"
    )]
    RevisionNotFound {
        repo: String,
        revision: String,
        page: String,
    },
    #[error(
        "{repo} at revision `{revision}` was not found at {page} (404): the model id or the revision is wrong"
    )]
    NotFound {
        repo: String,
        revision: String,
        page: String,
    },
    #[error(
        "`{file}` of {repo} is listed but was not found (404) at {url}: the repo changed during the download; run it again"
    )]
    FileNotFound {
        repo: String,
        file: String,
        url: String,
    },
    #[error(
        "the Hub kept throttling (429 Too Many Requests) after {}, waiting each time as its Retry-After asked, for {url}: try again later, or set HF_TOKEN (authenticated requests get higher limits)",
        tries_text(*.tries)
    )]
    Throttled { url: String, tries: u32 },
    #[error(
        "{url} could not be fetched after {}: {why}; check the network and HF_ENDPOINT",
        tries_text(*.tries)
    )]
    Unreachable {
        url: String,
        tries: u32,
        why: String,
    },
    #[error(
        "not enough disk space for {repo}: {} ({need} bytes) still to download, {} ({free} bytes) free on the filesystem of {}; free space there, or point AIM_CACHE_PATH or HF_HOME at a larger disk",
        human_bytes(*.need), human_bytes(*.free), .path.display()
    )]
    NoSpace {
        repo: String,
        need: u64,
        free: u64,
        path: PathBuf,
    },
    #[error(
        "`{file}` of {repo} did not match the Hub's {what} twice (expected {expected}, got {got}); the partial file was removed; run the download again"
    )]
    Corrupt {
        repo: String,
        file: String,
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("the Hub's answer for {url} is not usable: {why}")]
    BadListing { url: String, why: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn tries_text(n: u32) -> String {
    if n == 1 {
        "1 try".into()
    } else {
        format!("{n} tries")
    }
}

fn unauthorized(repo: &str, page: &str, status: u16, token_set: bool) -> String {
    match (status, token_set) {
        (401, false) => format!(
            "{repo} refused access (401 Unauthorized) without a token: it is gated or private (or the id is wrong; the Hub answers 401 for unknown ids without a token). Accept its terms on {page} and set HF_TOKEN to a read token of that account"
        ),
        (401, true) => format!(
            "{repo} refused the token (HF_TOKEN, or the one saved in $HF_HOME/token) (401 Unauthorized): it is invalid or expired, or the model id is wrong. Create a read token in your Hub settings, set HF_TOKEN to it, and check the id on {page}"
        ),
        _ => format!(
            "{repo} is not open to the token (HF_TOKEN, or the one saved in $HF_HOME/token) ({status} Forbidden): the model is gated. Request access on {page} with the account of that token (and give the token read access to gated repos)"
        ),
    }
}

impl DownloadError {
    pub fn exit_code(&self) -> u8 {
        use DownloadError::*;
        match self {
            BadEndpoint(_) => exit::USAGE,
            Unauthorized { .. }
            | RepoNotFound { .. }
            | RevisionNotFound { .. }
            | NotFound { .. } => exit::MODEL_UNAVAILABLE,
            NoSpace { .. } => exit::NO_SPACE,
            Throttled { .. } | Unreachable { .. } | Corrupt { .. } | FileNotFound { .. } => {
                exit::DOWNLOAD_FAILED
            }
            BadListing { .. } | Io { .. } => exit::FAILURE,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DownloadError {
        let path = path.into();
        move |source| DownloadError::Io { path, source }
    }
}
