//! The engine's life: start-up (failures, load time, vLLM's bind-before-listen, SGLang's 503
//! warm-up), the OpenAI-style HTTP API on hyper 1, timed and counted faults, and shutdown on
//! SIGTERM/SIGINT.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::args::{Args, Mode};
use crate::group::{self, Group};
use crate::procs::{self, log, log_sglang};
use crate::{env, env_flag, env_num, env_secs, fake_version};

type Body = BoxBody<Bytes, Infallible>;

/// Everything the request handlers share.
struct State {
    args: Args,
    version: String,
    start: Instant,
    /// SGLang: warm-up finished (vLLM is ready as soon as it listens).
    ready: AtomicBool,
    /// Engine core died: /health answers 503.
    dead: AtomicBool,
    hang_after: Option<Duration>,
    crash_after_requests: Option<u64>,
    requests: AtomicU64,
    running: AtomicI64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    token_delay: Duration,
    /// FAKE_PREFILL_MS: CPU burnt before a request's first token (a long prompt's prefill).
    prefill: Duration,
    stream_tokens: u64,
    /// FAKE_HANG_COMPLETIONS: completions are read and never answered.
    hang_completions: bool,
    /// FAKE_HANG_COMPLETIONS_AFTER=N: the same for every completion after the first N.
    hang_completions_after: Option<u64>,
    /// FAKE_STREAM_STALL_AFTER: a stream stops after this many tokens and never ends.
    stall_after: Option<u64>,
    access_log: bool,
    /// Group leader: a node rank's connection closed (the next completion fails).
    group_broken: Arc<AtomicBool>,
    /// The first lost node's address, for the gloo error text.
    group_lost_peer: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    /// The group death is under way (one exit only).
    group_dying: AtomicBool,
}

impl State {
    fn hung(&self) -> bool {
        self.hang_after.is_some_and(|t| self.start.elapsed() >= t)
    }
}

fn vllm_log(msg: &str) {
    log("APIServer", "INFO", "api_server.py:1896", msg);
}

fn engine_log(msg: &str) {
    log("EngineCore_0", "INFO", "gpu_model_runner.py:2602", msg);
}

/// vLLM's `non-default args: {...}` line.
fn non_default_args(args: &Args) -> String {
    let non_default: Vec<String> = args
        .given
        .iter()
        .map(|(n, v)| {
            format!(
                "'{}': {:?}",
                n.trim_start_matches('-').replace('-', "_"),
                v.join(" ")
            )
        })
        .collect();
    format!(
        "non-default args: {{'model_tag': '{}', {}}}",
        args.model,
        non_default.join(", ")
    )
}

/// A group worker's (node rank > 0) start-up lines: no API server.
fn log_startup_worker(args: &Args, version: &str, g: &Group) {
    let mode = args.mode;
    match mode {
        Mode::Vllm => {
            group::info(mode, g, &format!("vLLM version {version}"));
            group::info(mode, g, &non_default_args(args));
            group::info(
                mode,
                g,
                &format!(
                    "Launching headless node rank {} of {} (no API server), tensor_parallel_size={}",
                    g.rank, g.nnodes, args.tp
                ),
            );
        }
        Mode::Sglang => {
            log_sglang(&format!(
                "server_args=ServerArgs(model_path='{}', tp_size={}, nnodes={}, node_rank={}, dist_init_addr='{}')",
                args.model,
                args.tp,
                g.nnodes,
                g.rank,
                g.endpoint()
            ));
            group::info(
                mode,
                g,
                &format!(
                    "node rank {} of {}: no HTTP server on this node",
                    g.rank, g.nnodes
                ),
            );
        }
    }
}

