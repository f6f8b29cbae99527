//! The model cache manager: fetches what an engine needs of a Hub repo into the standard
//! Hugging Face cache, so that the engine then runs with `HF_HUB_OFFLINE=1`.
//!
//! In order: the listing (`/api/models/{repo}/revision/{rev}?blobs=true`: the commit, every
//! file with its size and LFS sha256), the weight index when there is one (it names the
//! shards), the selection (`select`), the disk check (bytes still missing against the free
//! space), then the files, a few at a time. A file already in `blobs/` is not fetched again;
//! a `blobs/<x>.incomplete` continues with a Range request; each file is checked against its
//! size and, for LFS files, its sha256 before it becomes a blob. A blob is written only under
//! huggingface_hub's lock file for it (`.locks/models--org--name/<blob>.lock`, flock). 429 waits as Retry-After
//! says; connection errors, 5xx and stalls retry with backoff from where the bytes stopped.
//!
//! IO shell: `hub` (HTTP), `store` (the cache layout), `fetch` (one file: lock, resume,
//! checks, retries); `select` and `progress` formatting are pure.

pub mod error;
mod fetch;
pub mod hub;
pub mod progress;
pub mod select;
pub mod store;

pub use error::DownloadError;
pub use progress::Progress;

use fetch::fetch_file;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hub::{Failure, Hub};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::RepoDir;

/// What to download, where, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub repo: String,
    pub revision: String,
    /// The hub cache root (`.../hub`), where `models--org--name` goes.
    pub hub_root: PathBuf,
    pub endpoint: String,
    pub token: Option<String>,
    /// Files fetched at once.
    pub parallel: usize,
    /// Tries per request before giving up (progress made resets the count).
    pub tries: u32,
    /// First retry delay; doubles up to 30 s.
    pub backoff: Duration,
    /// A body that sends nothing for this long is cut and resumed.
    pub stall_timeout: Duration,
    /// Test seam (`AIM_TEST_FREE_BYTES`): the free space to assume instead of asking the
    /// filesystem.
    pub free_bytes_override: Option<u64>,
}

/// What was downloaded.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub commit: String,
    pub snapshot: PathBuf,
    pub files: usize,
    pub bytes_total: u64,
    /// Bytes that came over the network this time (0 when the cache was complete).
    pub bytes_fetched: u64,
}

/// One file to fetch.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    size: u64,
    /// The blob's name: the LFS sha256, else the git blob id.
    blob: String,
    sha256: Option<String>,
    /// Its bytes on disk when the progress totals were taken.
    counted: u64,
}

struct Ctx<'a> {
    opts: &'a Options,
    hub: Hub,
    repo: RepoDir,
    commit: String,
    progress: Arc<Progress>,
}

/// Bytes held in memory before they go to the `.incomplete` file (what a kill can lose).
const WRITE_BUFFER: usize = 128 << 10;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest Retry-After we honour as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Why the environment does not allow a download (the message says what to change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("no cache folder: set HF_HOME (or AIM_CACHE_PATH, or HOME)")]
    NoCacheFolder,
    #[error("AIM_TEST_FREE_BYTES `{value}` is not a number of bytes (it is a test seam; unset it)")]
    FreeBytes { value: String },
    #[error("{var} `{value}` is not a number from {min} to {max}; fix or unset it")]
    Number {
        var: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
    /// `why`: what `types::parse_duration` says.
    #[error("{var}: {why}")]
    Duration { var: &'static str, why: String },
}

/// Why a `--revision` cannot be used: it becomes a path under `refs/` in the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{flag} `{revision}` is not a branch, tag or commit name; use e.g. `main` or a 40-hex commit"
)]
pub struct RevisionError {
    /// The flag (and variable) it came from.
    pub flag: &'static str,
    pub revision: String,
}

