//! `aim-engine download` against a stand-in Hub on loopback: a small hyper server with the
//! endpoints the download uses (`/api/models/{repo}/revision/{rev}?blobs=true`,
//! `/{repo}/resolve/{commit}/{file}` with a redirect for LFS files like the Hub's CDN), Range
//! requests, a gated repo (401 without a token, 403 with a wrong one), 404s, 429 throttling
//! with Retry-After, slow bodies and corrupt bytes.

use crate::support::{AimEngine, Finished, project_root, wait_for};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const COMMIT: &str = "4f1c2b3a4d5e6f708192a3b4c5d6e7f809102132";
const TOKEN: &str = "hf_good_token";

#[derive(Clone)]
pub(crate) struct HubFile {
    name: String,
    data: Vec<u8>,
    lfs: bool,
    /// The size the listing claims, when not the data's (a large model, without its bytes).
    listed: Option<u64>,
}

fn sha256_hex(d: &[u8]) -> String {
    Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HubFile {
    pub(crate) fn new(name: &str, data: impl Into<Vec<u8>>, lfs: bool) -> HubFile {
        HubFile {
            name: name.into(),
            data: data.into(),
            lfs,
            listed: None,
        }
    }
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }
    pub(crate) fn len(&self) -> u64 {
        self.data.len() as u64
    }
    /// The listing says the file has `size` bytes.
    fn claiming(mut self, size: u64) -> HubFile {
        self.listed = Some(size);
        self
    }
    /// The name of its blob in the cache: the LFS sha256, else a git-blob-like id.
    fn blob(&self) -> String {
        let h = sha256_hex(&self.data);
        if self.lfs { h } else { h[..40].to_string() }
    }
}

/// A config.json of Qwen3-32B's shape (the planner sizes the model from it).
const CONFIG: &str = r#"{"model_type":"qwen3","hidden_size":5120,"intermediate_size":25600,"num_hidden_layers":64,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"max_position_embeddings":40960,"torch_dtype":"bfloat16"}"#;

/// Bytes that differ from file to file.
fn weights(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64 * 7 + (i / 251) as u64) as u8)
        .collect()
}

