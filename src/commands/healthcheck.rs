//! `aim-engine healthcheck` and `status`.
//!
//! Both ask the local supervisor with `http::local::get` (blocking, within `--timeout`) and
//! print what `status::render` makes of its `/status`.

use crate::cli::{Format, HealthcheckArgs, StatusArgs};
use crate::exit::{ExitError, FAILURE, OK};
use crate::http::local::get;
use crate::status::{Status, render};
use std::time::Instant;

/// Exit 0 when `/health/ready` answers 200, 1 otherwise (unreachable included).
pub fn healthcheck(a: &HealthcheckArgs) -> anyhow::Result<u8> {
    let deadline = Instant::now() + a.timeout;
    let code = match get(&a.host, a.port, "/health/ready", deadline) {
        Ok((code, _)) => code,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return Ok(FAILURE);
        }
    };
    if a.verbose {
        match get(&a.host, a.port, "/status", deadline) {
            Ok((200, body)) => match serde_json::from_str::<Status>(&body) {
                Ok(s) => print!("{}", render(&s)),
                Err(e) => eprintln!("healthcheck: /status is not a status: {e}"),
            },
            Ok((other, _)) => eprintln!("healthcheck: /status answered {other}"),
            Err(e) => eprintln!("healthcheck: {e}"),
        }
        println!("ready: {}", if code == 200 { "yes" } else { "no" });
    }
    Ok(if code == 200 { OK } else { FAILURE })
}

/// Prints `/status` for humans (`--format json`: the raw JSON).
pub fn status(a: &StatusArgs) -> anyhow::Result<u8> {
    let deadline = Instant::now() + a.timeout;
    let (code, body) = get(&a.host, a.port, "/status", deadline)
        .map_err(|e| ExitError::new(FAILURE, e.to_string()))?;
    if code != 200 {
        return Err(ExitError::new(
            FAILURE,
            format!("{}:{}/status answered {code}: {body}", a.host, a.port),
        )
        .into());
    }
    match a.format {
        Format::Json => println!("{}", body.trim_end()),
        Format::Text => {
            let s: Status = serde_json::from_str(&body).map_err(|e| {
                ExitError::new(
                    FAILURE,
                    format!(
                        "{}:{}/status is not an aim-engine status: {e}",
                        a.host, a.port
                    ),
                )
            })?;
            print!("{}", render(&s));
        }
    }
    Ok(OK)
}
