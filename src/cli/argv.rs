//! Reading the command line before and around clap: the default command (`serve`) where the
//! first word is a model, and clap's errors for values that came from environment variables.

use super::{Cli, Command};
use std::ffi::OsString;

/// clap's message for a bad value that came from an environment variable, naming the
/// variable: clap names the flag (`invalid value 'fp9' for '--precision <PRECISION>'`) even
/// when the value was `AIM_PRECISION=fp9`. The value came from the variable when the variable
/// holds it and the command line does not give the flag (or, for MODEL and GPU_COUNT, the
/// value). None: not such an error, or the value is the command line's.
pub fn env_named_error(
    e: &clap::Error,
    argv: &[OsString],
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let text = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let shown = text(ContextKind::InvalidArg)?;
    let value = text(ContextKind::InvalidValue)?;
    let mut cmd = Cli::command();
    // Rendering an argument needs the built command (its value counts).
    cmd.build();
    let mut cmds = vec![&cmd];
    cmds.extend(cmd.get_subcommands());
    let arg = cmds
        .iter()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.to_string() == shown)?;
    let var = arg.get_env()?.to_str()?;
    if env(var).as_deref() != Some(value.as_str()) {
        return None;
    }
    let words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let on_command_line = match arg.get_long() {
        Some(long) => {
            let flag = format!("--{long}");
            words
                .iter()
                .any(|w| *w == flag || w.starts_with(&format!("{flag}=")))
        }
        None => words.iter().skip(1).any(|w| *w == value),
    };
    if on_command_line {
        return None;
    }
    let what = match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => arg.get_id().as_str().to_ascii_uppercase(),
    };
    Some(e.render().to_string().replace(
        &format!("'{shown}'"),
        &format!("{var} (the variable of {what})"),
    ))
}

/// Inserts `serve` when the first positional argument is not a subcommand, so that
/// `aim-engine Qwen/Qwen3-32B` and `docker run aim-engine:latest Qwen/Qwen3-32B` work.
pub fn with_default_subcommand(args: Vec<OsString>) -> Vec<OsString> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    // Global flags that take a value: skip the value when looking for the first positional.
    let takes_value: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .flat_map(|a| {
            let mut v = Vec::new();
            if let Some(l) = a.get_long() {
                v.push(format!("--{l}"));
            }
            if let Some(s) = a.get_short() {
                v.push(format!("-{s}"));
            }
            v
        })
        .collect();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a.starts_with('-') {
            if a == "-h" || a == "--help" || a == "-V" || a == "--version" {
                return args;
            }
            if !a.contains('=') && takes_value.iter().any(|t| *t == a) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if Command::NAMES.contains(&a.as_ref()) {
            return args;
        }
        let mut out = args;
        out.insert(i, OsString::from("serve"));
        return out;
    }
    args
}

/// [`with_default_subcommand`], and with no subcommand and no MODEL at all, `serve` when the
/// environment names the model (`model_in_env`: AIM_MODEL_ID or AIM_ID set, as AIM's images
/// do, whose entry point serves by default), as the first argument.
pub fn with_default_command(args: Vec<OsString>, model_in_env: bool) -> Vec<OsString> {
    let named = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| {
            Command::NAMES.contains(&a.as_ref())
                || ["-h", "--help", "-V", "--version"].contains(&a.as_ref())
        });
    if !model_in_env || named {
        return with_default_subcommand(args);
    }
    // First: the global flags work after it, serve's own (`--port`) only after it.
    let mut out = args;
    out.insert(1.min(out.len()), OsString::from("serve"));
    out
}