/// Logs the progress lines a real engine prints before it listens.
fn log_startup(args: &Args, version: &str) {
    match args.mode {
        Mode::Vllm => {
            vllm_log(&format!("vLLM API server version {version}"));
            vllm_log(&non_default_args(args));
            log(
                "APIServer",
                "INFO",
                "model.py:547",
                "Resolved architecture: FakeForCausalLM",
            );
            log(
                "APIServer",
                "INFO",
                "model.py:1510",
                "Using max model len 4096",
            );
            log(
                "EngineCore_0",
                "INFO",
                "core.py:77",
                &format!(
                    "Initializing a V1 LLM engine (v{version}) with config: model='{}', tensor_parallel_size={}",
                    args.model, args.tp
                ),
            );
            log(
                "EngineCore_0",
                "INFO",
                "rocm.py:289",
                "Using Triton Attention backend on V1 engine.",
            );
        }
        Mode::Sglang => {
            log_sglang(&format!(
                "server_args=ServerArgs(model_path='{}', host='{}', port={}, tp_size={})",
                args.model, args.host, args.port, args.tp
            ));
            log_sglang("Attention backend not explicitly specified. Use aiter backend by default.");
            log_sglang("Load weight begin. avail mem=180.00 GB");
        }
    }
}

fn log_loaded(args: &Args, load: Duration) {
    let secs = load.as_secs_f64();
    match args.mode {
        Mode::Vllm => {
            engine_log(&format!("Loading weights took {secs:.2} seconds"));
            engine_log(&format!(
                "Model loading took 1.1200 GiB and {secs:.6} seconds"
            ));
            log(
                "EngineCore_0",
                "INFO",
                "gpu_worker.py:298",
                "Available KV cache memory: 150.00 GiB",
            );
            log(
                "EngineCore_0",
                "INFO",
                "kv_cache_utils.py:1087",
                "GPU KV cache size: 1,400,000 tokens",
            );
            log(
                "EngineCore_0",
                "INFO",
                "core.py:210",
                &format!(
                    "init engine (profile, create kv cache, warmup model) took {secs:.2} seconds"
                ),
            );
            vllm_log("Supported_tasks: ['generate']");
            let host = if args.host.is_empty() {
                "0.0.0.0"
            } else {
                &args.host
            };
            vllm_log(&format!(
                "Starting vLLM API server 0 on http://{host}:{}",
                args.port
            ));
            vllm_log("Available routes are:");
            for route in [
                "/health",
                "/v1/models",
                "/version",
                "/v1/completions",
                "/v1/chat/completions",
                "/metrics",
            ] {
                log(
                    "APIServer",
                    "INFO",
                    "launcher.py:37",
                    &format!("Route: {route}"),
                );
            }
            olog!(
                "(APIServer pid={}) INFO:     Started server process [{}]",
                std::process::id(),
                std::process::id()
            );
            olog!(
                "(APIServer pid={}) INFO:     Waiting for application startup.",
                std::process::id()
            );
            olog!(
                "(APIServer pid={}) INFO:     Application startup complete.",
                std::process::id()
            );
        }
        Mode::Sglang => {
            log_sglang(
                "Load weight end. type=FakeForCausalLM, dtype=torch.bfloat16, avail mem=178.00 GB, mem usage=2.00 GB.",
            );
            log_sglang(
                "KV Cache is allocated. #tokens: 1400000, K size: 70.00 GB, V size: 70.00 GB",
            );
            log_sglang(
                "max_total_num_tokens=1400000, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=1024, context_len=4096, available_gpu_mem=30.00 GB",
            );
        }
    }
}

/// Binds (but does not listen on) an IPv4 TCP socket, like vLLM's `setup_server()`, so the
/// port is taken at once but connections are refused until `listen()`.
fn bind_only(ip: Ipv4Addr, port: u16) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket syscalls on a fresh fd we own; the sockaddr is fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(owned)
    }
}

fn listen_on(fd: OwnedFd) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 1024) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let std_listener = std::net::TcpListener::from(fd);
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

fn host_ip(host: &str) -> Option<Ipv4Addr> {
    match host {
        "" => Some(Ipv4Addr::UNSPECIFIED),
        "localhost" => Some(Ipv4Addr::LOCALHOST),
        h => h.parse().ok(),
    }
}

/// A uvicorn log line on stdout (vLLM prefixes its process tag).
fn uvicorn(mode: Mode, msg: &str) {
    match mode {
        Mode::Vllm => olog!("(APIServer pid={}) INFO:     {msg}", std::process::id()),
        Mode::Sglang => olog!("INFO:     {msg}"),
    }
}

