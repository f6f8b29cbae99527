//! `aim-engine download MODEL [--revision R]` (alias `download-to-cache`): fetches what an
//! engine needs into the Hugging Face cache and prints the snapshot folder.
//!
//! Where: `$AIM_CACHE_PATH/hub` when set, else huggingface_hub's cache root (HF_HUB_CACHE,
//! `$HF_HOME/hub`, ...). From: `HF_ENDPOINT` (default https://huggingface.co), with
//! `HF_TOKEN` as the bearer token when set.

use crate::cli::DownloadArgs;
use crate::download::{self, Options, Progress};
use crate::exit::{ExitError, MODEL_UNAVAILABLE, OK, USAGE};
use crate::gpu::detect::human_bytes;
use crate::model::{ModelRef, cache::process_env, parse_model_id};
use std::io::IsTerminal;
use std::sync::Arc;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

fn usage(msg: impl Into<String>) -> anyhow::Error {
    ExitError::new(USAGE, msg).into()
}

fn set(k: &str) -> Option<String> {
    process_env(k).filter(|v| !v.trim().is_empty())
}

/// The options for `repo` from the command line and the environment.
pub fn options(a: &DownloadArgs) -> anyhow::Result<Options> {
    let repo = match parse_model_id(&a.model).map_err(|e| usage(e.to_string()))? {
        ModelRef::Hub(id) => id,
        ModelRef::Local(p) => {
            return Err(usage(format!(
                "`download` fetches a Hugging Face id (`org/name`); {} is a local folder, which needs no download",
                p.display()
            )));
        }
    };
    let rev = a.revision.trim();
    if !crate::download::store::safe_file_name(rev) || rev.starts_with('.') {
        return Err(usage(format!(
            "--revision `{}` is not a branch, tag or commit name; use e.g. `main` or a 40-hex commit",
            a.revision
        )));
    }
    if set("HF_HUB_OFFLINE").is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false")) {
        return Err(ExitError::new(
            MODEL_UNAVAILABLE,
            "HF_HUB_OFFLINE is set, so the Hub may not be asked; unset it to download",
        )
        .into());
    }
    let hub_root = download::write_root(&process_env).ok_or_else(|| {
        usage("no cache folder: set HF_HOME (or AIM_CACHE_PATH, or HOME)".to_string())
    })?;
    let free_bytes_override = match set("AIM_TEST_FREE_BYTES") {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            usage(format!(
                "AIM_TEST_FREE_BYTES `{v}` is not a number of bytes (it is a test seam; unset it)"
            ))
        })?),
    };
    Ok(Options {
        repo,
        revision: rev.to_string(),
        hub_root,
        endpoint: set("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        token: set("HF_TOKEN").or_else(|| set("HUGGING_FACE_HUB_TOKEN")),
        parallel: a.parallel.into(),
        tries: a.tries,
        backoff: a.retry_initial,
        stall_timeout: a.stall_timeout,
        free_bytes_override,
    })
}

pub fn run(a: &DownloadArgs) -> anyhow::Result<u8> {
    let opts = options(a)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let terminal = std::io::stderr().is_terminal();
    let got = rt.block_on(async {
        let progress = Arc::new(Progress::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let reporter = tokio::spawn(download::progress::report(
            progress.clone(),
            opts.repo.clone(),
            a.progress_interval,
            terminal,
            stop.clone(),
        ));
        let got = download::download(&opts, progress).await;
        stop.cancel();
        let _ = reporter.await;
        got
    });
    let d = got.map_err(|e| ExitError::new(e.exit_code(), e.to_string()))?;
    tracing::info!(
        "{} at {} (commit {}) is in the cache: {} files, {}, {} fetched now",
        opts.repo,
        opts.revision,
        d.commit,
        d.files,
        human_bytes(d.bytes_total),
        human_bytes(d.bytes_fetched)
    );
    println!("{}", d.snapshot.display());
    Ok(OK)
}
