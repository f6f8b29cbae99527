//! `serve`: the runtime, the public port, the plan, then the supervisor (the thin IO shell
//! around `machine`, in `supervisor` and `attempt`).
//!
//! One current-thread tokio runtime runs everything: signal streams, the reaper, the public
//! port, readiness and liveness probes, and this loop, which also spawns every engine (one
//! long-lived thread context; no PR_SET_PDEATHSIG: a watchdog in the engine's process group
//! stops it if we die, see `spawn`).
//!
//! Exit status (see also `exit.rs`):
//! - A stop we were asked for (SIGTERM/SIGINT/SIGQUIT): the status of the engine attempt that
//!   stop ended (its exit code, or 128+N when it died by signal N; 137 when it had to be
//!   killed after the grace). When no engine was running at that moment (backoff, VRAM
//!   wait), 0.
//! - An engine exit we did not ask for is never our exit status, even with code 0: it is a
//!   failure the policy acts on. The run only ends on its own with MODEL_UNAVAILABLE (66),
//!   GAVE_UP (70, after every restart and fallback, with a summary of every attempt), or
//!   ENGINE_NOT_FOUND (127) / ENGINE_NOT_EXECUTABLE (126) when no launch's launcher can run.
//! - `--download`: a download that fails ends the run before any engine with its own status
//!   (66 for 401/403/404, NO_SPACE 73, DOWNLOAD_FAILED 75; see `download::DownloadError`).

use super::fetch::{Fetched, Sized};
use super::machine::PolicyConfig;
use super::reaper::Reaper;
use super::signals;
use super::supervisor::Supervisor;
use crate::exit::{self, ExitError};
use crate::notify::Notifier;
use crate::plan::{Request, Sources};
use crate::shared::Shared;
use crate::status::Status;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `serve` was asked for: the library's form of `serve`'s flags (built from them in
/// `commands::serve`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the GPUs and the recipes are read from.
    pub sources: Sources,
    /// What to serve, and how.
    pub request: Request,
    /// The public port (health, status, metrics and the forwarded OpenAI API).
    pub port: u16,
    /// The address the public port binds.
    pub host: String,
    /// Required as `Authorization: Bearer KEY` on /v1/*.
    pub api_key: Option<String>,
    /// Cap on concurrent connections to the public port.
    pub max_connections: usize,
    /// The public port's per-connection limits.
    pub limits: crate::http::Limits,
    /// Fetch the model into the Hugging Face cache first (`--download`).
    pub download: bool,
    pub stop_timeout: Duration,
    pub startup_timeout: Duration,
    pub progress_interval: Duration,
    pub liveness_interval: Duration,
    pub liveness_failures: u32,
    pub liveness_timeout: Duration,
    /// The hang rules (`supervise::progress`); a zero window is off.
    pub hang: super::progress::Rules,
    pub hang_sample_interval: Duration,
    pub idle_probe_interval: Duration,
    pub idle_probe_timeout: Duration,
    pub restart_budget: u32,
    pub restart_window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub vram_wait_timeout: Duration,
    pub skip_test_inference: bool,
    /// A group's leader's public port (None: `port`).
    pub leader_port: Option<u16>,
    /// A group's timings (`group::roster`).
    pub group_timing: crate::group::roster::Timing,
}

/// Timings and switches of the loop (from `ServeOptions`).
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub stop_timeout: Duration,
    pub startup_timeout: Duration,
    pub liveness_interval: Duration,
    pub liveness_failures: u32,
    pub liveness_timeout: Duration,
    /// The hang rules (`supervise::progress`); a zero window is off.
    pub hang: super::progress::Rules,
    pub hang_sample_interval: Duration,
    pub idle_probe_interval: Duration,
    pub idle_probe_timeout: Duration,
    pub vram_wait_timeout: Duration,
    pub skip_test_inference: bool,
    pub policy: PolicyConfig,
    /// Readiness polling period while loading.
    pub poll_interval: Duration,
    /// Period of the progress line while loading.
    pub progress_interval: Duration,
}