/// Prints the failure text the way Python prints an uncaught exception and returns the code.
fn fail(text: &str, code: i32) -> i32 {
    elog!("Traceback (most recent call last):");
    elog!(
        "  File \"/usr/local/lib/python3.12/dist-packages/fake_engine/main.py\", line 1, in <module>"
    );
    elog!("{text}");
    code
}

/// vLLM's runtime engine death, seen from its API server: the engine core is gone, the
/// server logs `EngineDeadError`, shuts uvicorn down cleanly and exits **0** (vLLM 0.32.0,
/// measured by a SIGKILL of `VLLM::EngineCore`).
fn engine_dead(st: &State) -> ! {
    engine_dead_with(st, 0)
}

/// A group leader whose node rank went away, at its next completion: gloo's error, then the
/// engine death of `engine_dead`, but exit **1**.
fn group_dead(st: &State) -> ! {
    let peer = st
        .group_lost_peer
        .lock()
        .ok()
        .and_then(|p| *p)
        .map(|p| format!("[{}]:{}", p.ip(), p.port()))
        .unwrap_or_else(|| "unknown".to_string());
    log_err(
        "EngineCore_0",
        "ERROR",
        "core.py:710",
        &format!(
            "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer {peer}"
        ),
    );
    engine_dead_with(st, 1)
}

/// A vLLM-format log line on stderr.
fn log_err(tag: &str, level: &str, file: &str, msg: &str) {
    elog!(
        "({tag} pid={}) {level} {} [{file}] {msg}",
        std::process::id(),
        procs::timestamp()
    );
}

/// `engine_dead` with the exit code given.
fn engine_dead_with(st: &State, code: i32) -> ! {
    log(
        "APIServer",
        "WARNING",
        "core_client.py:817",
        "[shutdown] MPClient: engine core exited unexpectedly; starting cleanup",
    );
    st.dead.store(true, Ordering::SeqCst);
    log(
        "EngineCore_0",
        "ERROR",
        "core.py:710",
        "EngineCore encountered a fatal error.",
    );
    log(
        "APIServer",
        "ERROR",
        "async_llm.py:480",
        "AsyncLLM output_handler failed.",
    );
    elog!(
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."
    );
    log(
        "APIServer",
        "ERROR",
        "launcher.py:101",
        "Engine failed, terminating server.",
    );
    olog!(
        "(APIServer pid={}) INFO:     Shutting down",
        std::process::id()
    );
    olog!(
        "(APIServer pid={}) INFO:     Finished server process [{}]",
        std::process::id(),
        std::process::id()
    );
    std::process::exit(code);
}

