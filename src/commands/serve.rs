//! `aim-engine serve MODEL [GPU_COUNT]`: plan as `plan` does (`plan::resolve`), then
//! supervise the engine until told to stop. The work is in `supervise::run`.

use crate::cli::{GlobalArgs, ServeArgs};
use crate::supervise::run::{ServeError, ServeOptions};

pub fn run(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<u8> {
    crate::supervise::run::serve(options(g, a)?).map_err(|e| match e {
        ServeError::Setup(e) => e.into(),
        ServeError::Exit(e) => e.into(),
    })
}

/// The library's form of `serve`'s flags.
fn options(g: &GlobalArgs, a: ServeArgs) -> anyhow::Result<ServeOptions> {
    let limits = limits(&a);
    let request = a.select.request().map_err(super::inspect::group_error)?;
    Ok(ServeOptions {
        sources: g.into(),
        request,
        port: a.port,
        host: a.host,
        api_key: a.api_key,
        max_connections: a.max_connections,
        limits,
        download: a.download,
        stop_timeout: a.stop_timeout,
        startup_timeout: a.startup_timeout,
        progress_interval: a.progress_interval,
        liveness_interval: a.liveness_interval,
        liveness_failures: a.liveness_failures,
        liveness_timeout: a.liveness_timeout,
        hang: crate::supervise::progress::Rules {
            freeze_window: a.hang_freeze_window,
            stall_window: a.hang_stall_window,
            startup_stall_window: a.startup_stall_window,
            ..Default::default()
        },
        hang_sample_interval: a.hang_sample_interval,
        idle_probe_interval: a.idle_probe_interval,
        idle_probe_timeout: a.idle_probe_timeout,
        restart_budget: a.restart_budget,
        restart_window: a.restart_window,
        backoff_initial: a.backoff_initial,
        backoff_max: a.backoff_max,
        vram_wait_timeout: a.vram_wait_timeout,
        skip_test_inference: a.skip_test_inference,
        leader_port: a.leader_port,
        group_timing: crate::group::roster::Timing {
            interval: a.group_interval,
            loss_timeout: a.group_loss_timeout,
            join_timeout: a.group_join_timeout,
        },
    })
}

/// The public port's limits `serve` was given.
fn limits(a: &ServeArgs) -> crate::http::Limits {
    crate::http::Limits {
        header_read_timeout: a.header_read_timeout,
        body_read_timeout: a.body_read_timeout,
        max_connections_per_peer: a.max_connections_per_peer,
        health_connections: a.health_connections,
        first_byte_timeout: a.request_first_byte_timeout,
        stream_gap_timeout: a.stream_gap_timeout,
        ..crate::http::Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Limits;
    use std::time::Duration;

    fn serve_limits(extra: &[&str]) -> Limits {
        use clap::Parser;
        let mut argv = vec!["aim-engine", "serve", "org/model"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            crate::cli::Command::Serve(a) => limits(&a),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn request_deadlines_default_generous_and_zero_disables() {
        let l = serve_limits(&[]);
        assert_eq!(l.first_byte(), Some(Duration::from_secs(600)));
        assert_eq!(l.stream_gap(), Some(Duration::from_secs(120)));
        let l = serve_limits(&[
            "--request-first-byte-timeout",
            "1.5s",
            "--stream-gap-timeout",
            "0",
        ]);
        assert_eq!(l.first_byte(), Some(Duration::from_millis(1500)));
        assert_eq!(l.stream_gap(), None);
        let l = serve_limits(&["--request-first-byte-timeout", "0s"]);
        assert_eq!(l.first_byte(), None);
    }
}