impl Config {
    pub fn from_options(o: &ServeOptions) -> Self {
        Config {
            root: o.sources.root.clone(),
            stop_timeout: o.stop_timeout,
            startup_timeout: o.startup_timeout,
            liveness_interval: o.liveness_interval,
            liveness_failures: o.liveness_failures.max(1),
            liveness_timeout: o.liveness_timeout,
            hang: o.hang,
            hang_sample_interval: o.hang_sample_interval.max(Duration::from_millis(100)),
            idle_probe_interval: o.idle_probe_interval,
            idle_probe_timeout: o.idle_probe_timeout,
            vram_wait_timeout: o.vram_wait_timeout,
            skip_test_inference: o.skip_test_inference,
            policy: PolicyConfig {
                backoff: super::backoff::Backoff {
                    initial: o.backoff_initial,
                    max: o.backoff_max.max(o.backoff_initial),
                },
                restart_budget: o.restart_budget,
                restart_window: o.restart_window,
                max_port_retries: 5,
            },
            poll_interval: Duration::from_millis(200),
            // tokio intervals need a non-zero period.
            progress_interval: o.progress_interval.max(Duration::from_millis(100)),
        }
    }
}

/// Why `serve` ended with an error rather than a status of its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The runtime, the signal handlers or the reaper could not be set up.
    #[error(transparent)]
    Setup(#[from] std::io::Error),
    /// A failure with the exit status it ends the process with.
    #[error(transparent)]
    Exit(#[from] ExitError),
}

/// `aim-engine serve`: the whole command, from the runtime up.
pub fn serve(o: ServeOptions) -> Result<u8, ServeError> {
    become_subreaper();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve_async(o))
}

/// As PID 1 orphans come to us anyway; otherwise (systemd, `docker run --init`, Compose
/// `init: true`) ask the kernel to reparent our descendants' orphans to us.
fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        tracing::warn!(
            "not PID 1 and cannot become a child subreaper ({}): orphaned engine workers \
             will not be reaped by us",
            std::io::Error::last_os_error()
        );
    }
}

async fn serve_async(o: ServeOptions) -> Result<u8, ServeError> {
    // Handlers first: as PID 1 an unhandled signal is dropped.
    let signals = signals::listen()?;
    let reaper = Arc::new(Reaper::new());
    tokio::spawn(reaper.clone().start()?);

    let (listener, url) = bind_public(&o).await?;
    let model = o.request.model.clone().unwrap_or_default();
    let engine_port = o
        .request
        .engine_port
        .unwrap_or_else(|| o.port.saturating_add(1));
    let live = o.request.group.clone().map(|g| {
        let leader_port = o.leader_port.unwrap_or(o.port);
        crate::group::live::Live::new(g, o.group_timing, leader_port)
    });
    let shared = Arc::new(Shared::new(&model, engine_port).with_group(live));
    let reporter = shared
        .group
        .as_ref()
        .filter(|g| g.role() == crate::group::Role::Worker)
        .map(|g| super::group::Reporter::new(g, o.api_key.clone()));
    if let Some(r) = &reporter {
        r.clone().spawn(shared.clone());
    }
    let notifier = Arc::new(Notifier::from_env());
    spawn_watchdog_pings(&notifier);
    let public = tokio::spawn(crate::http::serve_public_with(
        listener,
        shared.clone(),
        crate::http::PublicConfig {
            api_key: o.api_key.clone(),
            max_connections: o.max_connections,
            drain_grace: o.stop_timeout,
        },
        o.limits.clone(),
    ));

    let cfg = Config::from_options(&o);
    let log_every = cfg.progress_interval.min(Duration::from_secs(5));
    let mut sup = Supervisor::new(shared.clone(), reaper, signals, notifier, cfg);
    let (offline_cache, hub) = match download_phase(&o, &mut sup, log_every).await {
        BeforePlan::Plan { cache, hub } => (cache, hub),
        BeforePlan::Stopped(code) => {
            let _ = tokio::time::timeout(o.stop_timeout, public).await;
            return Ok(code);
        }
        BeforePlan::Failed(e) => {
            shared.stopping.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), public).await;
            return Err(e.into());
        }
    };
    let result = match crate::plan::resolve::resolve(&o.sources, &o.request, o.port, hub.as_ref()) {
        Ok(mut plan) => {
            tracing::info!("{}", crate::logging::first_line(&url, &plan));
            if let Some(root) = &offline_cache {
                for l in &mut plan.launches {
                    l.env.insert("HF_HUB_OFFLINE".into(), "1".into());
                    l.env
                        .insert("HF_HUB_CACHE".into(), root.display().to_string());
                }
            }
            sup.supervise(plan).await
        }
        Err(e) => {
            sup.fatal(&e.to_string());
            Err(ExitError::from(e))
        }
    };
    // A worker's last word to its leader: it failed or was stopped (the leader need not wait
    // for the silence to know).
    if let Some(r) = &reporter {
        r.report_once(&shared, Duration::from_secs(2)).await;
    }
    // The port drains (if not already) and closes before we exit.
    shared.stopping.cancel();
    let _ = tokio::time::timeout(o.stop_timeout.max(Duration::from_secs(1)), public).await;
    Ok(result?)
}