/// Dies the way FAKE_CRASH_* says: engine death with exit 0, a signal, or an exit code.
fn crash(st: &State) -> ! {
    if env_flag("FAKE_EXIT0_ENGINE_DEATH") {
        engine_dead(st);
    }
    let text = env("FAKE_CRASH_TEXT").unwrap_or_else(|| {
        "RuntimeError: Engine core proc EngineCore_0 died unexpectedly, shutting down client."
            .to_string()
    });
    elog!("{text}");
    if let Some(sig) = env("FAKE_CRASH_SIGNAL") {
        let num = signal_number(&sig);
        match num {
            Some(n) => {
                // SAFETY: restoring the default disposition and raising a signal at ourselves.
                unsafe {
                    libc::signal(n, libc::SIG_DFL);
                    libc::kill(libc::getpid(), n);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            None => elog!("fake-engine: unknown FAKE_CRASH_SIGNAL={sig:?}"),
        }
    }
    std::process::exit(env_num("FAKE_CRASH_EXIT_CODE", 1))
}

/// `9`, `KILL`, `SIGKILL` → 9 (and the other common names).
fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Some(match name.as_str() {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "SEGV" => libc::SIGSEGV,
        "ABRT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        _ => return None,
    })
}

/// The whole engine run; returns the process exit code.
pub async fn run(args: Args, start_no: u64, group: Option<Group>) -> i32 {
    let version = fake_version(args.mode);
    procs::write_state("main.pid", &format!("{}\n", std::process::id()));
    let ignore_term = env_flag("FAKE_IGNORE_TERM");
    if ignore_term {
        procs::ignore_term(false);
    }
    // Handlers first, so a stop request during start-up is never lost to the default action.
    let mut term = if ignore_term {
        None
    } else {
        signal(SignalKind::terminate()).ok()
    };
    let mut int = signal(SignalKind::interrupt()).ok();
    let worker_of = group.clone().filter(|g| !g.is_leader());
    match &worker_of {
        Some(g) => log_startup_worker(&args, &version, g),
        None => log_startup(&args, &version),
    }
    let workers = procs::spawn_workers();
    let orphans = procs::spawn_orphans();
    let holders: Vec<i32> = workers.iter().chain(orphans.iter()).copied().collect();
    procs::hold_vram(&holders);

    let load = env_secs("FAKE_LOAD_SECS", 0.5);
    let st = Arc::new(State {
        version,
        start: Instant::now(),
        ready: AtomicBool::new(false),
        dead: AtomicBool::new(false),
        hang_after: env("FAKE_HANG_AFTER_SECS").map(|_| env_secs("FAKE_HANG_AFTER_SECS", 0.0)),
        crash_after_requests: env("FAKE_CRASH_AFTER_REQUESTS")
            .map(|_| env_num("FAKE_CRASH_AFTER_REQUESTS", 0)),
        requests: AtomicU64::new(0),
        running: AtomicI64::new(0),
        prompt_tokens: AtomicU64::new(0),
        generation_tokens: AtomicU64::new(0),
        token_delay: Duration::from_millis(env_num("FAKE_TOKEN_DELAY_MS", 5)),
        prefill: Duration::from_millis(env_num("FAKE_PREFILL_MS", 0)),
        stream_tokens: env_num("FAKE_STREAM_TOKENS", 8),
        hang_completions: env_flag("FAKE_HANG_COMPLETIONS"),
        hang_completions_after: env("FAKE_HANG_COMPLETIONS_AFTER")
            .and_then(|v| v.trim().parse().ok()),
        stall_after: env("FAKE_STREAM_STALL_AFTER").map(|_| env_num("FAKE_STREAM_STALL_AFTER", 0)),
        access_log: !args
            .given
            .iter()
            .any(|(n, _)| n == "--disable-uvicorn-access-log"),
        group_broken: Arc::new(AtomicBool::new(false)),
        group_lost_peer: Arc::new(std::sync::Mutex::new(None)),
        group_dying: AtomicBool::new(false),
        args,
    });

    if env("FAKE_CRASH_AFTER_SECS").is_some() {
        let after = env_secs("FAKE_CRASH_AFTER_SECS", 0.0);
        let st2 = st.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            crash(&st2);
        });
    }

    // Start failure (FAKE_FAIL_AT_START, or the first FAKE_FAIL_FIRST_N_STARTS starts).
    let fail_first: u64 = env_num("FAKE_FAIL_FIRST_N_STARTS", 0);
    let fail_text = env("FAKE_FAIL_AT_START").or_else(|| {
        (start_no <= fail_first).then(|| {
            env("FAKE_FAIL_FIRST_TEXT").unwrap_or_else(|| {
                "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_0': 1}".to_string()
            })
        })
    });
    if let Some(text) = fail_text {
        tokio::time::sleep(env_secs("FAKE_FAIL_DELAY_SECS", 0.0)).await;
        procs::stop_workers(&workers, Duration::from_secs(2));
        return fail(&text, env_num("FAKE_FAIL_EXIT_CODE", 1));
    }

    // A group worker (node rank > 0): no HTTP server at all; join the leader and hold on.
    if let Some(g) = &worker_of {
        let lost = tokio::select! {
            code = group::work(g, st.args.mode, load) => Some(code),
            _ = recv(&mut term) => None,
            _ = recv(&mut int) => None,
        };
        if let Some(code) = lost {
            procs::stop_workers(&workers, Duration::from_secs(2));
            return code;
        }
        tokio::time::sleep(env_secs("FAKE_SHUTDOWN_SECS", 0.0)).await;
        procs::stop_workers(&workers, Duration::from_secs(2));
        return env_num("FAKE_EXIT_CODE_ON_TERM", 0);
    }

    let Some(ip) = host_ip(&st.args.host) else {
        return fail(
            &format!(
                "socket.gaierror: [Errno -2] Name or service not known: '{}'",
                st.args.host
            ),
            1,
        );
    };
    let bound = match bind_only(ip, st.args.port) {
        Ok(fd) => fd,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            return fail(
                &format!("OSError: [Errno {errno}] {}", strip_os_error(&e)),
                1,
            );
        }
    };
    // A group leader: the rendezvous port is taken before loading.
    let mode = st.args.mode;
    let mut rendezvous = match group.as_ref().filter(|g| g.is_leader()) {
        Some(g) => match group::bind(g).await {
            Ok(l) => Some((g.clone(), l)),
            Err(text) => {
                procs::stop_workers(&workers, Duration::from_secs(2));
                return fail(&text, 1);
            }
        },
        None => None,
    };
    let listener = match st.args.mode {
        Mode::Vllm => {
            // vLLM: the port is bound but connections are refused until the group formed and
            // the engine is loaded.
            let st2 = st.clone();
            let rendezvous = rendezvous.take();
            let loaded = tokio::select! {
                formed = async move {
                    form_group(rendezvous, mode, &st2).await?;
                    tokio::time::sleep(load).await;
                    Ok::<(), ()>(())
                } => Some(formed),
                _ = recv(&mut term) => None,
                _ = recv(&mut int) => None,
            };
            match loaded {
                None => {
                    // vLLM's handler raises KeyboardInterrupt("terminated") during init.
                    elog!("KeyboardInterrupt: terminated");
                    procs::stop_workers(&workers, Duration::from_secs(2));
                    return 1;
                }
                Some(Err(())) => {
                    procs::stop_workers(&workers, Duration::from_secs(2));
                    return 1;
                }
                Some(Ok(())) => {}
            }
            log_loaded(&st.args, load);
            st.ready.store(true, Ordering::SeqCst);
            match listen_on(bound) {
                Ok(l) => l,
                Err(e) => return fail(&format!("OSError: {e}"), 1),
            }
        }
        Mode::Sglang => match listen_on(bound) {
            Ok(l) => {
                let st2 = st.clone();
                let rendezvous = rendezvous.take();
                let workers2 = workers.clone();
                tokio::spawn(async move {
                    if form_group(rendezvous, mode, &st2).await.is_err() {
                        procs::stop_workers(&workers2, Duration::from_secs(2));
                        std::process::exit(1);
                    }
                    tokio::time::sleep(load).await;
                    log_loaded(&st2.args, load);
                    st2.ready.store(true, Ordering::SeqCst);
                    log_sglang("The server is fired up and ready to roll!");
                });
                elog!(
                    "INFO:     Uvicorn running on http://{}:{} (Press CTRL+C to quit)",
                    st.args.host,
                    actual_port(&l, st.args.port)
                );
                l
            }
            Err(e) => return fail(&format!("OSError: {e}"), 1),
        },
    };
    procs::write_state(
        "port",
        &format!("{}\n", actual_port(&listener, st.args.port)),
    );
    procs::write_state("ready", &format!("{}\n", std::process::id()));

    // vLLM: worker 0 plays the EngineCore process; when it dies, the API server follows.
    let core = workers
        .first()
        .copied()
        .filter(|_| st.args.mode == Mode::Vllm);
    loop {
        tokio::select! {
            _ = procs::gone(core.unwrap_or(0)), if core.is_some() => engine_dead(&st),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let st2 = st.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(req, st2.clone(), peer));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => elog!("fake-engine: accept failed: {e}"),
            },
            _ = recv(&mut term) => break,
            _ = recv(&mut int) => break,
        }
    }
    drop(listener);
    // Graceful shutdown, like uvicorn + vLLM's engine teardown.
    olog!(
        "(APIServer pid={}) INFO:     Shutting down",
        std::process::id()
    );
    tokio::time::sleep(env_secs("FAKE_SHUTDOWN_SECS", 0.0)).await;
    procs::stop_workers(&workers, Duration::from_secs(2));
    olog!(
        "(APIServer pid={}) INFO:     Finished server process [{}]",
        std::process::id(),
        std::process::id()
    );
    env_num("FAKE_EXIT_CODE_ON_TERM", 0)
}