impl Options {
    /// Options for `repo` at `revision` from the environment: HF_ENDPOINT, HF_TOKEN (or
    /// HUGGING_FACE_HUB_TOKEN, or the saved `$HF_HOME/token`), the cache root (`write_root`), the `download` command's
    /// AIM_DOWNLOAD_{PARALLEL,TRIES,RETRY_INITIAL,STALL_TIMEOUT} (its defaults when unset) and
    /// the test seam AIM_TEST_FREE_BYTES.
    pub fn from_env(
        repo: &str,
        revision: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Options, EnvError> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let hub_root = write_root(env).ok_or(EnvError::NoCacheFolder)?;
        let free_bytes_override = match set("AIM_TEST_FREE_BYTES") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| EnvError::FreeBytes { value: v.clone() })?,
            ),
        };
        let number = |k: &'static str, default: u64, min: u64, max: u64| match set(k) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(EnvError::Number {
                    var: k,
                    value: v,
                    min,
                    max,
                }),
            },
        };
        let duration = |k: &'static str, default: Duration| match set(k) {
            None => Ok(default),
            Some(v) => {
                crate::types::parse_duration(&v).map_err(|why| EnvError::Duration { var: k, why })
            }
        };
        Ok(Options {
            parallel: number("AIM_DOWNLOAD_PARALLEL", 4, 1, 32)? as usize,
            tries: number("AIM_DOWNLOAD_TRIES", 6, 1, u32::MAX.into())? as u32,
            backoff: duration("AIM_DOWNLOAD_RETRY_INITIAL", Duration::from_secs(1))?,
            stall_timeout: duration("AIM_DOWNLOAD_STALL_TIMEOUT", Duration::from_secs(60))?,
            repo: repo.to_string(),
            revision: revision.to_string(),
            hub_root,
            endpoint: set("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token: set("HF_TOKEN")
                .or_else(|| set("HUGGING_FACE_HUB_TOKEN"))
                .or_else(|| saved_token(env)),
            free_bytes_override,
        })
    }
}

/// The token `huggingface-cli login` saved: `$HF_TOKEN_PATH`, else `$HF_HOME/token`, else
/// `~/.cache/huggingface/token`.
fn saved_token(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
    let path = set("HF_TOKEN_PATH")
        .or_else(|| set("HF_HOME").map(|h| h.join("token")))
        .or_else(|| set("HOME").map(|h| h.join(".cache/huggingface/token")))?;
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A `--revision` (branch, tag or commit; `refs/pr/1` too), trimmed, or what is wrong with it:
/// it becomes a path under `refs/` in the cache, so it must be a safe relative path.
pub fn check_revision(flag: &'static str, revision: &str) -> Result<String, RevisionError> {
    let rev = revision.trim();
    if store::safe_file_name(rev) && !rev.starts_with('.') {
        Ok(rev.to_string())
    } else {
        Err(RevisionError {
            flag,
            revision: revision.to_string(),
        })
    }
}

/// Whether HF_HUB_OFFLINE (huggingface_hub's switch) forbids asking the Hub.
pub fn offline(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| {
        let v = v.trim();
        !v.is_empty()
            && v != "0"
            && !v.eq_ignore_ascii_case("false")
            && !v.eq_ignore_ascii_case("no")
    })
}

/// The hub cache root a download writes to: `$AIM_CACHE_PATH/hub` when set (as AIM's
/// images do), else huggingface_hub's own root (HF_HUB_CACHE, $HF_HOME/hub, ...).
pub fn write_root(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(aim) = env("AIM_CACHE_PATH").filter(|v| !v.trim().is_empty()) {
        return Some(PathBuf::from(aim).join("hub"));
    }
    crate::model::cache::hub_cache_roots(env).into_iter().next()
}

enum Step {
    Retry(Failure),
    Fatal(DownloadError),
}

impl Options {
    fn delay(&self, try_no: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << try_no.saturating_sub(1).min(16))
            .min(MAX_BACKOFF)
    }
}

/// Waits before try `try_no + 1` after `f`; Err when the tries are used up.
async fn back_off(opts: &Options, url: &str, try_no: u32, f: Failure) -> Result<(), DownloadError> {
    match f {
        Failure::Throttled(after) => {
            if try_no >= opts.tries {
                return Err(DownloadError::Throttled {
                    url: url.to_string(),
                    tries: try_no,
                });
            }
            let wait = after
                .unwrap_or_else(|| opts.delay(try_no))
                .min(MAX_RETRY_AFTER);
            tracing::warn!(
                "the Hub is throttling requests (429 Too Many Requests) for {url}; waiting {}s{} before try {} of {}",
                wait.as_secs_f64(),
                if after.is_some() {
                    " as its Retry-After asks"
                } else {
                    ""
                },
                try_no + 1,
                opts.tries
            );
            tokio::time::sleep(wait).await;
        }
        Failure::Transient(why) => {
            if try_no >= opts.tries {
                return Err(DownloadError::Unreachable {
                    url: url.to_string(),
                    tries: try_no,
                    why,
                });
            }
            let wait = opts.delay(try_no);
            tracing::warn!(
                "{url}: {why}; trying again in {:.1}s (try {} of {})",
                wait.as_secs_f64(),
                try_no + 1,
                opts.tries
            );
            tokio::time::sleep(wait).await;
        }
        Failure::Status { status, .. } => {
            return Err(DownloadError::BadListing {
                url: url.to_string(),
                why: format!("it answered {status}"),
            });
        }
    }
    Ok(())
}