/// A repo like a real one: meta files, two safetensors shards with their index, and what an
/// engine does not need (README, .bin weights, a sub-folder of originals).
fn tiny_repo(shard: usize) -> Vec<HubFile> {
    let index = r#"{"metadata":{"total_size":0},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#;
    vec![
        HubFile::new(".gitattributes", "*.safetensors filter=lfs\n", false),
        HubFile::new("README.md", "# tiny\n", false),
        HubFile::new("config.json", CONFIG, false),
        HubFile::new("generation_config.json", r#"{"temperature":0.6}"#, false),
        HubFile::new("tokenizer.json", r#"{"model":{"type":"BPE"}}"#, false),
        HubFile::new("tokenizer_config.json", r#"{"bos_token":null}"#, false),
        HubFile::new("chat_template.jinja", "{{ messages }}", false),
        HubFile::new("model.safetensors.index.json", index, false),
        HubFile::new("model-00001-of-00002.safetensors", weights(1, shard), true),
        HubFile::new("model-00002-of-00002.safetensors", weights(2, shard), true),
        HubFile::new("pytorch_model.bin", weights(3, 1000), true),
        HubFile::new("original/consolidated.00.pth", weights(4, 1000), true),
    ]
}

/// What the engine needs of `tiny_repo`.
const NEEDED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    range: Option<String>,
    auth: Option<String>,
}

struct State {
    repos: Mutex<Vec<(String, Vec<HubFile>, bool)>>,
    /// 429s still to answer (to any request).
    throttle: AtomicU32,
    /// Body pacing: bytes per chunk and the pause between chunks (0: all at once).
    chunk: AtomicU64,
    pause_ms: AtomicU64,
    /// Files whose bytes are served flipped.
    corrupt: Mutex<Vec<String>>,
    /// Once: the next LFS file body stops after this many bytes and then sends nothing (0: off).
    stall_after: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in Hub, serving on 127.0.0.1 from its own thread until dropped.
pub(crate) struct StandInHub {
    pub(crate) url: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StandInHub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    let mut r = text(status, &format!(r#"{{"error":"{code}"}}"#));
    r.headers_mut()
        .insert("x-error-code", code.parse().unwrap());
    r
}

/// The disk check refused before any weights were written: no `.safetensors` was fetched.
fn assert_no_weights_fetched(hub: &StandInHub) {
    let fetched = hub.fetched();
    assert!(
        fetched.iter().all(|(f, _)| !f.ends_with(".safetensors")),
        "{fetched:?}"
    );
}

impl StandInHub {
    pub(crate) fn start() -> StandInHub {
        let state = Arc::new(State {
            repos: Mutex::new(Vec::new()),
            throttle: AtomicU32::new(0),
            chunk: AtomicU64::new(0),
            pause_ms: AtomicU64::new(0),
            corrupt: Mutex::new(Vec::new()),
            stall_after: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut rx => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(answer(&st, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        StandInHub {
            url,
            state,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub(crate) fn repo(self, id: &str, files: Vec<HubFile>, gated: bool) -> Self {
        self.state
            .repos
            .lock()
            .unwrap()
            .push((id.into(), files, gated));
        self
    }

    fn pace(&self, chunk: u64, pause_ms: u64) {
        self.state.chunk.store(chunk, SeqCst);
        self.state.pause_ms.store(pause_ms, SeqCst);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The file requests (`resolve/`) seen, by file name.
    pub(crate) fn fetched(&self) -> Vec<(String, Option<String>)> {
        self.seen()
            .into_iter()
            .filter_map(|s| {
                let (_, f) = s.path.split_once(&format!("/resolve/{COMMIT}/"))?;
                Some((f.to_string(), s.range))
            })
            .collect()
    }
}

async fn answer(st: &State, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let auth = header("authorization");
    let range = header("range");
    st.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
        auth: auth.clone(),
    });
    if st
        .throttle
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "RateLimited");
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    // The CDN the Hub redirects LFS files to: /cdn/<repo id>/<file>.
    let (api, rest) = if let Some(r) = path.strip_prefix("/api/models/") {
        (true, r)
    } else if let Some(r) = path.strip_prefix("/cdn/") {
        (false, r)
    } else {
        (false, path.trim_start_matches('/'))
    };
    let repos = st.repos.lock().unwrap().clone();
    let Some((id, files, gated)) = repos
        .iter()
        .find(|(id, _, _)| rest.starts_with(&format!("{id}/")))
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, "RepoNotFound");
    };
    let rest = &rest[id.len() + 1..];
    if gated && !path.starts_with("/cdn/") {
        match auth.as_deref() {
            None => return error(StatusCode::UNAUTHORIZED, "GatedRepo"),
            Some(a) if a != format!("Bearer {TOKEN}") => {
                return error(StatusCode::FORBIDDEN, "GatedRepo");
            }
            Some(_) => {}
        }
    }
    if api {
        let Some(rev) = rest.strip_prefix("revision/") else {
            return error(StatusCode::NOT_FOUND, "EntryNotFound");
        };
        if rev != "main" && rev != COMMIT {
            return error(StatusCode::NOT_FOUND, "RevisionNotFound");
        }
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let size = f.listed.unwrap_or(f.data.len() as u64);
                let mut s = serde_json::json!({"rfilename": f.name, "size": size,
                    "blobId": sha256_hex(&f.data)[..40]});
                if f.lfs {
                    s["lfs"] = serde_json::json!({"sha256": sha256_hex(&f.data),
                        "size": size, "pointerSize": 134});
                }
                s
            })
            .collect();
        let body = serde_json::json!({"id": id, "sha": COMMIT, "siblings": siblings});
        return text(StatusCode::OK, &body.to_string());
    }
    let name = if path.starts_with("/cdn/") {
        rest.to_string()
    } else {
        match rest.strip_prefix(&format!("resolve/{COMMIT}/")) {
            Some(n) => n.to_string(),
            None => return error(StatusCode::NOT_FOUND, "RevisionNotFound"),
        }
    };
    let Some(file) = files.iter().find(|f| f.name == name) else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound");
    };
    if file.lfs && !path.starts_with("/cdn/") {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("/cdn/{id}/{name}"))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
    }
    let mut data = file.data.clone();
    if st.corrupt.lock().unwrap().contains(&name) {
        data.iter_mut().for_each(|b| *b ^= 0xff);
    }
    let len = data.len() as u64;
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let mut resp =
        Response::builder().header("content-length", (len - from.unwrap_or(0)).to_string());
    if let Some(f) = from {
        if f >= len {
            return text(StatusCode::RANGE_NOT_SATISFIABLE, "");
        }
        resp = resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", format!("bytes {f}-{}/{len}", len - 1));
        data.drain(..f as usize);
    }
    let stall = if file.lfs {
        st.stall_after.swap(0, SeqCst) as usize
    } else {
        0
    };
    if stall > 0 && stall < data.len() {
        let head = Bytes::copy_from_slice(&data[..stall]);
        let stream = futures_util::stream::unfold(Some(head), |head| async move {
            match head {
                Some(h) => Some((Ok::<_, Infallible>(Frame::data(h)), None)),
                None => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    None
                }
            }
        });
        return resp.body(StreamBody::new(stream).boxed()).unwrap();
    }
    let chunk = st.chunk.load(SeqCst) as usize;
    let pause = Duration::from_millis(st.pause_ms.load(SeqCst));
    if chunk == 0 {
        return resp.body(Full::new(Bytes::from(data)).boxed()).unwrap();
    }
    let chunks: Vec<Bytes> = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
        let c = it.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, Infallible>(Frame::data(c)), it))
    });
    resp.body(StreamBody::new(stream).boxed()).unwrap()
}

/// `aim-engine download ID` against `hub`, with the cache in the run's dir (`hf/hub`).
fn download(hub: &StandInHub, id: &str) -> AimEngine {
    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    run.env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", hf)
        .env("AIM_DOWNLOAD_RETRY_INITIAL", "0.05s")
        .args(["download", id])
}

fn repo_dir(hf_home: &Path, id: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(format!("models--{}", id.replace('/', "--")))
}

/// Asserts the cache holds exactly what the engine needs of `files`, as huggingface_hub
/// lays it out.
fn assert_layout(hf_home: &Path, id: &str, files: &[HubFile], out: &Finished) {
    let repo = repo_dir(hf_home, id);
    let report = out.report();
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT,
        "{report}"
    );
    let snap = repo.join("snapshots").join(COMMIT);
    assert_eq!(out.stdout().trim(), snap.display().to_string(), "{report}");
    for f in files {
        let link = snap.join(&f.name);
        if !NEEDED.contains(&f.name.as_str()) {
            assert!(!link.exists(), "{} should not be fetched\n{report}", f.name);
            continue;
        }
        let target = std::fs::read_link(&link)
            .unwrap_or_else(|e| panic!("{} is not a link ({e})\n{report}", f.name));
        assert_eq!(target, PathBuf::from(format!("../../blobs/{}", f.blob())));
        assert!(
            std::fs::read(&link).unwrap() == f.data,
            "{} differs\n{report}",
            f.name
        );
    }
    let blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.len(), NEEDED.len(), "{blobs:?}");
    assert!(
        !blobs.iter().any(|b| b.ends_with(".incomplete")),
        "{blobs:?}"
    );
}

