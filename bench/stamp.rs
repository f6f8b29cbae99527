//! Timing helper for bench/supervise_figures.sh (compiled there with rustc -O).
//! `stamp FILE exit CODE [...]`: append the wall clock in ns to FILE, exit CODE.
//! `stamp FILE wait [...]`: append, then sleep until a signal ends it.
//! `stamp FILE exec CMD ARGS...`: append, then exec CMD.
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: stamp FILE exit CODE | wait | exec CMD...");
        std::process::exit(2);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[1])
    {
        let _ = writeln!(f, "{now}");
    }
    match args[2].as_str() {
        "exit" => std::process::exit(args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1)),
        "wait" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "exec" => {
            let err = std::process::Command::new(&args[3]).args(&args[4..]).exec();
            eprintln!("stamp: exec {}: {err}", args[3]);
            std::process::exit(127);
        }
        _ => std::process::exit(2),
    }
}