/// The error for a status that will not change, for the listing (`file` None) or a file.
fn status_error(
    ctx_hub: &Hub,
    opts: &Options,
    url: &str,
    file: Option<&str>,
    status: u16,
    code: &str,
) -> Step {
    let repo = opts.repo.clone();
    let page = ctx_hub.page(&opts.repo);
    Step::Fatal(match (status, file) {
        (401 | 403, _) => DownloadError::Unauthorized {
            repo,
            page,
            status,
            token_set: ctx_hub.token_set(),
        },
        (404, Some(f)) => DownloadError::FileNotFound {
            repo,
            file: f.to_string(),
            url: url.to_string(),
        },
        (404, None) if code == "RevisionNotFound" => DownloadError::RevisionNotFound {
            repo,
            revision: opts.revision.clone(),
            page,
        },
        (404, None) if code == "RepoNotFound" || opts.revision == "main" => {
            DownloadError::RepoNotFound { repo, page }
        }
        (404, None) => DownloadError::NotFound {
            repo,
            revision: opts.revision.clone(),
            page,
        },
        _ => DownloadError::BadListing {
            url: url.to_string(),
            why: format!("it answered {status}"),
        },
    })
}

async fn listing(hub: &Hub, opts: &Options) -> Result<hub::Listing, DownloadError> {
    let url = hub.listing_url(&opts.repo, &opts.revision);
    let mut try_no = 0;
    loop {
        try_no += 1;
        let failure = match hub.get(&url, 0).await {
            Ok(resp) => match resp.into_body().collect().await {
                Ok(body) => {
                    return hub::parse_listing(&body.to_bytes()).map_err(|why| {
                        DownloadError::BadListing {
                            url: url.clone(),
                            why: why.to_string(),
                        }
                    });
                }
                Err(e) => Failure::Transient(e.to_string()),
            },
            Err(Failure::Status { status, error_code }) => {
                match status_error(hub, opts, &url, None, status, &error_code) {
                    Step::Fatal(e) => return Err(e),
                    Step::Retry(f) => f,
                }
            }
            Err(f) => f,
        };
        back_off(opts, &url, try_no, failure).await?;
    }
}

/// The files of the listing to fetch, each with its size and blob name.
fn entries(
    listing: &hub::Listing,
    wanted: &[String],
    url: &str,
) -> Result<Vec<Entry>, DownloadError> {
    let bad = |why: String| DownloadError::BadListing {
        url: url.to_string(),
        why,
    };
    wanted
        .iter()
        .map(|name| {
            let s = listing
                .siblings
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| bad(format!("`{name}` is not listed")))?;
            let size = s.size.ok_or_else(|| {
                bad(format!(
                    "`{name}` has no size (the endpoint must answer `?blobs=true` as the Hub does)"
                ))
            })?;
            let blob = s
                .sha256
                .clone()
                .or_else(|| s.blob_id.clone())
                .ok_or_else(|| bad(format!("`{name}` has neither an LFS sha256 nor a blobId")))?;
            if !store::safe_blob_name(&blob) {
                return Err(bad(format!(
                    "`{name}` has the blob id `{blob}`, not a hex digest"
                )));
            }
            Ok(Entry {
                name: name.clone(),
                size,
                blob: blob.to_ascii_lowercase(),
                sha256: s.sha256.as_ref().map(|h| h.to_ascii_lowercase()),
                counted: 0,
            })
        })
        .collect()
}

/// A small file of the repo (an index) into memory, with the listing's retries.
async fn small_file(
    hub: &Hub,
    opts: &Options,
    commit: &str,
    name: &str,
) -> Result<String, DownloadError> {
    const MAX: usize = 64 << 20;
    let url = hub.file_url(&opts.repo, commit, name);
    let mut try_no = 0;
    loop {
        try_no += 1;
        let failure = match hub.get(&url, 0).await {
            Ok(resp) => match http_body_util::Limited::new(resp.into_body(), MAX)
                .collect()
                .await
            {
                Ok(body) => {
                    return String::from_utf8(body.to_bytes().to_vec()).map_err(|_| {
                        DownloadError::BadListing {
                            url: url.clone(),
                            why: format!("`{name}` is not UTF-8 text"),
                        }
                    });
                }
                Err(e) => Failure::Transient(e.to_string()),
            },
            Err(Failure::Status { status, error_code }) => {
                match status_error(hub, opts, &url, Some(name), status, &error_code) {
                    Step::Fatal(e) => return Err(e),
                    Step::Retry(f) => f,
                }
            }
            Err(f) => f,
        };
        back_off(opts, &url, try_no, failure).await?;
    }
}

