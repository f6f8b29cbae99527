//! `fake-engine`: a test double that behaves like vLLM and SGLang at the process and HTTP level
//! (command line, load time, endpoints, logs, exit codes, process tree) and injects faults chosen
//! by `FAKE_*` environment variables. See README.md for every variable. Never installed.

mod args;
mod procs;
mod server;

use std::time::Duration;

use args::Mode;

/// Reads an env var, treating empty as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads a numeric env var with a default; a malformed value is reported and the default used.
pub fn env_num<T: std::str::FromStr + Copy>(name: &str, default: T) -> T {
    match env(name) {
        None => default,
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("fake-engine: ignoring {name}={v:?}: not a number");
                default
            }
        },
    }
}

/// Seconds (float) from an env var as a Duration.
pub fn env_secs(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(env_num(name, default).max(0.0))
}

pub fn env_flag(name: &str) -> bool {
    matches!(env(name).as_deref(), Some("1" | "true" | "yes" | "on"))
}

/// The version the fake reports (`--version`, `/version`, log lines).
pub fn fake_version(mode: Mode) -> String {
    env("FAKE_VERSION").unwrap_or_else(|| match mode {
        Mode::Vllm => "0.11.1".to_string(),
        Mode::Sglang => "0.5.3".to_string(),
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // Hidden helper modes (re-exec of this binary for workers, orphans and the VRAM releaser).
    if let Some(first) = argv.first() {
        match first.as_str() {
            "__fake-worker" => procs::worker_main(&argv[1..]),
            "__fake-orphan-parent" => procs::orphan_parent_main(&argv[1..]),
            "__fake-orphan" => procs::orphan_main(&argv[1..]),
            "__fake-vram-release" => procs::vram_release_main(&argv[1..]),
            _ => {}
        }
    }
    if argv.iter().any(|a| a == "--version" || a == "-v") {
        let (mode, _) = args::detect(&argv);
        println!("{}", fake_version(mode));
        std::process::exit(0);
    }
    let (mode, rest) = args::detect(&argv);
    let extra: Vec<String> = env("FAKE_EXTRA_FLAGS")
        .map(|s| {
            s.split(',')
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let parsed = match args::parse(mode, rest, &fake_version(mode), &extra) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}", e.0);
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-engine: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(server::run(parsed));
    std::process::exit(code);
}
