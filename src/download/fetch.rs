//! One file of a repo into `blobs/`: under its lock, into `blobs/<x>.incomplete` (continued
//! with Range requests), checked against its size and sha256, then renamed to the blob and
//! linked from the snapshot. `fetch_file` holds the steps; `fetch_checked` is the retry loop
//! and `fetch_range` one request.

use super::hub::Failure;
use super::{Ctx, DownloadError, Entry, Step, WRITE_BUFFER, back_off, status_error, store};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// The `.incomplete` file being written: its bytes so far and their running sha256 (None when
/// the file has no LFS sha256 to check).
struct Partial {
    path: PathBuf,
    w: tokio::io::BufWriter<tokio::fs::File>,
    have: u64,
    hasher: Option<Sha256>,
}

impl Partial {
    /// Empties the file, to fetch it from the start.
    async fn restart(&mut self, progress: &dyn Fn(u64, bool)) -> Result<(), std::io::Error> {
        self.w.get_mut().set_len(0).await?;
        progress(self.have, false);
        self.have = 0;
        self.hasher = self.hasher.as_ref().map(|_| Sha256::new());
        Ok(())
    }
}

/// The sha256 of the first bytes of a partial file (to continue hashing where it stopped).
async fn hash_prefix(path: PathBuf) -> Result<Sha256, DownloadError> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&path).map_err(DownloadError::io(&path))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(DownloadError::io(&path))?;
            if n == 0 {
                return Ok(h);
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| DownloadError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blob's lock, waited for while another download (ours or huggingface_hub's) holds it.
async fn lock_blob(
    ctx: &Ctx<'_>,
    e: &Entry,
) -> Result<nix::fcntl::Flock<std::fs::File>, DownloadError> {
    let path = ctx.repo.lock_file(&e.blob);
    let name = e.name.clone();
    let at = path.clone();
    tokio::task::spawn_blocking(move || {
        store::lock(&path, || {
            tracing::info!(
                "`{name}`: another download holds {}; waiting for it",
                at.display()
            )
        })
    })
    .await
    .map_err(|err| DownloadError::Io {
        path: ctx.repo.lock_file(&e.blob),
        source: std::io::Error::other(err),
    })?
}

/// The blob's `.incomplete` file opened to append (emptied when it is longer than the file),
/// with the sha256 of what it holds.
async fn open_partial(
    ctx: &Ctx<'_>,
    e: &Entry,
    progress: &dyn Fn(u64, bool),
) -> Result<Partial, DownloadError> {
    let blobs = ctx.repo.dir.join("blobs");
    tokio::fs::create_dir_all(&blobs)
        .await
        .map_err(DownloadError::io(&blobs))?;
    let path = ctx.repo.incomplete(&e.blob);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(DownloadError::io(&path))?;
    let mut have = file.metadata().map_err(DownloadError::io(&path))?.len();
    let mut w = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
    if have > e.size {
        w.get_mut()
            .set_len(0)
            .await
            .map_err(DownloadError::io(&path))?;
        progress(e.size, false);
        have = 0;
    }
    let hasher = match (&e.sha256, have) {
        (None, _) => None,
        (Some(_), 0) => Some(Sha256::new()),
        (Some(_), _) => Some(hash_prefix(path.clone()).await?),
    };
    Ok(Partial {
        path,
        w,
        have,
        hasher,
    })
}

/// One file into `blobs/` and its snapshot link; `counted`: its bytes already on disk are in
/// the progress (so progress moves only by what arrives).
pub(super) async fn fetch_file(
    ctx: &Ctx<'_>,
    e: &Entry,
    counted: bool,
) -> Result<(), DownloadError> {
    let blob = ctx.repo.blob(&e.blob);
    let complete = || std::fs::metadata(&blob).is_ok_and(|m| m.len() == e.size);
    // Another download (ours or huggingface_hub's) of this blob goes first.
    let _lock = if complete() {
        None
    } else {
        Some(lock_blob(ctx, e).await?)
    };
    // What the other download did meanwhile counts as done.
    if counted {
        let now = ctx.repo.have(&e.blob, e.size);
        if now > e.counted {
            ctx.progress.add(now - e.counted);
        } else {
            ctx.progress.sub(e.counted - now);
        }
    }
    let done = || -> Result<(), DownloadError> {
        ctx.repo.link(&ctx.commit, &e.name, &e.blob)?;
        if counted {
            ctx.progress.file_done();
        }
        Ok(())
    };
    if complete() {
        return done();
    }
    let progress = |n: u64, add: bool| {
        if counted {
            if add {
                ctx.progress.add(n)
            } else {
                ctx.progress.sub(n)
            }
        }
    };
    let p = open_partial(ctx, e, &progress).await?;
    let mut p = fetch_checked(ctx, e, p, &progress).await?;
    p.w.get_mut()
        .sync_all()
        .await
        .map_err(DownloadError::io(&p.path))?;
    let Partial { path: part, w, .. } = p;
    drop(w);
    std::fs::rename(&part, &blob).map_err(DownloadError::io(&blob))?;
    done()
}

