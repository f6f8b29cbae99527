//! One function per subcommand; `main` maps what they return to the exit status.

pub mod gpus;
pub mod health;
pub mod host;
pub mod plan;
pub mod serve;

use crate::cli::{Cli, Command};

/// Runs the parsed command line; the Ok value is the exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Serve(a) => serve::run(g, a),
        Command::Plan(a) => plan::plan(g, &a),
        Command::DryRun(a) => plan::dry_run(g, &a),
        Command::Recipes(a) => plan::recipes(g, &a),
        Command::Gpus(a) => gpus::run(g, &a),
        Command::Healthcheck(a) => health::healthcheck(&a),
        Command::Status(a) => health::status(&a),
        Command::Launch(a) => host::launch(g, a),
        Command::List(a) => host::list(g, &a),
        Command::Stop(a) => host::stop(g, &a),
    }
}
