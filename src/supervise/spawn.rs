//! Starting the engine: its environment (a pure function), its session, its signal state.
//!
//! The engine runs in its own session (setsid) so that one `killpg` reaches the workers that
//! Python multiprocessing leaves in the launcher's group. In the child, before exec, the
//! signal mask is emptied (std children inherit ours since Rust 1.66) and every disposition
//! is reset to default (we never ignore signals, but our parent may have, and PID 1 must not
//! pass that on). Only async-signal-safe calls run there: no allocation, no locks, no logs.
//!
//! The engine never outlives the supervisor. Before exec the child forks a watchdog that
//! stays in the engine's process group, holds the read end of a pipe whose only write end
//! is ours (close-on-exec, so no engine process keeps it), and blocks reading it. When we die
//! in any way, SIGKILL included, the write end closes, the read returns EOF and the watchdog
//! SIGKILLs its process group: the engine and every worker that stayed in its group. While
//! we live, every teardown kills that group, the watchdog with it. (PR_SET_PDEATHSIG would
//! reach only the engine's main process, and it fires when the forking *thread* exits.)

use super::reaper::{Reaper, Spawned};
use indexmap::IndexMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Variables passed from our environment to the engine by exact name.
pub const PASS_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "HOSTNAME",
    "TERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "TMPDIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "CUDA_VISIBLE_DEVICES",
];

/// Variables passed by prefix: locale, Hugging Face, the engines, ROCm/HIP, collectives,
/// PyTorch/Triton/OpenMP, Python, XDG dirs, TLS, and `FAKE_` for the test engine.
pub const PASS_PREFIXES: &[&str] = &[
    "LC_",
    "HF_",
    "HUGGING_FACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "VLLM_",
    "SGLANG_",
    "SGL_",
    "HIP_",
    "HSA_",
    "ROCR_",
    "ROCM_",
    "ROCBLAS_",
    "HIPBLASLT_",
    "AMD_",
    "AITER_",
    "GPU_",
    "NCCL_",
    "RCCL_",
    "TORCH_",
    "TORCHINDUCTOR_",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "MIOPEN_",
    "TRITON_",
    "PYTHON",
    "XDG_",
    "SSL_CERT_",
    "FAKE_",
];

/// Never passed on, even when a prefix or the launch names them: they belong to us (systemd
/// would attribute the engine's notifications to our unit; the watchdog is ours to ping).
pub const NEVER: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

fn passes(name: &str) -> bool {
    PASS_NAMES.contains(&name) || PASS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The engine's environment: the pass-through part of `ours`, then the launch's own variables
/// (which win), minus `NEVER`. `PYTHONUNBUFFERED=1` is added unless set: the engine's stdout
/// is a pipe to us, and Python would otherwise hold print() output in a block buffer.
pub fn build_env<I, K, V>(ours: I, launch: &IndexMap<String, String>) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let mut env: IndexMap<String, String> = IndexMap::new();
    for (k, v) in ours {
        let k = k.into();
        if passes(&k) {
            env.insert(k, v.into());
        }
    }
    for (k, v) in launch {
        env.insert(k.clone(), v.clone());
    }
    env.retain(|k, _| !NEVER.contains(&k.as_str()));
    env.entry("PYTHONUNBUFFERED".into())
        .or_insert_with(|| "1".into());
    env.into_iter().collect()
}

/// Our environment as UTF-8 pairs (others cannot be meant for the engine; they are skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Why a spawn failed, mapped to what the user should do.
#[derive(Debug)]
pub enum SpawnError {
    /// ENOENT: the launcher is not there.
    NotFound(String),
    /// EACCES / ENOEXEC: there but not runnable.
    NotExecutable(String, io::Error),
    Other(String, io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::NotFound(p) => write!(
                f,
                "engine command `{p}` not found: install the engine, put it on PATH, or point \
                 AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND at it"
            ),
            SpawnError::NotExecutable(p, e) => write!(
                f,
                "engine command `{p}` cannot be executed ({e}): check its permissions and \
                 interpreter line, or AIM_VLLM_COMMAND / AIM_SGLANG_COMMAND"
            ),
            SpawnError::Other(p, e) => write!(f, "cannot start engine command `{p}`: {e}"),
        }
    }
}

/// Spawns `argv` in a new session with `env` only, stdin from /dev/null and stdout/stderr
/// piped (see `logs`), through the reaper.
pub fn spawn_engine(
    reaper: &Reaper,
    argv: &[String],
    env: &[(String, String)],
) -> Result<Spawned, SpawnError> {
    let Some(program) = argv.first() else {
        return Err(SpawnError::NotFound(String::new()));
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watch = death_pipe_read_end().map_err(|e| SpawnError::Other(program.clone(), e))?;
    // SAFETY: the closure only makes async-signal-safe calls (setsid, sigemptyset,
    // sigprocmask, signal, fork, read, kill, _exit and fd calls) and touches no memory shared
    // with other threads.
    unsafe {
        cmd.pre_exec(move || child_setup(watch));
    }
    reaper.spawn(&mut cmd).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => SpawnError::NotFound(program.clone()),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
            SpawnError::NotExecutable(program.clone(), e)
        }
        _ => SpawnError::Other(program.clone(), e),
    })
}