/// A group leader's wait for the other node ranks, then the watch on their connections;
/// `Ok` at once without a group. `Err`: the group never formed (logged).
async fn form_group(
    rendezvous: Option<(Group, TcpListener)>,
    mode: Mode,
    st: &Arc<State>,
) -> Result<(), ()> {
    if let Some((g, l)) = rendezvous {
        let members = group::gather(&g, mode, l).await?;
        group::watch(
            &g,
            mode,
            members,
            st.group_broken.clone(),
            st.group_lost_peer.clone(),
        );
    }
    Ok(())
}

/// Python's OSError text: `Address already in use`, without Rust's ` (os error 98)` suffix.
pub(crate) fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn actual_port(l: &TcpListener, fallback: u16) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(fallback)
}

/// Waits for the next signal, or forever when the signal is not handled.
async fn recv(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// A prefill: `d` of CPU burnt on a blocking thread (the server keeps answering /health, as
/// a real engine's API server does while its engine core computes).
async fn prefill(d: Duration) {
    if d.is_zero() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        let end = std::time::Instant::now() + d;
        let mut x = 1u64;
        while std::time::Instant::now() < end {
            for _ in 0..10_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            std::hint::black_box(x);
        }
    })
    .await;
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn error_json(status: StatusCode, kind: &str, msg: &str) -> Response<Body> {
    json_resp(
        status,
        &json!({"object": "error", "message": msg, "type": kind, "param": null, "code": status.as_u16()}),
    )
}