#[test]
fn fetches_what_an_engine_needs_into_the_hub_cache_layout() {
    let files = tiny_repo(200_000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    let run = download(&hub, "acme/Tiny");
    let hf = run.dir().join("hf");
    let out = run.output();
    out.expect_code(0);
    assert_layout(&hf, "acme/Tiny", &files, &out);
    // LFS files came through the redirect, and no token was sent when none is set.
    let seen = hub.seen();
    assert!(
        seen.iter()
            .any(|s| s.path.starts_with("/cdn/acme/Tiny/model-"))
    );
    assert!(seen.iter().all(|s| s.auth.is_none()));
    assert!(
        seen.iter()
            .any(|s| s.path == "/api/models/acme/Tiny/revision/main"),
        "{seen:?}"
    );
    // Each needed file once, nothing else.
    let mut fetched: Vec<String> = hub.fetched().into_iter().map(|(f, _)| f).collect();
    fetched.sort();
    let mut want: Vec<String> = NEEDED.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(fetched, want);

    // A second run finds everything and fetches nothing.
    let again = AimEngine::new()
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .args(["download-to-cache", "acme/Tiny"])
        .output();
    again.expect_code(0);
    assert_eq!(hub.fetched().len(), NEEDED.len(), "{}", again.report());
    assert!(
        again.stderr().contains("0 B fetched now"),
        "{}",
        again.report()
    );

    // aim-engine's own cache reader finds the model there: the plan sizes it from config.json.
    let plan = AimEngine::new()
        .env(
            "AIM_ROOT",
            project_root().join("tests/fixtures/sysfs/mi300x-8gpu-spx"),
        )
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_HOME", &hf)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "plan",
            "acme/Tiny",
            "--gpu-model",
            "MI999X",
            "--format",
            "json",
        ])
        .output();
    let v = plan.json();
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("acme/Tiny: 33B parameters")
            && reasons.contains("(from safetensors index)"),
        "{}",
        plan.report()
    );
}