/// The public port's listener, and its URL for the first log line.
async fn bind_public(o: &ServeOptions) -> Result<(tokio::net::TcpListener, String), ExitError> {
    let addr = format!("{}:{}", o.host, o.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        ExitError::new(
            exit::FAILURE,
            format!(
                "cannot listen on {addr}: {e}; choose another port with --port / AIM_PORT \
                 or another address with --host / AIM_HOST"
            ),
        )
    })?;
    // The address really bound (`--port 0` picks one), for the first log line.
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_or(addr.clone(), |l| l.to_string())
    );
    Ok((listener, url))
}

/// WATCHDOG=1 from a task on this current-thread runtime: a ping proves that the one
/// thread running the supervisor, the reaper and the public port is not blocked. It does
/// not prove the supervisor's own loop makes progress (that loop may rightly sleep for a
/// whole backoff); its deadlines (startup, stop grace, liveness) cover that.
fn spawn_watchdog_pings(notifier: &Arc<Notifier>) {
    if let Some(every) = notifier.watchdog_ping_interval() {
        let n = notifier.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                n.watchdog();
            }
        });
    }
}

/// How the phase before the plan (sizing from the Hub, `--download`) ended.
enum BeforePlan {
    /// Go on and plan: with the hub root the engine then reads offline, if it downloaded, and
    /// the weights from the Hub's listing when the cache lacks the model.
    Plan {
        cache: Option<PathBuf>,
        hub: Option<crate::model::HubWeights>,
    },
    /// A stop request came first: end with this status.
    Stopped(u8),
    /// The run is marked failed and ends with this error.
    Failed(ExitError),
}

