//! `fake-engine`: a test double that behaves like vLLM and SGLang at the process and HTTP level
//! (command line, load time, endpoints, logs, exit codes, process tree) and injects faults chosen
//! by `FAKE_*` environment variables. See README.md for every variable. Never installed.

/// `eprintln!` that never panics: the supervisor may close our stderr pipe (EPIPE), and a
/// dying log reader must not turn into a panic in the engine.
macro_rules! elog {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics (see `elog!`).
macro_rules! olog {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

mod args;
mod group;
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
                elog!("fake-engine: ignoring {name}={v:?}: not a number");
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

/// Parses `FAKE_START_<n>` overrides: `KEY=VALUE` pairs separated by `;` (values may hold `=`
/// and `,`; a pair without `=` is skipped with a warning).
pub fn parse_overrides(spec: &str) -> Vec<(String, String)> {
    spec.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| match p.split_once('=') {
            Some((k, v)) => Some((k.trim().to_string(), v.to_string())),
            None => {
                elog!("fake-engine: ignoring override {p:?}: expected KEY=VALUE");
                None
            }
        })
        .collect()
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
            "__fake-vram-watch" => procs::vram_watch_main(),
            _ => {}
        }
    }
    if argv.iter().any(|a| a == "--version" || a == "-v") {
        let (mode, _) = args::detect(&argv);
        olog!("{}", fake_version(mode));
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
            elog!("{}", e.0);
            std::process::exit(2);
        }
    };
    let group = match group::parse(&parsed) {
        Ok(g) => g,
        Err(e) => {
            elog!("{}", e.0);
            std::process::exit(2);
        }
    };
    // Count this start and apply its FAKE_START_<n> overrides while still single-threaded
    // (changing the environment is only sound before other threads exist).
    let start_no = procs::count_start();
    if let Some(spec) = env(&format!("FAKE_START_{start_no}")) {
        for (k, v) in parse_overrides(&spec) {
            // SAFETY: no other thread exists yet (the runtime is built below).
            unsafe { std::env::set_var(k, v) };
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            elog!("fake-engine: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(server::run(parsed, start_no, group));
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_split_on_semicolons_and_first_equals() {
        let got = parse_overrides("FAKE_LOAD_SECS=2; FAKE_CRASH_TEXT=a=b, c;bogus;;");
        assert_eq!(
            got,
            vec![
                ("FAKE_LOAD_SECS".to_string(), "2".to_string()),
                ("FAKE_CRASH_TEXT".to_string(), "a=b, c".to_string()),
            ]
        );
    }
}