/// A response body fed from a channel: one frame per SSE chunk, flushed as it comes.
struct ChanBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if st.hung() {
        // Hang: keep the connection open and never answer.
        std::future::pending::<()>().await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(req, &st).await;
    if st.access_log {
        let status = resp.status();
        let reason = status.canonical_reason().unwrap_or("");
        let line = format!(
            "{peer} - \"{method} {path} HTTP/1.1\" {} {reason}",
            status.as_u16()
        );
        uvicorn(st.args.mode, &line);
    }
    Ok(resp)
}

fn authorized(req: &Request<Incoming>, st: &State, path: &str) -> bool {
    if st.args.api_keys.is_empty() {
        return true;
    }
    let protected = match st.args.mode {
        Mode::Vllm => path.starts_with("/v1"),
        Mode::Sglang => !(path.starts_with("/health") || path.starts_with("/metrics")),
    };
    if !protected {
        return true;
    }
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| st.args.api_keys.iter().any(|a| a == k))
}

async fn route(req: Request<Incoming>, st: &Arc<State>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if !authorized(&req, st, &path) {
        return json_resp(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"}));
    }
    let ready = st.ready.load(Ordering::SeqCst);
    let dead = st.dead.load(Ordering::SeqCst);
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health" | "/health_generate")
        | (&Method::GET | &Method::POST, "/ping") => {
            if path == "/ping" && st.args.mode == Mode::Sglang {
                return full(StatusCode::OK, "text/plain", "");
            }
            if !ready || dead {
                full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "")
            } else {
                full(StatusCode::OK, "text/plain", "")
            }
        }
        (&Method::GET, "/v1/models") => {
            let data: Vec<Value> = st
                .args
                .served_names
                .iter()
                .map(|n| {
                    json!({"id": n, "object": "model", "created": now_secs(),
                       "owned_by": match st.args.mode { Mode::Vllm => "vllm", Mode::Sglang => "sglang" },
                       "root": st.args.model, "parent": null, "max_model_len": 4096})
                })
                .collect();
            json_resp(StatusCode::OK, &json!({"object": "list", "data": data}))
        }
        (&Method::GET, "/version") => json_resp(StatusCode::OK, &json!({"version": st.version})),
        (&Method::GET, "/get_model_info") => json_resp(
            StatusCode::OK,
            &json!({"model_path": st.args.model, "tokenizer_path": st.args.model, "is_generation": true}),
        ),
        (&Method::GET, "/metrics") => {
            full(StatusCode::OK, "text/plain; version=0.0.4", metrics(st))
        }
        (&Method::POST, "/v1/completions") => completion(req, st, false).await,
        (&Method::POST, "/v1/chat/completions") => completion(req, st, true).await,
        _ => json_resp(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
    }
}