/// `serve`'s phase before the plan: the Hub's sizes of a model the cache lacks (`--download`
/// reads them anyway; `--size-from-hub` asks for them without downloading), a plan from them
/// before a byte of weights is fetched, then the download.
async fn download_phase(o: &ServeOptions, sup: &mut Supervisor, log_every: Duration) -> BeforePlan {
    let download = match download_options(o).transpose() {
        Ok(d) => d,
        Err(e) => {
            sup.fatal(&e.message);
            return BeforePlan::Failed(e);
        }
    };
    // A complete copy in the cache: no network at all, the engine reads it offline (the plan
    // made next checks the command line, as for any run).
    if let Some(d) = &download
        && let Some(root) = super::fetch::cached(d)
    {
        tracing::info!(
            "{} at {} is complete in the cache under {}: no download, the engine runs with HF_HUB_OFFLINE=1",
            d.repo,
            d.revision,
            root.display()
        );
        return BeforePlan::Plan {
            cache: Some(root),
            hub: None,
        };
    }
    // A usage error (a bad engine flag, model id or recipe) stops the run before anything is
    // asked of the Hub or fetched: no download for a command line that cannot start.
    if download.is_some()
        && let Err(e) = crate::plan::resolve::resolve(&o.sources, &o.request, o.port, None)
        && e.exit_code() == exit::USAGE
    {
        let e = ExitError::from(e);
        sup.fatal(&e.message);
        return BeforePlan::Failed(e);
    }
    let hub = match sizing_options_for(o, download.as_ref()) {
        None => None,
        Some((repo, opts)) => match sup.hub_sizes_first(opts).await {
            Sized::Got(got) => crate::plan::resolve::sized(&repo, got),
            Sized::Stopped(code) => return BeforePlan::Stopped(code),
        },
    };
    // Before a byte of weights is fetched: a model that cannot run here is refused now.
    if let (Some(_), Some(w)) = (&download, &hub) {
        match crate::plan::resolve::resolve(&o.sources, &o.request, o.port, Some(w)) {
            Ok(plan) => tracing::info!(
                "planned before the download, from the Hub's file listing: {}",
                plan.reasons.join("; ")
            ),
            Err(e) => {
                let msg = format!(
                    "{e} (planned before the download, from the Hub's file listing; nothing was downloaded)"
                );
                sup.fatal(&msg);
                return BeforePlan::Failed(ExitError::new(e.exit_code(), msg));
            }
        }
    }
    let cache = match download {
        None => None,
        Some(opts) => match sup.download_first(opts, log_every).await {
            Fetched::Done(root) => Some(root),
            Fetched::Stopped(code) => return BeforePlan::Stopped(code),
            Fetched::Failed(e) => return BeforePlan::Failed(e),
        },
    };
    BeforePlan::Plan { cache, hub }
}

/// The download `serve --download` does first, if any: only for a Hub id, and not when
/// HF_HUB_OFFLINE forbids the Hub (the engine then reads the cache as it is).
fn download_options(o: &ServeOptions) -> Option<Result<crate::download::Options, ExitError>> {
    use crate::model::{ModelRef, cache::process_env, parse_model_id};
    if !o.download || crate::download::offline(&process_env) {
        return None;
    }
    let model = o.request.model.as_deref().unwrap_or_default();
    // An invalid id is left to the planner, which says what is wrong with it.
    let Ok(ModelRef::Hub(repo)) = parse_model_id(model) else {
        return None;
    };
    Some(
        crate::plan::resolve::revision_of(&o.request)
            .map_err(ExitError::from)
            .and_then(|rev| {
                let rev = rev.unwrap_or_else(|| "main".into());
                crate::download::Options::from_env(&repo, &rev, &process_env)
                    .map_err(|e| ExitError::new(exit::USAGE, e.to_string()))
            }),
    )
}

/// What to size from the Hub's listing before planning, if anything: the model's repo when
/// it is not in the cache and `--download` or `--size-from-hub` asks (never with
/// HF_HUB_OFFLINE), with the options to ask by (the download's, when there is one).
fn sizing_options_for(
    o: &ServeOptions,
    download: Option<&crate::download::Options>,
) -> Option<(String, crate::download::Options)> {
    use crate::model::cache::process_env;
    if !(download.is_some() || o.request.size_from_hub) || crate::download::offline(&process_env) {
        return None;
    }
    let repo = crate::plan::resolve::uncached_hub_repo(&o.request)?;
    let opts = match download {
        Some(d) => {
            let mut o = d.clone();
            o.tries = o.tries.min(3);
            o
        }
        None => match crate::plan::resolve::sizing_options(&repo, &o.request) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(
                    "cannot size {repo} from the Hub's listing ({e}): it is sized from its name"
                );
                return None;
            }
        },
    };
    Some((repo, opts))
}