/// Requests the rest of the file until it is whole and matches its sha256, with retries: a
/// try that made progress resets the count; a second sha256 mismatch is fatal (and removes the
/// partial file).
async fn fetch_checked(
    ctx: &Ctx<'_>,
    e: &Entry,
    mut p: Partial,
    progress: &dyn Fn(u64, bool),
) -> Result<Partial, DownloadError> {
    let url = ctx.hub.file_url(&ctx.opts.repo, &ctx.commit, &e.name);
    let mut try_no = 0;
    let mut bad_sums = 0;
    loop {
        let before = p.have;
        let step = if p.have < e.size {
            fetch_range(ctx, &url, e, &mut p, progress).await
        } else {
            Ok(())
        };
        p.w.flush().await.map_err(DownloadError::io(&p.path))?;
        let failure = match step {
            Ok(()) if p.have == e.size => None,
            Ok(()) => Some(Failure::Transient(format!(
                "the body ended at byte {} of {}",
                p.have, e.size
            ))),
            Err(Step::Fatal(err)) => return Err(err),
            Err(Step::Retry(f)) => Some(f),
        };
        if let Some(f) = failure {
            try_no = if p.have > before { 1 } else { try_no + 1 };
            back_off(ctx.opts, &url, try_no, f).await?;
            continue;
        }
        if let (Some(want), Some(h)) = (&e.sha256, p.hasher.take()) {
            let got = hex(&h.finalize());
            if &got != want {
                bad_sums += 1;
                p.hasher = Some(Sha256::new());
                p.restart(progress)
                    .await
                    .map_err(DownloadError::io(&p.path))?;
                if bad_sums >= 2 {
                    let Partial { path, w, .. } = p;
                    drop(w);
                    let _ = std::fs::remove_file(&path);
                    return Err(DownloadError::Corrupt {
                        repo: ctx.opts.repo.clone(),
                        file: e.name.clone(),
                        what: "sha256",
                        expected: want.clone(),
                        got,
                    });
                }
                tracing::warn!(
                    "`{}` did not match its sha256 (expected {want}, got {got}); fetching it again",
                    e.name
                );
                continue;
            }
        }
        return Ok(p);
    }
}

/// One request for the rest of a file, appended to `p`.
async fn fetch_range(
    ctx: &Ctx<'_>,
    url: &str,
    e: &Entry,
    p: &mut Partial,
    progress: &dyn Fn(u64, bool),
) -> Result<(), Step> {
    let io = |err| Step::Fatal(DownloadError::io(ctx.repo.incomplete(&e.blob))(err));
    let resp = match ctx.hub.get(url, p.have).await {
        Ok(r) => r,
        Err(Failure::Status { status: 416, .. }) => {
            // The range is past the end: start over.
            p.restart(progress).await.map_err(io)?;
            return Err(Step::Retry(Failure::Transient(
                "416 Range Not Satisfiable; starting the file over".into(),
            )));
        }
        Err(Failure::Status { status, error_code }) => {
            return Err(status_error(
                &ctx.hub,
                ctx.opts,
                url,
                Some(&e.name),
                status,
                &error_code,
            ));
        }
        Err(f) => return Err(Step::Retry(f)),
    };
    let resumed = resp.status() == hyper::StatusCode::PARTIAL_CONTENT
        && resp
            .headers()
            .get(hyper::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&format!("bytes {}-", p.have)));
    if !resumed && p.have > 0 {
        // A whole file (or another range) came back: start over.
        p.restart(progress).await.map_err(io)?;
        if resp.status() == hyper::StatusCode::PARTIAL_CONTENT {
            return Err(Step::Retry(Failure::Transient(
                "the server sent another range than asked".into(),
            )));
        }
    }
    let mut body = resp.into_body();
    loop {
        let frame = match tokio::time::timeout(ctx.opts.stall_timeout, body.frame()).await {
            Err(_) => {
                return Err(Step::Retry(Failure::Transient(format!(
                    "no bytes for {}s (stalled)",
                    ctx.opts.stall_timeout.as_secs_f64()
                ))));
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(err))) => {
                return Err(Step::Retry(Failure::Transient(format!(
                    "the body was cut: {err}"
                ))));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let n = data.len() as u64;
        if p.have + n > e.size {
            return Err(Step::Fatal(DownloadError::Corrupt {
                repo: ctx.opts.repo.clone(),
                file: e.name.clone(),
                what: "size",
                expected: e.size.to_string(),
                got: format!("more than {}", p.have),
            }));
        }
        p.w.write_all(&data).await.map_err(io)?;
        if let Some(h) = p.hasher.as_mut() {
            h.update(&data);
        }
        p.have += n;
        progress(n, true);
    }
}