#[test]
fn aim_cache_path_wins_and_the_reader_follows() {
    let files = tiny_repo(1000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    let run = download(&hub, "acme/Tiny");
    let aim = run.dir().join("aim-cache");
    let hf = run.dir().join("hf");
    let out = run.env("AIM_CACHE_PATH", &aim).output();
    out.expect_code(0);
    assert_layout(&aim, "acme/Tiny", &files, &out);
    assert!(
        !hf.exists(),
        "HF_HOME was written although AIM_CACHE_PATH is set"
    );
    let plan = AimEngine::new()
        .env(
            "AIM_ROOT",
            project_root().join("tests/fixtures/sysfs/mi300x-8gpu-spx"),
        )
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_CACHE_PATH", &aim)
        .env("HF_HOME", run_dir_unused())
        .args([
            "plan",
            "acme/Tiny",
            "--gpu-model",
            "MI999X",
            "--format",
            "json",
        ])
        .output();
    assert!(
        plan.json()["reasons"]
            .to_string()
            .contains("acme/Tiny: 33B parameters"),
        "{}",
        plan.report()
    );
}

fn run_dir_unused() -> PathBuf {
    std::env::temp_dir().join("aim-engine-test-no-such-hf-home")
}

#[test]
fn an_interrupted_download_resumes_with_range_requests() {
    let files = tiny_repo(1_000_000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    // ~8 KB every 10 ms: each shard takes over a second.
    hub.pace(8192, 10);
    let first = download(&hub, "acme/Tiny").args(["--parallel", "2"]);
    let hf = first.dir().join("hf");
    let mut running = first.spawn();
    let blobs = repo_dir(&hf, "acme/Tiny").join("blobs");
    let shards: Vec<PathBuf> = files
        .iter()
        .filter(|f| f.name.ends_with(".safetensors"))
        .map(|f| blobs.join(format!("{}.incomplete", f.blob())))
        .collect();
    let partial = |_: &Path| {
        shards
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    };
    assert!(
        wait_for(Duration::from_secs(20), || partial(&blobs)),
        "no partial file appeared\n{}",
        running.report()
    );
    running.signal(libc::SIGKILL);
    let _ = running.wait_code(Duration::from_secs(5));
    let done_before: Vec<String> = files
        .iter()
        .filter(|f| blobs.join(f.blob()).exists())
        .map(|f| f.name.clone())
        .collect();
    let parts: Vec<(String, u64)> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(
        parts.iter().any(|(_, len)| *len > 0 && *len < 1_000_000),
        "{parts:?}"
    );
    let before = hub.fetched().len();

    hub.pace(0, 0);
    let second = AimEngine::new()
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .args(["download", "acme/Tiny"])
        .output();
    second.expect_code(0);
    assert_layout(&hf, "acme/Tiny", &files, &second);
    let now: Vec<(String, Option<String>)> = hub.fetched().split_off(before);
    for name in &done_before {
        assert!(
            !now.iter().any(|(f, _)| f == name),
            "{name} was complete but fetched again: {now:?}"
        );
    }
    // Every partial file continued from its own length (one killed after its last byte but
    // before it became a blob needs no request at all).
    for (part, len) in &parts {
        let blob = part.trim_end_matches(".incomplete");
        let f = files.iter().find(|f| f.blob() == blob).unwrap();
        if *len == 0 {
            continue;
        }
        if *len == f.data.len() as u64 {
            assert!(!now.iter().any(|(n, _)| n == &f.name), "{now:?}");
            continue;
        }
        let want = format!("bytes={len}-");
        assert!(
            now.iter()
                .any(|(n, r)| n == &f.name && r.as_deref() == Some(want.as_str())),
            "{} ({len} bytes on disk) was not resumed with `Range: {want}`: {now:?}",
            f.name
        );
    }
}

#[test]
fn a_gated_model_names_hf_token_and_the_model_page() {
    let files = tiny_repo(1000);
    let hub = StandInHub::start().repo("acme/Gated", files.clone(), true);
    let page = format!("{}/acme/Gated", hub.url);

    let out = download(&hub, "acme/Gated").output();
    out.expect_code(66);
    let e = out.stderr();
    assert!(
        e.contains("401") && e.contains("HF_TOKEN") && e.contains(&page),
        "{e}"
    );

    let out = download(&hub, "acme/Gated")
        .env("HF_TOKEN", "hf_wrong")
        .output();
    out.expect_code(66);
    let e = out.stderr();
    assert!(
        e.contains("403") && e.contains("HF_TOKEN") && e.contains(&page),
        "{e}"
    );
    assert!(
        !e.contains("hf_wrong"),
        "the token must not be printed: {e}"
    );

    // The token `huggingface-cli login` saved in $HF_HOME/token counts too.
    let run = download(&hub, "acme/Gated");
    let hf = run.dir().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(hf.join("token"), format!("{TOKEN}\n")).unwrap();
    let out = run.output();
    out.expect_code(0);
    assert_layout(&hf, "acme/Gated", &files, &out);
    // The token goes to the Hub, never to the host a redirect points at.
    let seen = hub.seen();
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        seen.iter()
            .filter(|s| s.path.contains("/resolve/"))
            .all(|s| s.auth.as_deref() == Some(bearer.as_str()))
    );
}

#[test]
fn a_wrong_id_or_revision_is_a_404_that_says_which() {
    let hub = StandInHub::start().repo("acme/Tiny", tiny_repo(100), false);
    let out = download(&hub, "acme/Nope").output();
    out.expect_code(66);
    assert!(
        out.stderr().contains("model id is wrong"),
        "{}",
        out.report()
    );
    let out = download(&hub, "acme/Tiny")
        .args(["--revision", "v9"])
        .output();
    out.expect_code(66);
    let e = out.stderr();
    assert!(
        e.contains("revision `v9`") && e.contains("--revision"),
        "{e}"
    );
    let out = download(&hub, "acme/Tiny")
        .args(["--revision", "../x"])
        .output();
    out.expect_code(64);
    let out = download(&hub, "/models/local").output();
    out.expect_code(64);
    assert!(out.stderr().contains("local folder"), "{}", out.report());
}

#[test]
fn throttling_waits_as_retry_after_says_and_says_so() {
    let files = tiny_repo(1000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    hub.state.throttle.store(2, SeqCst);
    let run = download(&hub, "acme/Tiny");
    let hf = run.dir().join("hf");
    let t = Instant::now();
    let out = run.output();
    out.expect_code(0);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    let e = out.stderr();
    assert_eq!(e.matches("429 Too Many Requests").count(), 2, "{e}");
    assert!(e.contains("as its Retry-After asks"), "{e}");
    assert_layout(&hf, "acme/Tiny", &files, &out);

    // Throttled on every try: a distinct exit status and a message with the fix.
    hub.state.throttle.store(100, SeqCst);
    let out = download(&hub, "acme/Tiny").args(["--tries", "2"]).output();
    out.expect_code(75);
    let e = out.stderr();
    assert!(
        e.contains("kept throttling") && e.contains("HF_TOKEN"),
        "{e}"
    );
}

#[test]
fn the_disk_check_refuses_before_any_weights_are_written() {
    let files = tiny_repo(50_000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    let run = download(&hub, "acme/Tiny").env("AIM_TEST_FREE_BYTES", "20000");
    let hf = run.dir().join("hf");
    let out = run.output();
    out.expect_code(73);
    let e = out.stderr();
    let need: u64 = files
        .iter()
        .filter(|f| NEEDED.contains(&f.name.as_str()))
        .map(|f| f.data.len() as u64)
        .sum::<u64>()
        - files[7].data.len() as u64; // the index is fetched first, to know the shards
    let path = repo_dir(&hf, "acme/Tiny");
    assert!(
        e.contains(&format!("({need} bytes) still to download"))
            && e.contains("(20000 bytes) free")
            && e.contains(&path.display().to_string()),
        "{e}"
    );
    assert_no_weights_fetched(&hub);
}

#[test]
fn progress_is_logged_every_interval_with_rate_and_eta() {
    let files = tiny_repo(120_000);
    let hub = StandInHub::start().repo("acme/Tiny", files, false);
    // ~2.5 s in all: 4 KB every 40 ms per shard, two at a time.
    hub.pace(4096, 40);
    let out = download(&hub, "acme/Tiny")
        .args(["--progress-interval", "0.5s"])
        .output();
    out.expect_code(0);
    let e = out.stderr();
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("downloading acme/Tiny: "))
        .collect();
    assert!(lines.len() >= 2 && lines.len() <= 12, "{e}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" of ") && l.contains("files") && l.contains("/s, ETA ")),
        "{e}"
    );
}

#[test]
fn a_corrupt_file_is_fetched_again_then_refused() {
    let files = tiny_repo(3000);
    let hub = StandInHub::start().repo("acme/Tiny", files, false);
    hub.state
        .corrupt
        .lock()
        .unwrap()
        .push("model-00002-of-00002.safetensors".into());
    let run = download(&hub, "acme/Tiny");
    let hf = run.dir().join("hf");
    let out = run.output();
    out.expect_code(75);
    let e = out.stderr();
    assert!(
        e.contains("sha256") && e.contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
    let tries = hub
        .fetched()
        .iter()
        .filter(|(f, _)| f == "model-00002-of-00002.safetensors")
        .count();
    assert_eq!(tries, 2);
    let snap = repo_dir(&hf, "acme/Tiny").join("snapshots").join(COMMIT);
    assert!(!snap.join("model-00002-of-00002.safetensors").exists());
}

/// The Python of the real-engine suite's vLLM venv (issue 8), which has huggingface_hub.
const REAL_PYTHON: &str = "/root/.cache/aim-engine/real-engine/vllm-0.32.0/bin/python";

#[test]
#[ignore = "needs the real huggingface_hub in the vLLM venv at REAL_PYTHON; run: cargo test --test it download:: -- --ignored"]
fn huggingface_hub_reads_our_cache_offline() {
    let files = tiny_repo(5000);
    let hub = StandInHub::start().repo("acme/Tiny", files, false);
    let run = download(&hub, "acme/Tiny");
    let hf = run.dir().join("hf");
    let out = run.output();
    out.expect_code(0);
    let snap = out.stdout().trim().to_string();
    let py = std::process::Command::new(REAL_PYTHON)
        .env("HF_HOME", &hf)
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "-c",
            "from huggingface_hub import snapshot_download, try_to_load_from_cache\n\
             print(snapshot_download('acme/Tiny'))\n\
             print(try_to_load_from_cache('acme/Tiny', 'model-00002-of-00002.safetensors'))\n\
             from transformers import AutoConfig\n\
             print(AutoConfig.from_pretrained('acme/Tiny').num_hidden_layers)",
        ])
        .output()
        .expect("run the real-engine venv's python");
    let stdout = String::from_utf8_lossy(&py.stdout);
    assert!(
        py.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&py.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], snap);
    assert_eq!(lines[1], format!("{snap}/model-00002-of-00002.safetensors"));
    assert_eq!(lines[2], "64", "transformers read config.json offline");
}