/// A free loopback port (the kernel's choice, released at once for the engine to bind).
pub(super) fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `argv` with `--port` set to `port` (replaced where present, else appended).
pub fn with_port(argv: &[String], port: u16) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 2);
    let mut found = false;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--port" && i + 1 < argv.len() {
            out.push(a.clone());
            out.push(port.to_string());
            found = true;
            i += 2;
            continue;
        }
        if a.starts_with("--port=") {
            out.push(format!("--port={port}"));
            found = true;
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    if !found {
        out.push("--port".into());
        out.push(port.to_string());
    }
    out
}

/// What the user must fix when the model cannot be had, from the last failure.
pub fn model_unavailable_message(s: &Status) -> String {
    let last = s.failures.last();
    let class = last.map(|f| f.class.as_str()).unwrap_or("model_not_found");
    let fix = match class {
        "gated" => {
            "the model is gated: accept its license on huggingface.co and pass a token \
                    with access (HF_TOKEN)"
        }
        "offline" => {
            "the model is not in the local cache and the hub cannot be reached: \
                      mount a cache that has it (HF_HOME), or allow network access (unset \
                      HF_HUB_OFFLINE)"
        }
        _ => {
            "the model was not found: check the model id (org/name) or the local path, and \
              for a private repository pass a token with access (HF_TOKEN)"
        }
    };
    let evidence = last
        .and_then(|f| f.log_tail.last())
        .map(|l| format!("\n  engine said: {l}"))
        .unwrap_or_default();
    format!(
        "model `{}` is unavailable ({class}): {fix}{evidence}",
        s.model
    )
}

/// The summary printed when the chain is exhausted: every attempt and what it led to.
pub fn give_up_summary(s: &Status) -> String {
    let mut out = format!(
        "gave up on `{}` after {} attempt(s); every restart and fallback recipe failed:",
        s.model,
        s.failures.len()
    );
    for f in &s.failures {
        out.push_str(&format!(
            "\n  attempt {}: recipe {}: {} ({}) -> {}",
            f.attempt, f.recipe_id, f.exit, f.class, f.action
        ));
        if let Some(l) = f.log_tail.last() {
            out.push_str(&format!("\n      last line: {l}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::AttemptFailure;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn port_rewrite() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["vllm", "serve", "m", "--port", "8001"],
                &["vllm", "serve", "m", "--port", "9"],
            ),
            (&["x", "--port=8001", "--y"], &["x", "--port=9", "--y"]),
            (
                &["x", "--host", "127.0.0.1"],
                &["x", "--host", "127.0.0.1", "--port", "9"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(with_port(&v(input), 9), v(want));
        }
    }

    #[test]
    fn messages_name_the_fix_and_every_attempt() {
        let mut s = Status::new("org/m");
        let f = |attempt, class: &str, action: &str| AttemptFailure {
            attempt,
            recipe_id: format!("r{attempt}"),
            class: class.into(),
            exit: "exit 1".into(),
            action: action.into(),
            at_s: 0.0,
            log_tail: vec![format!("line {attempt}")],
        };
        s.failures = vec![f(1, "oom", "next_recipe"), f(2, "unknown", "give_up")];
        let sum = give_up_summary(&s);
        assert!(sum.contains("after 2 attempt(s)"), "{sum}");
        assert!(
            sum.contains("attempt 1: recipe r1: exit 1 (oom) -> next_recipe"),
            "{sum}"
        );
        assert!(
            sum.contains("attempt 2: recipe r2: exit 1 (unknown) -> give_up"),
            "{sum}"
        );
        assert!(sum.contains("last line: line 2"), "{sum}");

        for (class, needle) in [
            ("gated", "HF_TOKEN"),
            ("offline", "HF_HUB_OFFLINE"),
            ("model_not_found", "check the model id"),
        ] {
            s.failures = vec![f(1, class, "model_unavailable")];
            let m = model_unavailable_message(&s);
            assert!(m.contains(needle) && m.contains("org/m"), "{class}: {m}");
        }
    }
}
