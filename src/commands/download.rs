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

fn usage(msg: impl Into<String>) -> anyhow::Error {
    ExitError::new(USAGE, msg).into()
}

/// The options for `repo` from the command line and the environment.
pub fn options(a: &DownloadArgs) -> anyhow::Result<Options> {
    let Some(model) = a.model() else {
        return Err(usage(
            "no model given: pass MODEL (e.g. `Qwen/Qwen3-32B`), --model-id, or set AIM_MODEL_ID or AIM_ID",
        ));
    };
    let repo = match parse_model_id(model).map_err(|e| usage(e.to_string()))? {
        ModelRef::Hub(id) => id,
        ModelRef::Local(p) => {
            return Err(usage(format!(
                "`download` fetches a Hugging Face id (`org/name`); {} is a local folder, which needs no download",
                p.display()
            )));
        }
    };
    let rev =
        download::check_revision("--revision", &a.revision).map_err(|e| usage(e.to_string()))?;
    if download::offline(&process_env) {
        return Err(ExitError::new(
            MODEL_UNAVAILABLE,
            "HF_HUB_OFFLINE is set, so the Hub may not be asked; unset it to download",
        )
        .into());
    }
    let mut opts =
        Options::from_env(&repo, &rev, &process_env).map_err(|e| usage(e.to_string()))?;
    opts.parallel = a.parallel.into();
    opts.tries = a.tries;
    opts.backoff = a.retry_initial;
    opts.stall_timeout = a.stall_timeout;
    Ok(opts)
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