/// The read end of the pipe whose write end only we hold (both close-on-exec), made once.
fn death_pipe_read_end() -> io::Result<libc::c_int> {
    static PIPE: std::sync::OnceLock<Result<libc::c_int, i32>> = std::sync::OnceLock::new();
    let r = PIPE.get_or_init(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        // Both ends stay open for the life of the process: the write end closes only when we
        // are gone.
        Ok(fds[0])
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// The watchdog (a fork of the child, before exec): waits for EOF on `watch` (the supervisor
/// is gone), then SIGKILLs its process group. Never returns.
///
/// # Safety
/// Only in a freshly forked child: async-signal-safe calls only.
unsafe fn watchdog(watch: libc::c_int) -> ! {
    // SAFETY: async-signal-safe calls on local data, in a forked child.
    unsafe {
        // Keep nothing of the engine's or std's: stdin is the pipe, stdout/stderr /dev/null
        // (the engine's log pipes must close when the engine's processes are gone), and
        // every other descriptor is closed (std's exec-status pipe among them, which the
        // parent reads until it closes).
        libc::dup2(watch, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..65536 {
                libc::close(fd);
            }
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(0, (&raw mut byte).cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
        }
        // The supervisor is gone: stop the engine's whole group (ourselves included).
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Runs in the forked child before exec.
fn child_setup(watch: libc::c_int) -> io::Result<()> {
    // SAFETY: async-signal-safe libc calls on local data.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
        // Handlers are reset by exec anyway; ignored signals are not. Every standard and
        // realtime signal goes back to its default (KILL and STOP cannot be changed, and
        // glibc refuses its internal 32 and 33, which every glibc program resets itself: for
        // those the calls fail harmlessly).
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // The watchdog, in the engine's new session and process group (see the module docs).
        match libc::fork() {
            0 => watchdog(watch),
            pid if pid < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_built_on_purpose() {
        let ours = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("HF_TOKEN", "hf_x"),
            ("HF_HOME", "/hf"),
            ("LC_ALL", "C.UTF-8"),
            ("VLLM_LOGGING_LEVEL", "DEBUG"),
            ("HIP_VISIBLE_DEVICES", "0,1,2,3"),
            ("NCCL_DEBUG", "INFO"),
            ("https_proxy", "http://proxy:3128"),
            ("FAKE_EXIT_CODE", "3"),
            ("PYTHONPATH", "/x"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("WATCHDOG_USEC", "30000000"),
            ("WATCHDOG_PID", "1"),
            ("AIM_API_KEY", "secret"),
            ("AIM_MODEL_ID", "m/n"),
            ("SECRET_DB_PASSWORD", "x"),
            ("INVOCATION_ID", "abc"),
        ];
        let mut launch = IndexMap::new();
        launch.insert("HIP_VISIBLE_DEVICES".to_string(), "4,5".to_string());
        launch.insert("VLLM_ROCM_USE_AITER".to_string(), "1".to_string());
        launch.insert("NOTIFY_SOCKET".to_string(), "/evil".to_string());
        let env = build_env(ours, &launch);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        for (k, want) in [
            ("PATH", Some("/usr/bin")),
            ("HOME", Some("/root")),
            ("HF_TOKEN", Some("hf_x")),
            ("HF_HOME", Some("/hf")),
            ("LC_ALL", Some("C.UTF-8")),
            ("VLLM_LOGGING_LEVEL", Some("DEBUG")),
            ("HIP_VISIBLE_DEVICES", Some("4,5")), // the launch wins
            ("VLLM_ROCM_USE_AITER", Some("1")),
            ("NCCL_DEBUG", Some("INFO")),
            ("https_proxy", Some("http://proxy:3128")),
            ("FAKE_EXIT_CODE", Some("3")),
            ("PYTHONPATH", Some("/x")),
            ("PYTHONUNBUFFERED", Some("1")),
            ("NOTIFY_SOCKET", None),
            ("WATCHDOG_USEC", None),
            ("WATCHDOG_PID", None),
            ("AIM_API_KEY", None),
            ("AIM_MODEL_ID", None),
            ("SECRET_DB_PASSWORD", None),
            ("INVOCATION_ID", None),
        ] {
            assert_eq!(get(k), want, "{k}");
        }
        // A user's own PYTHONUNBUFFERED is kept.
        let env = build_env([("PYTHONUNBUFFERED", "0")], &IndexMap::new());
        assert_eq!(env, vec![("PYTHONUNBUFFERED".into(), "0".into())]);
    }
}
