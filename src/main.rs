//! Entry point: parse, set up logging, run, map the result to an exit status. Nothing else.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use aim_engine::{cli, commands, exit, logging};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    aim_engine::memory::one_arena();
    let model_in_env = ["AIM_MODEL_ID", "AIM_ID"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    let args = cli::with_default_command(std::env::args_os().collect(), model_in_env);
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // A bad value from an AIM_* variable is named by the variable, not the flag.
            match cli::env_named_error(&e, &args, |k| std::env::var(k).ok()) {
                Some(message) => {
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                }
                None => {
                    let _ = e.print();
                }
            }
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.global);
    if prints_only(&cli) {
        // `aim-engine plan | head`: end quietly at a closed pipe, as other CLI tools do,
        // instead of failing a print. Commands that run or supervise keep SIGPIPE ignored.
        // SAFETY: plain syscall, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Through the log path: a closed stderr must not turn an exit into an abort.
            logging::stderr().send(format!("aim-engine: error: {err:#}\n").into_bytes());
            exit::code_of(&err)
        }
    };
    logging::flush(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

/// The commands that only print (a report, a plan, a table).
fn prints_only(cli: &cli::Cli) -> bool {
    use cli::Command as C;
    matches!(
        cli.command,
        C::Plan(_) | C::DryRun(_) | C::Recipes(_) | C::Gpus(_) | C::List(_)
    )
}

fn init_logging(g: &cli::GlobalArgs) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    // `Targets`, not `EnvFilter`: the same `target=level` directives without span and field
    // filters, and without the regex engine they need (a smaller, leaner binary).
    let filter: Targets = g
        .log_filter()
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    logging::set_capacity(g.log_buffer);
    // Bounded and non-blocking (`logging`); tracing's own complaint about a failed write would
    // go to stderr with eprintln! and panic there.
    // The fmt builder filters at INFO on its own: let everything through it, `filter` decides.
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .log_internal_errors(false)
        .with_ansi(logging::colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(logging::TracingWriter);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match g.log_format {
        cli::LogFormat::Json => builder.json().finish().with(filter).init(),
        cli::LogFormat::Text => builder.with_target(false).finish().with(filter).init(),
    }
}