fn metrics(st: &State) -> String {
    let name = st.args.served_names.first().cloned().unwrap_or_default();
    let running = st.running.load(Ordering::SeqCst);
    let prompt = st.prompt_tokens.load(Ordering::SeqCst);
    let gen_tokens = st.generation_tokens.load(Ordering::SeqCst);
    match st.args.mode {
        Mode::Vllm => format!(
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
             # TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{engine=\"0\",model_name=\"{name}\"}} {running}\n\
             # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{engine=\"0\",model_name=\"{name}\"}} 0\n\
             # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE vllm:kv_cache_usage_perc gauge\n\
             vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"{name}\"}} 0.0\n\
             # HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
             # TYPE vllm:prompt_tokens_total counter\n\
             vllm:prompt_tokens_total{{engine=\"0\",model_name=\"{name}\"}} {prompt}\n\
             # HELP vllm:generation_tokens_total Number of generation tokens processed.\n\
             # TYPE vllm:generation_tokens_total counter\n\
             vllm:generation_tokens_total{{engine=\"0\",model_name=\"{name}\"}} {gen_tokens}\n"
        ),
        Mode::Sglang => format!(
            "# TYPE sglang:num_running_reqs gauge\n\
             sglang:num_running_reqs{{model_name=\"{name}\"}} {running}\n\
             # TYPE sglang:num_queue_reqs gauge\n\
             sglang:num_queue_reqs{{model_name=\"{name}\"}} 0\n\
             # TYPE sglang:prompt_tokens_total counter\n\
             sglang:prompt_tokens_total{{model_name=\"{name}\"}} {prompt}\n\
             # TYPE sglang:generation_tokens_total counter\n\
             sglang:generation_tokens_total{{model_name=\"{name}\"}} {gen_tokens}\n"
        ),
    }
}

/// Counts the whitespace-separated words of the prompt or messages (a stand-in for tokens).
fn prompt_len(body: &Value, chat: bool) -> u64 {
    let words = |v: &Value| {
        v.as_str()
            .map(|s| s.split_whitespace().count() as u64)
            .unwrap_or(0)
    };
    if chat {
        body.get("messages")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .map(|x| x.get("content").map(words).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        match body.get("prompt") {
            Some(Value::Array(a)) => a.iter().map(words).sum(),
            Some(p) => words(p),
            None => 0,
        }
    }
}

/// Logs vLLM's `Aborted request` line when dropped before `finish`: the client (or the proxy)
/// went away before the answer was complete, which is how the real engine notices it.
struct AbortLog {
    id: String,
    finished: bool,
}

impl AbortLog {
    fn new(id: &str) -> Self {
        AbortLog {
            id: id.to_string(),
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for AbortLog {
    fn drop(&mut self) {
        if !self.finished {
            log(
                "APIServer",
                "INFO",
                "async_llm.py:452",
                &format!("Aborted request {}.", self.id),
            );
        }
    }
}

/// Decrements the running gauge when a request (or its stream) ends, however it ends.
struct RunningGuard(Arc<State>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn completion(req: Request<Incoming>, st: &Arc<State>, chat: bool) -> Response<Body> {
    if !st.ready.load(Ordering::SeqCst) || st.dead.load(Ordering::SeqCst) {
        return error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "The engine is not ready.",
        );
    }
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("cannot read body: {e}"),
            );
        }
    };
    if st.group_broken.load(Ordering::SeqCst) {
        // A node rank is gone: this request is where the engine hits the broken collective.
        if !st.group_dying.swap(true, Ordering::SeqCst) {
            let st2 = st.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                group_dead(&st2);
            });
        }
        return error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "EngineDeadError",
            "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        );
    }
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid JSON: {e}"),
            );
        }
    };
    let model = match body.get("model").and_then(Value::as_str) {
        Some(m) if !st.args.served_names.iter().any(|n| n == m) => {
            return error_json(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{m}` does not exist."),
            );
        }
        Some(m) => m.to_string(),
        None => st.args.served_names.first().cloned().unwrap_or_default(),
    };
    let max_tokens = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(st.stream_tokens);
    let n = max_tokens.min(st.stream_tokens);
    let prompt = prompt_len(&body, chat);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let count = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let crash_after = st.crash_after_requests.is_some_and(|limit| count >= limit);
    st.running.fetch_add(1, Ordering::SeqCst);
    let guard = RunningGuard(st.clone());
    st.prompt_tokens.fetch_add(prompt, Ordering::SeqCst);
    let id = format!("{}-{count}", if chat { "chatcmpl" } else { "cmpl" });
    let created = now_secs();
    let usage =
        json!({"prompt_tokens": prompt, "total_tokens": prompt + n, "completion_tokens": n});
    let abort_log = AbortLog::new(&id);

    if st.hang_completions || st.hang_completions_after.is_some_and(|n| count > n) {
        // Never answer: the request stays running until the client goes away (hyper then
        // drops this future, and with it the guard and the abort log).
        let _held = (guard, abort_log);
        let never: Infallible = std::future::pending().await;
        match never {}
    }

    if !stream {
        prefill(st.prefill).await;
        tokio::time::sleep(st.token_delay * n as u32).await;
        st.generation_tokens.fetch_add(n, Ordering::SeqCst);
        let text: String = (0..n).map(token).collect();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "length", "stop_reason": null})
        };
        let object = if chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        drop(guard);
        abort_log.finish();
        if crash_after {
            schedule_crash(st.clone());
        }
        return json_resp(
            StatusCode::OK,
            &json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice], "usage": usage}),
        );
    }

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let st2 = st.clone();
    let stall_after = st.stall_after;
    tokio::spawn(async move {
        let _guard = guard;
        let abort_log = abort_log;
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let chunk = |choice: Value| {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
            Bytes::from(format!("data: {v}\n\n"))
        };
        prefill(st2.prefill).await;
        if chat {
            let first = chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            );
            if tx.send(first).await.is_err() {
                return;
            }
        }
        for i in 0..n {
            if stall_after == Some(i) {
                // Stuck mid-stream: nothing more, never the end, until the reader goes away.
                tx.closed().await;
                return;
            }
            tokio::time::sleep(st2.token_delay).await;
            let finish = if i + 1 == n {
                json!("length")
            } else {
                Value::Null
            };
            let choice = if chat {
                json!({"index": 0, "delta": {"content": token(i)}, "logprobs": null, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": token(i), "logprobs": null, "finish_reason": finish, "stop_reason": null})
            };
            if tx.send(chunk(choice)).await.is_err() {
                return; // client went away
            }
            st2.generation_tokens.fetch_add(1, Ordering::SeqCst);
        }
        if include_usage {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage});
            let _ = tx.send(Bytes::from(format!("data: {v}\n\n"))).await;
        }
        if tx
            .send(Bytes::from_static(b"data: [DONE]\n\n"))
            .await
            .is_ok()
        {
            abort_log.finish();
        }
        drop(tx);
        if crash_after {
            schedule_crash(st2.clone());
        }
    });
    let mut resp = Response::new(ChanBody(rx).boxed());
    if let Ok(v) = "text/event-stream; charset=utf-8".parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Crashes shortly after the current response has been written.
fn schedule_crash(st: Arc<State>) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        crash(&st);
    });
}

fn token(i: u64) -> String {
    const WORDS: [&str; 8] = [
        " The", " quick", " brown", " fox", " jumps", " over", " the", " dog",
    ];
    WORDS[(i % 8) as usize].to_string()
}
