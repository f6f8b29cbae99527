//! `serve --download`: the model is fetched into the cache in its own phase (`downloading`,
//! with `/status`'s `download` object) before the plan and the first attempt, so the startup
//! timeout never counts it. The download runs on a thread of its own with its own runtime
//! (hashing and file writes stay off the supervisor's thread); this side waits for it while
//! signals are handled, and copies its counters into the status every second.

use super::machine::Event;
use super::supervisor::{EndsOn, Supervisor, Waited};
use crate::download::{self, DownloadError, Options, Progress};
use crate::exit::{self, ExitError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the download phase ended.
pub enum Fetched {
    /// The snapshot is complete in the cache under this hub root.
    Done(PathBuf),
    /// A stop request came first: end with this status.
    Stopped(u8),
    /// The download failed (the run is marked failed).
    Failed(ExitError),
}

/// The hub cache root that holds a complete snapshot of `opts.repo` at `opts.revision`: its
/// config.json and every shard its weight index names (links that resolve). Where the
/// download writes is looked at first, then huggingface_hub's own roots.
pub(super) fn cached(opts: &Options) -> Option<PathBuf> {
    use crate::download::select::{SAFETENSORS_INDEX, shards_of_index};
    use crate::model::cache::{hub_cache_roots, process_env, snapshot_dir_at};
    let complete = |snap: &std::path::Path| {
        snap.join("config.json").is_file()
            && match std::fs::read_to_string(snap.join(SAFETENSORS_INDEX)) {
                Err(_) => true,
                Ok(index) => shards_of_index(&index)
                    .is_some_and(|shards| shards.iter().all(|s| snap.join(s).is_file())),
            }
    };
    std::iter::once(opts.hub_root.clone())
        .chain(hub_cache_roots(&process_env))
        .find(|root| {
            snapshot_dir_at(root, &opts.repo, &opts.revision).is_some_and(|s| complete(&s))
        })
}

/// The download's counters into `/status` and `/metrics`.
fn copy_counts(shared: &crate::shared::Shared, c: download::progress::Counts) {
    let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    shared.metrics.download_bytes_done.set(g(c.bytes_done));
    shared.metrics.download_bytes_total.set(g(c.bytes_total));
    shared
        .metrics
        .download_rate_bytes_per_second
        .set(g(c.rate_bytes_per_s));
    shared.status.send_modify(|s| s.download = Some(c));
}

/// How asking the Hub for the model's sizes ended.
pub enum Sized {
    /// The answer (`plan::resolve::sized` turns it into the weights or a log line).
    Got(Result<Option<crate::model::HubWeights>, DownloadError>),
    /// A stop request came first: end with this status.
    Stopped(u8),
}

/// What the download thread answers.
type Answer = Result<download::Downloaded, DownloadError>;

/// The download on a thread and runtime of its own; its answer comes through `tx`.
fn spawn_download(
    opts: &Options,
    progress: &Arc<Progress>,
    tx: tokio::sync::oneshot::Sender<Answer>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (opts, progress) = (opts.clone(), progress.clone());
    std::thread::Builder::new()
        .name("download".into())
        .spawn(move || {
            let got = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("download")
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let got = rt.block_on(download::download(&opts, progress));
                    // No runtime threads of ours may be left when engines are forked.
                    rt.shutdown_timeout(Duration::from_secs(5));
                    got
                }
                Err(e) => Err(DownloadError::Io {
                    path: opts.hub_root.clone(),
                    source: e,
                }),
            };
            let _ = tx.send(got);
        })
}

impl Supervisor {
    /// Downloads `opts.repo` with progress in the log every `log_every` and in `/status`.
    /// The weights of `opts.repo` from the Hub's listing (`download::hub_weights`, on a
    /// thread of its own), waited for while signals are handled.
    pub(super) async fn hub_sizes_first(&mut self, opts: Options) -> Sized {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = download::hub_weights_on_thread(opts, move |got| {
            let _ = tx.send(got);
        });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                return Sized::Got(Err(DownloadError::Io {
                    path: PathBuf::new(),
                    source: e,
                }));
            }
        };
        match self
            .await_handling_signals(rx, None, None, EndsOn::AnyStop)
            .await
        {
            Waited::Done(got) => {
                let _ = thread.join();
                Sized::Got(got.unwrap_or_else(|_| {
                    Err(DownloadError::Io {
                        path: PathBuf::new(),
                        source: std::io::Error::other("the sizing thread ended without an answer"),
                    })
                }))
            }
            // The thread is left behind: the process ends.
            Waited::Stop | Waited::Deadline => Sized::Stopped(self.finish_idle_stop().await),
        }
    }

    /// Downloads `opts.repo` with progress in the log every `log_every` and in `/status`.
    pub(super) async fn download_first(&mut self, opts: Options, log_every: Duration) -> Fetched {
        self.event(Event::Downloading, &format!("downloading {}", opts.repo));
        let progress = Arc::new(Progress::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = match spawn_download(&opts, &progress, tx) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("cannot start the download thread: {e}");
                self.fatal(&msg);
                return Fetched::Failed(ExitError::new(exit::FAILURE, msg));
            }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let reporter = tokio::spawn(download::progress::report(
            progress.clone(),
            opts.repo.clone(),
            log_every,
            false,
            stop.clone(),
        ));
        let shared = self.shared.clone();
        let p = progress.clone();
        let copier = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let c = p.counts();
                copy_counts(&shared, c);
            }
        });
        let waited = self
            .await_handling_signals(rx, None, None, EndsOn::AnyStop)
            .await;
        stop.cancel();
        copier.abort();
        let _ = reporter.await;
        copy_counts(&self.shared, progress.counts());
        match waited {
            Waited::Done(Ok(answer)) => {
                let _ = thread.join();
                self.downloaded(answer, opts)
            }
            Waited::Done(Err(_)) => {
                let msg = "the download thread ended without an answer".to_string();
                self.fatal(&msg);
                Fetched::Failed(ExitError::new(exit::FAILURE, msg))
            }
            // The thread is left behind: the process ends, and what it wrote resumes later.
            Waited::Stop | Waited::Deadline => Fetched::Stopped(self.finish_idle_stop().await),
        }
    }

    /// What the download thread's answer means for the run.
    fn downloaded(&mut self, answer: Answer, opts: Options) -> Fetched {
        match answer {
            Ok(d) => {
                tracing::info!(
                    "{} (commit {}) is in the cache: {} files, {} fetched now; the engine runs with HF_HUB_OFFLINE=1",
                    opts.repo,
                    d.commit,
                    d.files,
                    crate::gpu::detect::human_bytes(d.bytes_fetched)
                );
                Fetched::Done(opts.hub_root)
            }
            Err(e @ DownloadError::Unreachable { .. }) if cached(&opts).is_some() => {
                let root = cached(&opts).unwrap_or_default();
                tracing::warn!(
                    "{e}; {} is in the cache under {}: serving it offline",
                    opts.repo,
                    root.display()
                );
                Fetched::Done(root)
            }
            Err(e) => {
                let msg = match e {
                    DownloadError::Unreachable { .. } => format!(
                        "{e}; and the cache has no complete copy of {} to serve offline: allow access to HF_ENDPOINT, or mount a cache that has the model",
                        opts.repo
                    ),
                    _ => e.to_string(),
                };
                self.fatal(&msg);
                Fetched::Failed(ExitError::new(e.exit_code(), msg))
            }
        }
    }
}
