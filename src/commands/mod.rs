//! One function per subcommand: it takes what clap parsed, calls the library and prints;
//! `main` maps what it returns to the exit status. Nothing outside `commands` imports it.

pub mod download;
pub mod gpus;
pub mod healthcheck;
pub mod host;
pub mod inspect;
pub mod serve;

use crate::cli::{Cli, Command};

/// Runs the parsed command line; the Ok value is the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Serve(a) => serve::run(g, *a),
        Command::Plan(a) => inspect::plan(g, &a),
        Command::DryRun(a) => inspect::dry_run(g, &a),
        Command::Recipes(a) => inspect::recipes(g, &a),
        Command::Gpus(a) => gpus::run(g, &a),
        Command::Healthcheck(a) => healthcheck::healthcheck(&a),
        Command::Status(a) => healthcheck::status(&a),
        Command::Download(a) => download::run(&a),
        Command::Launch(a) => host::launch(g, a),
        Command::List(a) => host::list(g, &a),
        Command::Stop(a) => host::stop(g, &a),
    }
}