/// GET on a loopback port: (status, body without chunk framing for small JSON bodies).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1.to_string())?;
    Some((code, body))
}

fn status_json(port: u16) -> Option<serde_json::Value> {
    let (_, body) = http_get(port, "/status")?;
    let json = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str(json).ok()
}

#[test]
fn serve_downloads_first_in_its_own_phase_then_runs_the_engine_offline() {
    let files = tiny_repo(300_000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    // About two seconds of download, longer than the startup timeout below.
    hub.pace(4096, 25);
    let run = AimEngine::new();
    let env_file = run.dir().join("engine.env");
    let hf = run.dir().join("hf");
    let fake = crate::support::fake_engine();
    let mut sup = run
        .fixture("mi300x-8gpu-spx")
        .arg("acme/Tiny")
        .public_port()
        .args(["--engine-port", &crate::support::free_port().to_string()])
        .engine_script(&format!(
            "env > '{}'\nexec '{}' \"$@\"",
            env_file.display(),
            fake.display()
        ))
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_DOWNLOAD", "1")
        .env("AIM_STARTUP_TIMEOUT", "1s")
        .env("AIM_PROGRESS_INTERVAL", "0.5s")
        .env("AIM_STOP_TIMEOUT", "5s")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .env("FAKE_LOAD_SECS", "0.2")
        .spawn();
    let port = sup.port;
    let started = Instant::now();
    let mut seen_downloading = None;
    let ready = wait_for(Duration::from_secs(30), || {
        let Some(s) = status_json(port) else {
            return false;
        };
        if s["phase"] == "downloading" && s["download"]["bytes_total"].as_u64() > Some(0) {
            seen_downloading.get_or_insert(s.clone());
        }
        s["phase"] == "ready"
    });
    assert!(ready, "never ready\n{}", sup.report());
    // The download took longer than the startup timeout, which did not count it.
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let s_ready = status_json(port).unwrap();
    assert_eq!(
        s_ready["attempt"], 1,
        "the first attempt was not the one that served: {s_ready}"
    );
    assert!(
        !sup.stderr().contains("not ready within"),
        "{}",
        sup.report()
    );
    let s =
        seen_downloading.unwrap_or_else(|| panic!("no downloading phase seen\n{}", sup.report()));
    let d = &s["download"];
    for k in [
        "bytes_done",
        "bytes_total",
        "files_done",
        "files_total",
        "rate_bytes_per_s",
    ] {
        assert!(d[k].is_u64(), "{k} missing in {d}");
    }
    assert_eq!(d["files_total"], NEEDED.len());
    assert!(
        s["attempt"] == 0,
        "an engine started before the download ended: {s}"
    );
    // The engine found the complete cache, offline.
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.lines().any(|l| l == "HF_HUB_OFFLINE=1"), "{env}");
    let root = hf.join("hub");
    assert!(
        env.lines()
            .any(|l| l == format!("HF_HUB_CACHE={}", root.display())),
        "{env}"
    );
    let snap = repo_dir(&hf, "acme/Tiny").join("snapshots").join(COMMIT);
    assert!(snap.join("model-00002-of-00002.safetensors").is_file());
    let final_status = status_json(port).unwrap();
    assert_eq!(
        final_status["download"]["bytes_done"],
        final_status["download"]["bytes_total"]
    );
    assert!(
        sup.stderr().contains("downloading acme/Tiny: "),
        "{}",
        sup.report()
    );
    // Not in the cache yet: planned from the Hub's listing first (two shards).
    assert!(
        sup.stderr().contains(
            "planned before the download, from the Hub's file listing: 8 usable MI300X GPU(s)"
        ) && sup
            .stderr()
            .contains("of weights in 2 file(s) (from the Hub's file listing"),
        "{}",
        sup.report()
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let total: u64 = NEEDED
        .iter()
        .map(|n| files.iter().find(|f| f.name == *n).unwrap().data.len() as u64)
        .sum();
    for line in [
        format!("aim_download_bytes_done {total}"),
        format!("aim_download_bytes_total {total}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("aim_phase{phase=\"downloading\"} 0"),
        "{metrics}"
    );
    sup.signal(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(15));
}

#[test]
fn serve_with_a_gated_model_fails_in_the_download_phase_with_the_fix() {
    let hub = StandInHub::start().repo("acme/Gated", tiny_repo(1000), true);
    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    let mut sup = run
        .fixture("mi300x-8gpu-spx")
        .arg("acme/Gated")
        .public_port()
        .fake_engine()
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_DOWNLOAD", "1")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .spawn();
    sup.expect_exit(66, Duration::from_secs(20));
    let e = sup.stderr();
    assert!(e.contains("HF_TOKEN") && e.contains("/acme/Gated"), "{e}");
    assert!(!e.contains("spawn"), "an engine was started: {e}");
}

#[test]
fn the_disk_check_reads_the_real_free_space_of_a_small_filesystem() {
    if !crate::support::privileged_or_skip(
        "the_disk_check_reads_the_real_free_space_of_a_small_filesystem",
        "root to mount a tmpfs in a new mount namespace",
    ) {
        return;
    }
    let files = tiny_repo(400_000);
    let hub = StandInHub::start().repo("acme/Tiny", files, false);
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    // A 512 KiB tmpfs as HF_HOME, in a mount namespace of its own (nothing leaks out).
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=512k aim-test "$1" && exec "$2" download acme/Tiny"#)
        .arg("sh")
        .arg(&hf)
        .arg(env!("CARGO_BIN_EXE_aim-engine"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HF_HOME", &hf)
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(73), "{e}");
    let free: u64 = e
        .split(" bytes) free")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no free-byte count in: {e}"));
    assert!(free > 400_000 && free <= 512 * 1024, "free {free}: {e}");
    assert!(
        e.contains(&format!("filesystem of {}", hf.display())),
        "{e}"
    );
    assert_no_weights_fetched(&hub);
}

#[test]
fn serve_without_the_hub_serves_a_complete_cache_offline_and_refuses_an_incomplete_one() {
    let files = tiny_repo(2000);
    let hub = StandInHub::start().repo("acme/Tiny", files, false);
    let first = download(&hub, "acme/Tiny");
    let hf = first.dir().join("hf");
    // `out` keeps the run's dir, and so the cache, for the whole test.
    let out = first.output();
    out.expect_code(0);
    let asked_before = hub.seen().len();
    let live_hub = hub.url.clone();
    let no_hub = format!("http://127.0.0.1:{}", crate::support::free_port());
    let serve = |hf: &Path, endpoint: &str| {
        let run = AimEngine::new();
        let env_file = run.dir().join("engine.env");
        let fake = crate::support::fake_engine();
        let sup = run
            .fixture("mi300x-8gpu-spx")
            .arg("acme/Tiny")
            .public_port()
            .args(["--engine-port", &crate::support::free_port().to_string()])
            .engine_script(&format!(
                "env > '{}'\nexec '{}' \"$@\"",
                env_file.display(),
                fake.display()
            ))
            .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
            .env("AIM_DOWNLOAD", "1")
            .env("AIM_DOWNLOAD_TRIES", "2")
            .env("AIM_DOWNLOAD_RETRY_INITIAL", "0.05s")
            .env("AIM_STOP_TIMEOUT", "5s")
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", hf)
            .env("FAKE_LOAD_SECS", "0.1")
            .spawn();
        (sup, env_file)
    };
    // The Hub up: a complete copy still means no request to it at all.
    let (mut sup, _) = serve(&hf, &live_hub);
    let port = sup.port;
    let ready = wait_for(Duration::from_secs(30), || {
        status_json(port).is_some_and(|s| s["phase"] == "ready")
    });
    assert!(ready, "never ready\n{}", sup.report());
    assert!(
        sup.stderr().contains("is complete in the cache"),
        "{}",
        sup.report()
    );
    assert_eq!(
        hub.seen().len(),
        asked_before,
        "the Hub was asked: {:?}",
        hub.seen()
    );
    sup.signal(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(15));
    drop(hub);

    // And with no Hub to reach.
    let (mut sup, env_file) = serve(&hf, &no_hub);
    let port = sup.port;
    let ready = wait_for(Duration::from_secs(30), || {
        status_json(port).is_some_and(|s| s["phase"] == "ready")
    });
    assert!(ready, "never ready\n{}", sup.report());
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.lines().any(|l| l == "HF_HUB_OFFLINE=1"), "{env}");
    sup.signal(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(15));

    // A shard missing: not served offline; the download's error, before any engine.
    let snap = repo_dir(&hf, "acme/Tiny").join("snapshots").join(COMMIT);
    std::fs::remove_file(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let (mut sup, env_file) = serve(&hf, &no_hub);
    sup.expect_exit(75, Duration::from_secs(20));
    let e = sup.stderr();
    assert!(
        e.contains("could not be fetched after 2 tries") && e.contains("no complete copy"),
        "{e}"
    );
    assert!(!env_file.exists(), "an engine was started: {e}");
}

#[test]
fn a_blob_another_download_holds_is_waited_for_through_huggingface_hubs_lock_file() {
    use nix::fcntl::{Flock, FlockArg};
    let files = tiny_repo(5000);
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    let run = download(&hub, "acme/Tiny");
    let hf = run.dir().join("hf");
    let shard = files
        .iter()
        .find(|f| f.name == "model-00001-of-00002.safetensors")
        .unwrap();
    let lock_path = hf
        .join("hub/.locks/models--acme--Tiny")
        .join(format!("{}.lock", shard.blob()));
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&lock_path).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut sup = run.spawn();
    assert!(
        wait_for(Duration::from_secs(10), || sup
            .stderr()
            .contains("another download holds")),
        "{}",
        sup.report()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(sup.child.try_wait().unwrap().is_none(), "{}", sup.report());
    assert!(!hub.fetched().iter().any(|(f, _)| f == &shard.name));
    drop(held);
    sup.expect_exit(0, Duration::from_secs(20));
    assert!(hub.fetched().iter().any(|(f, _)| f == &shard.name));
}

#[test]
fn a_stalled_body_is_cut_and_resumed_from_where_it_stopped() {
    let files: Vec<HubFile> = tiny_repo(600_000)
        .into_iter()
        .filter(|f| f.name.ends_with(".safetensors") || f.name == "config.json")
        .collect();
    let hub = StandInHub::start().repo("acme/Tiny", files.clone(), false);
    let run = download(&hub, "acme/Tiny").args(["--stall-timeout", "0.3s", "--parallel", "1"]);
    let hf = run.dir().join("hf");
    // The first shard served stops after 200 000 bytes.
    hub.state.stall_after.store(200_000, SeqCst);
    let out = run.output();
    out.expect_code(0);
    let e = out.stderr();
    assert!(e.contains("stalled"), "{e}");
    // Resumed in the same run from the last byte received: nothing is fetched twice.
    let ranges: Vec<_> = hub
        .fetched()
        .into_iter()
        .filter(|(_, r)| r.is_some())
        .collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}\n{e}");
    assert_eq!(ranges[0].1.as_deref(), Some("bytes=200000-"), "{e}");
    let snap = repo_dir(&hf, "acme/Tiny").join("snapshots").join(COMMIT);
    for f in &files {
        assert!(
            std::fs::read(snap.join(&f.name)).unwrap() == f.data,
            "{}",
            f.name
        );
    }
}

#[test]
fn on_a_terminal_progress_is_a_bar() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED on_a_terminal_progress_is_a_bar: needs `script` (util-linux) for a pty");
        return;
    }
    let hub = StandInHub::start().repo("acme/Tiny", tiny_repo(3000), false);
    let dir = tempfile::tempdir().unwrap();
    // `script` runs the command on a pseudo-terminal and copies what it wrote to stdout.
    let out = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "'{}' download acme/Tiny",
            env!("CARGO_BIN_EXE_aim-engine")
        ))
        .arg("/dev/null")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HF_HOME", dir.path().join("hf"))
        .env("HF_ENDPOINT", &hub.url)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\r\x1b[2K[##############################] ") && text.contains("(100%)"),
        "{text:?}"
    );
    assert!(
        !text.contains("downloading acme/Tiny: "),
        "log lines on a terminal: {text:?}"
    );
}

