//! Entry point: parse, set up logging, run, map the result to an exit status. Nothing else.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use aim_engine::{cli, commands, exit};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::with_default_subcommand(std::env::args_os().collect());
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("aim-engine: error: {err:#}");
            ExitCode::from(exit::code_of(&err))
        }
    }
}

fn init_logging(g: &cli::GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&g.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder.with_target(false).init(),
    }
}