/// The weights a download of `opts.repo` at `opts.revision` would fetch, from the Hub's
/// listing (and the weight index, read into memory): their total size, for the planner when
/// the model is not in the cache. Nothing is written. None when the repo has no weights in a
/// format an engine loads.
pub async fn hub_weights(
    opts: &Options,
) -> Result<Option<crate::model::HubWeights>, DownloadError> {
    let hub = Hub::new(&opts.endpoint, opts.token.clone())?;
    let listing = listing(&hub, opts).await?;
    let url = hub.listing_url(&opts.repo, &opts.revision);
    let names: Vec<&str> = listing.siblings.iter().map(|s| s.name.as_str()).collect();
    let index = match select::index_to_read(&names) {
        Some(idx) => Some(small_file(&hub, opts, &listing.commit, idx).await?),
        None => None,
    };
    let (format, files) = select::weight_files(&names, index.as_deref());
    if files.is_empty() {
        return Ok(None);
    }
    let entries = entries(&listing, &files, &url)?;
    Ok(Some(crate::model::HubWeights {
        bytes: entries.iter().map(|e| e.size).sum(),
        files: entries.len(),
        format: format.name(),
    }))
}

/// [`hub_weights`] on a thread and runtime of its own, so that the caller's thread (a plain
/// command, or `serve`'s runtime, which forks engines and keeps no runtime threads of its
/// own) is left as it was; `done` gets the answer on that thread.
pub fn hub_weights_on_thread(
    opts: Options,
    done: impl FnOnce(Result<Option<crate::model::HubWeights>, DownloadError>) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hub-sizes".into())
        .spawn(move || {
            let got = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let got = rt.block_on(hub_weights(&opts));
                    rt.shutdown_timeout(Duration::from_secs(5));
                    got
                }
                Err(e) => Err(DownloadError::Io {
                    path: opts.hub_root.clone(),
                    source: e,
                }),
            };
            done(got);
        })
}

/// Downloads `opts.repo` at `opts.revision` into the cache, with `progress` kept current.
pub async fn download(
    opts: &Options,
    progress: Arc<Progress>,
) -> Result<Downloaded, DownloadError> {
    let hub = Hub::new(&opts.endpoint, opts.token.clone())?;
    let listing = listing(&hub, opts).await?;
    let url = hub.listing_url(&opts.repo, &opts.revision);
    if let Some(bad) = listing
        .siblings
        .iter()
        .find(|s| !store::safe_file_name(&s.name))
    {
        return Err(DownloadError::BadListing {
            url,
            why: format!("the file name `{}` is not a safe relative path", bad.name),
        });
    }
    let repo = RepoDir::new(&opts.hub_root, &opts.repo);
    let ctx = Ctx {
        opts,
        hub,
        repo,
        commit: listing.commit.clone(),
        progress,
    };
    let names: Vec<&str> = listing.siblings.iter().map(|s| s.name.as_str()).collect();
    // The index (small) first: it names the shards to fetch.
    let index = match select::index_to_read(&names) {
        Some(idx) => {
            let e = entries(&listing, &[idx.to_string()], &url)?;
            fetch_file(&ctx, &e[0], false).await?;
            std::fs::read_to_string(ctx.repo.blob(&e[0].blob)).ok()
        }
        None => None,
    };
    let wanted = select::select(&names, index.as_deref());
    let mut files = entries(&listing, &wanted, &url)?;
    for f in &mut files {
        f.counted = ctx.repo.have(&f.blob, f.size);
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    let have: u64 = files.iter().map(|f| f.counted).sum();
    let missing = total - have;
    // The disk check, before any weights are written.
    let (free, at) = match opts.free_bytes_override {
        Some(f) => (f, ctx.repo.dir.clone()),
        None => store::free_bytes(&ctx.repo.dir)?,
    };
    if missing > free {
        return Err(DownloadError::NoSpace {
            repo: opts.repo.clone(),
            need: missing,
            free,
            path: at,
        });
    }
    use std::sync::atomic::Ordering::Relaxed;
    ctx.progress.bytes_total.store(total, Relaxed);
    ctx.progress.files_total.store(files.len() as u64, Relaxed);
    ctx.progress.bytes_done.store(have, Relaxed);
    if missing > 0 {
        tracing::info!(
            "downloading {} at {} (commit {}): {} files, {} of {} still to fetch, into {}",
            opts.repo,
            opts.revision,
            ctx.commit,
            files.len(),
            crate::gpu::detect::human_bytes(missing),
            crate::gpu::detect::human_bytes(total),
            ctx.repo.dir.display()
        );
    }
    futures_util::stream::iter(files.iter().map(|f| fetch_file(&ctx, f, true)))
        .buffer_unordered(opts.parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    ctx.repo.write_ref(&opts.revision, &ctx.commit)?;
    Ok(Downloaded {
        snapshot: ctx.repo.snapshot(&ctx.commit),
        commit: ctx.commit,
        files: files.len(),
        bytes_total: total,
        bytes_fetched: missing,
    })
}