/// `tiny_repo` as a large model: each shard claims `shard_gib` GiB in the listing, and the
/// `.bin` and `original/` weights (which are not the chosen format) claim a terabyte each.
fn large_repo(shard_gib: u64) -> Vec<HubFile> {
    tiny_repo(1000)
        .into_iter()
        .map(|f| match f.name.as_str() {
            n if n.ends_with(".safetensors") => f.claiming(shard_gib << 30),
            "pytorch_model.bin" | "original/consolidated.00.pth" => f.claiming(1 << 40),
            _ => f,
        })
        .collect()
}

fn plan_of(hub: &StandInHub, id: &str) -> AimEngine {
    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    run.fixture("mi300x-8gpu-spx")
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", hf)
        .env("AIM_DOWNLOAD_RETRY_INITIAL", "0.05s")
        .args(["plan", id])
}

/// A model not in the cache: by default `plan` sizes it from its name and asks nobody;
/// with --size-from-hub (AIM_SIZE_FROM_HUB) the Hub's listing of the weight files an engine
/// would load (the shards the index names, not the other formats) sizes it, and says so.
#[test]
fn plan_sizes_a_model_not_in_the_cache_from_the_hubs_listing() {
    let hub = StandInHub::start().repo("acme/Mystery", large_repo(30), false);
    let out = plan_of(&hub, "acme/Mystery").output();
    out.expect_code(0);
    let text = out.stdout();
    assert!(
        text.contains("acme/Mystery: size unknown"),
        "{}",
        out.report()
    );
    assert!(
        text.contains("--tensor-parallel-size 8"),
        "{}",
        out.report()
    );
    assert!(
        hub.seen().is_empty(),
        "plan asked the Hub: {:?}",
        hub.seen()
    );

    let out = plan_of(&hub, "acme/Mystery")
        .arg("--size-from-hub")
        .output();
    out.expect_code(0);
    let text = out.stdout();
    assert!(
        text.contains(
            "acme/Mystery: 32B parameters, 60.0 GiB of weights in 2 file(s) (from the Hub's file listing; the model is not in the cache)"
        ),
        "{}",
        out.report()
    );
    assert!(
        text.contains("preferred 4 GPU(s) in bf16") && text.contains("--tensor-parallel-size 4"),
        "{}",
        out.report()
    );
    // The listing and the index (read into memory), nothing else; nothing is written.
    let paths: Vec<String> = hub.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/api/models/acme/Mystery/revision/main".to_string(),
            format!("/acme/Mystery/resolve/{COMMIT}/model.safetensors.index.json")
        ],
        "{}",
        out.report()
    );

    // The same by the environment, as JSON; dry-run's size for the operator is the Hub's.
    let out = plan_of(&hub, "acme/Mystery")
        .env("AIM_SIZE_FROM_HUB", "1")
        .args(["--format", "json"])
        .output();
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["recipe"]["gpu_count"], 4, "{}", out.report());
    assert!(
        v["reasons"]
            .to_string()
            .contains("from the Hub's file listing"),
        "{}",
        out.report()
    );
    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    let out = run
        .fixture("mi300x-8gpu-spx")
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", hf)
        .env("AIM_SIZE_FROM_HUB", "1")
        .args(["dry-run", "acme/Mystery", "--format", "json"])
        .output();
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v[0]["models"][0]["size_gb"], 64.4, "{}", out.report());

    // HF_HUB_OFFLINE wins: nobody is asked, and the log says why.
    let before = hub.seen().len();
    let out = plan_of(&hub, "acme/Mystery")
        .arg("--size-from-hub")
        .env("HF_HUB_OFFLINE", "1")
        .output();
    out.expect_code(0);
    assert!(out.stdout().contains("size unknown"), "{}", out.report());
    assert!(
        out.stderr().contains("HF_HUB_OFFLINE is set"),
        "{}",
        out.report()
    );
    assert_eq!(hub.seen().len(), before);

    // 2 TiB of weights fit on no number of these GPUs: refused, naming the Hub's size.
    let hub = StandInHub::start().repo("acme/Huge", large_repo(1024), false);
    let out = plan_of(&hub, "acme/Huge").arg("--size-from-hub").output();
    out.expect_code(69);
    assert!(
        out.stderr().contains(
            "acme/Huge does not fit on 8 MI300X GPU(s): 256.0 GiB weights (from the Hub's file listing) + "
        ),
        "{}",
        out.report()
    );
}

/// `serve --download` plans from the Hub's listing before it fetches anything: a model that
/// cannot run here is refused without a byte of weights written.
#[test]
fn serve_download_refuses_a_model_that_cannot_fit_before_fetching_weights() {
    let hub = StandInHub::start().repo("acme/Huge", large_repo(1024), false);
    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    let mut sup = run
        .fixture("mi300x-8gpu-spx")
        .arg("acme/Huge")
        .public_port()
        .fake_engine()
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_DOWNLOAD", "1")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .spawn();
    sup.expect_exit(69, Duration::from_secs(20));
    let e = sup.stderr();
    assert!(
        e.contains("from the Hub's file listing; nothing was downloaded"),
        "{}",
        sup.report()
    );
    assert!(!e.contains("spawn"), "an engine was started: {e}");
    assert_no_weights_fetched(&hub);
    assert!(
        !repo_dir(&hf, "acme/Huge").join("blobs").exists()
            || std::fs::read_dir(repo_dir(&hf, "acme/Huge").join("blobs"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// `serve --download --revision R` (AIM_MODEL_REVISION): the listing and the files at R,
/// `refs/R` in the cache, and the engine started with `--revision R`; a revision the Hub
/// does not have ends the run with 66 before any engine, naming it.
#[test]
fn serve_download_at_a_revision_fetches_it_and_passes_it_to_the_engine() {
    let hub = StandInHub::start().repo("acme/Tiny", tiny_repo(1000), false);
    let run = AimEngine::new();
    let argv_file = run.dir().join("engine.argv");
    let hf = run.dir().join("hf");
    let fake = crate::support::fake_engine();
    let mut sup = run
        .fixture("mi300x-8gpu-spx")
        .arg("acme/Tiny")
        .public_port()
        .args(["--engine-port", &crate::support::free_port().to_string()])
        .args(["--revision", COMMIT])
        .engine_script(&format!(
            "printf '%s\\n' \"$@\" > '{}'\nexec '{}' \"$@\"",
            argv_file.display(),
            fake.display()
        ))
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_DOWNLOAD", "1")
        .env("AIM_STOP_TIMEOUT", "5s")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .env("FAKE_LOAD_SECS", "0.2")
        .spawn();
    let port = sup.port;
    let ready = wait_for(Duration::from_secs(30), || {
        status_json(port).is_some_and(|s| s["phase"] == "ready")
    });
    assert!(ready, "never ready\n{}", sup.report());
    let argv = std::fs::read_to_string(&argv_file).unwrap_or_default();
    let argv: Vec<&str> = argv.lines().collect();
    assert!(
        argv.windows(2).any(|w| w == ["--revision", COMMIT]),
        "{argv:?}"
    );
    let listings: Vec<String> = hub
        .seen()
        .into_iter()
        .map(|s| s.path)
        .filter(|p| p.starts_with("/api/"))
        .collect();
    assert!(
        !listings.is_empty()
            && listings
                .iter()
                .all(|p| *p == format!("/api/models/acme/Tiny/revision/{COMMIT}")),
        "{listings:?}"
    );
    let repo = repo_dir(&hf, "acme/Tiny");
    // A commit is its own snapshot (no ref, as huggingface_hub does); main is not touched.
    assert!(
        repo.join("snapshots")
            .join(COMMIT)
            .join("config.json")
            .is_file(),
        "{}",
        sup.report()
    );
    assert!(!repo.join("refs/main").exists(), "refs/main was written");
    sup.signal(libc::SIGTERM);
    sup.expect_exit(0, Duration::from_secs(15));

    let run = AimEngine::new();
    let hf = run.dir().join("hf");
    let mut sup = run
        .fixture("mi300x-8gpu-spx")
        .arg("acme/Tiny")
        .public_port()
        .fake_engine()
        .env("AIM_BUILTIN_RECIPES", project_root().join("recipes"))
        .env("AIM_DOWNLOAD", "1")
        .env("AIM_MODEL_REVISION", "nope")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &hf)
        .spawn();
    sup.expect_exit(66, Duration::from_secs(20));
    let e = sup.stderr();
    assert!(
        e.contains("revision `nope` of acme/Tiny was not found (404)"),
        "{}",
        sup.report()
    );
    assert!(!e.contains("spawn"), "an engine was started: {e}");
}
