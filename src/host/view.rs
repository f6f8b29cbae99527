//! What `list` prints and what `launch` shows while waiting, from plain data read back from
//! Docker (labels, state, start time) and from a container's `/status`. Pure.

use crate::host::alloc::{Holder, format_list, parse_list};
use crate::host::spec::{ContainerSpec, label};
use serde::Serialize;
use std::collections::HashMap;

/// One aim-engine container as Docker reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed {
    pub name: String,
    pub id: String,
    pub labels: HashMap<String, String>,
    /// Docker state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    pub exit_code: Option<i64>,
    /// Docker HEALTHCHECK status when the image has one.
    pub health: Option<String>,
    /// `State.StartedAt` (RFC 3339).
    pub started_at: Option<String>,
    pub image: String,
}

impl Managed {
    /// Whether this container counts as holding its GPUs: anything that runs or is about to
    /// (a restarting container comes back on the same devices; a created one is a launch in
    /// flight). Exited and dead ones do not.
    pub fn holds_gpus(&self) -> bool {
        matches!(
            self.state.as_str(),
            "running" | "restarting" | "created" | "paused"
        )
    }

    pub fn holder(&self) -> Holder {
        let get = |k: &str| self.labels.get(k).map(String::as_str).unwrap_or("");
        Holder {
            name: self.name.clone(),
            ordinals: parse_list(get(label::GPUS)),
            render_minors: parse_list(get(label::RENDER_MINORS)),
        }
    }

    pub fn port(&self) -> Option<u16> {
        self.labels
            .get(label::PORT)
            .and_then(|p| p.trim().parse().ok())
    }
}

/// One row of `list` (also its JSON shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListRow {
    pub name: String,
    pub id: String,
    pub model: String,
    pub gpus: Vec<u32>,
    pub render_minors: Vec<u32>,
    pub recipe: String,
    pub port: Option<u16>,
    /// Docker state, with the exit code for exited containers (`exited (70)`).
    pub state: String,
    /// Docker health when the image has a HEALTHCHECK, else the supervisor's phase from
    /// /status when it answered, else null.
    pub health: Option<String>,
    /// The supervisor's phase from /status, when it answered.
    pub phase: Option<String>,
    /// Seconds since the container started (running containers only).
    pub uptime_s: Option<u64>,
    pub image: String,
}

/// A list row from what Docker said, the phase (if /status answered) and the time now.
pub fn row(m: &Managed, phase: Option<String>, now_unix: i64) -> ListRow {
    let get = |k: &str| m.labels.get(k).cloned().unwrap_or_default();
    let state = match (m.state.as_str(), m.exit_code) {
        ("exited", Some(code)) => format!("exited ({code})"),
        (s, _) => s.to_string(),
    };
    let uptime_s = if m.state == "running" {
        m.started_at
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| (now_unix - t).max(0) as u64)
    } else {
        None
    };
    ListRow {
        name: m.name.clone(),
        id: m.id.chars().take(12).collect(),
        model: get(label::MODEL),
        gpus: parse_list(&get(label::GPUS)),
        render_minors: parse_list(&get(label::RENDER_MINORS)),
        recipe: get(label::RECIPE),
        port: m.port(),
        state,
        health: m.health.clone().or_else(|| phase.clone()),
        phase,
        uptime_s,
        image: m.image.clone(),
    }
}

/// The text table of `list`.
pub fn render_table(rows: &[ListRow]) -> String {
    if rows.is_empty() {
        return "No aim-engine containers. Start one with `aim-engine launch MODEL`.\n".into();
    }
    let mut cells: Vec<[String; 8]> = vec![
        [
            "NAME", "MODEL", "GPUS", "RECIPE", "PORT", "STATE", "HEALTH", "UPTIME",
        ]
        .map(String::from),
    ];
    for r in rows {
        cells.push([
            r.name.clone(),
            r.model.clone(),
            if r.gpus.is_empty() {
                "-".into()
            } else {
                format_list(&r.gpus)
            },
            if r.recipe.is_empty() {
                "-".into()
            } else {
                r.recipe.clone()
            },
            r.port.map_or("-".into(), |p| p.to_string()),
            r.state.clone(),
            r.health.clone().unwrap_or_else(|| "-".into()),
            r.uptime_s.map_or("-".into(), human_duration),
        ]);
    }
    let mut widths = [0usize; 8];
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    for c in &cells {
        let line: Vec<String> = c
            .iter()
            .zip(widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `45s`, `3m05s`, `2h03m`, `4d02h`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Unix seconds of an RFC 3339 time as Docker writes it (`2026-11-26T22:40:01.123456789Z`,
/// or with an offset). None for Docker's zero time (`0001-01-01T00:00:00Z`) and junk.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let tz_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, tz) = rest.split_at(tz_at);
    let clock = clock.split('.').next()?;
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let m: i64 = c.next()?.parse().ok()?;
    let sec: i64 = c.next()?.parse().ok()?;
    let offset = match tz {
        "" | "Z" | "z" => 0,
        t => {
            let sign = if t.starts_with('-') { -1 } else { 1 };
            let (oh, om) = t[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

/// What `launch` reads from a container's `/status` while waiting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusView {
    pub phase: String,
    pub attempt: u64,
    pub last_log_line: Option<String>,
    pub fatal: Option<String>,
    /// Class and log tail of the last failed attempt.
    pub last_failure: Option<(String, Vec<String>)>,
}

/// Reads the fields `launch` needs from a `/status` body; None when it is no status JSON.
pub fn parse_status(body: &str) -> Option<StatusView> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let phase = v.get("phase")?.as_str()?.to_string();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let last_failure = v
        .get("failures")
        .and_then(|f| f.as_array())
        .and_then(|a| a.last())
        .map(|f| {
            let class = f
                .get("class")
                .and_then(|c| c.as_str())
                .unwrap_or("unknown")
                .to_string();
            let tail = f
                .get("log_tail")
                .and_then(|t| t.as_array())
                .map(|t| {
                    t.iter()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (class, tail)
        });
    Some(StatusView {
        phase,
        attempt: v.get("attempt").and_then(|a| a.as_u64()).unwrap_or(0),
        last_log_line: text("last_log_line"),
        fatal: text("fatal"),
        last_failure,
    })
}

/// One progress line: `aim-engine-x: loading (attempt 1, 1m05s) last log line`.
pub fn progress_line(
    name: &str,
    phase: &str,
    attempt: u64,
    elapsed_s: u64,
    last_log: Option<&str>,
) -> String {
    let mut s = format!("{name}: {phase}");
    if attempt > 1 {
        s.push_str(&format!(
            " (attempt {attempt}, {})",
            human_duration(elapsed_s)
        ));
    } else {
        s.push_str(&format!(" ({})", human_duration(elapsed_s)));
    }
    if let Some(l) = last_log.map(str::trim).filter(|l| !l.is_empty()) {
        let short: String = l.chars().take(100).collect();
        s.push_str(": ");
        s.push_str(&short);
    }
    s
}

/// The lines printed once the container is ready: endpoint and a ready-to-paste curl.
pub fn ready_message(
    name: &str,
    host: &str,
    port: u16,
    served_model: &str,
    gpus: &[u32],
) -> String {
    let body = serde_json::json!({
        "model": served_model,
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 64
    });
    format!(
        "{name} is ready on GPU {gpus}.\n\
         Endpoint: http://{host}:{port}/v1 (OpenAI API; status: http://{host}:{port}/status)\n\
         Try it:\n  curl http://{host}:{port}/v1/chat/completions \\\n    -H 'Content-Type: application/json' \\\n    -d '{body}'\n",
        gpus = format_list(gpus),
        body = body.to_string().replace('\'', "'\\''"),
    )
}

/// What an aim-engine container's exit status means (the supervisor's exit table).
pub fn describe_exit(code: i64) -> String {
    let what = match code {
        0 => "stopped cleanly",
        64 => "usage error: bad command line, environment or recipe",
        66 => "model unavailable: not found, gated without HF_TOKEN, or offline without a cache",
        69 => "no usable GPU or no recipe fits",
        70 => "the engine kept failing: every restart and fallback recipe was used up",
        126 => "the engine's launcher cannot be executed",
        127 => "the engine's launcher was not found",
        137 => "killed (SIGKILL; out of host memory?)",
        c if c > 128 && c < 160 => "killed by a signal",
        _ => "failed",
    };
    format!("exit status {code}: {what}")
}

/// Removes terminal colour sequences (ESC [ ... letter) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The failure class the supervisor logged last (`class="oom"` in its log lines), for when
/// the container is gone before its /status could say.
pub fn class_from_logs(lines: &[String]) -> Option<String> {
    lines.iter().rev().find_map(|l| {
        let l = strip_ansi(l);
        let rest = l.split("class=").nth(1)?;
        let class: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        (!class.is_empty()).then_some(class)
    })
}

/// The dry run for humans: the spec as an equivalent `docker run` line plus the GPUs.
pub fn docker_run_text(s: &ContainerSpec) -> String {
    let json = s.to_redacted_json();
    let mut out = format!("Container {} (image {})\n", s.name, s.image);
    out.push_str(&format!(
        "  GPUs (host ordinals): {}   render minors: {}\n",
        s.labels.get(label::GPUS).cloned().unwrap_or_default(),
        s.labels
            .get(label::RENDER_MINORS)
            .cloned()
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "  recipe: {}\n",
        s.labels.get(label::RECIPE).cloned().unwrap_or_default()
    ));
    let mut args = vec![
        "docker run -d".to_string(),
        format!("--name {}", s.name),
        format!("--restart {}", s.restart),
        // Docker's default grace is 10 s, which kills vLLM in the middle of its shutdown.
        format!("--stop-timeout {}", s.stop_timeout_s),
        format!("--ipc={}", s.ipc),
    ];
    for d in &s.devices {
        args.push(format!("--device {}", d.host));
    }
    for g in &s.groups {
        args.push(format!("--group-add {g}"));
    }
    for c in &s.cap_add {
        args.push(format!("--cap-add {c}"));
    }
    for o in &s.security_opt {
        args.push(format!("--security-opt {o}"));
    }
    for p in &s.ports {
        args.push(format!("-p {}:{}", p.host, p.container));
    }
    for m in &s.mounts {
        let ro = if m.read_only { ":ro" } else { "" };
        args.push(format!("-v {}:{}{ro}", m.source, m.target));
    }
    if let Some(env) = json["env"].as_object() {
        for (k, v) in env {
            args.push(format!("-e {k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for (k, v) in &s.labels {
        args.push(format!("--label {k}={v}"));
    }
    args.push(s.image.clone());
    args.extend(s.command.iter().cloned());
    out.push_str("  equivalent to:\n    ");
    out.push_str(&args.join(" \\\n      "));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(state: &str, labels: &[(&str, &str)]) -> Managed {
        Managed {
            name: "aim-engine-a".into(),
            id: "0123456789abcdef".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: state.into(),
            exit_code: Some(0),
            health: None,
            started_at: Some("2026-11-26T22:00:00.5Z".into()),
            image: "aim-engine:latest".into(),
        }
    }

    #[test]
    fn only_live_containers_hold_gpus() {
        for (state, holds) in [
            ("running", true),
            ("restarting", true),
            ("created", true),
            ("paused", true),
            ("exited", false),
            ("dead", false),
            ("removing", false),
        ] {
            assert_eq!(managed(state, &[]).holds_gpus(), holds, "{state}");
        }
    }

    #[test]
    fn holders_and_rows_come_from_labels() {
        let m = managed(
            "running",
            &[
                (label::GPUS, "0,1"),
                (label::RENDER_MINORS, "128,136"),
                (label::MODEL, "Qwen/Qwen3-8B"),
                (label::RECIPE, "r1"),
                (label::PORT, "8001"),
            ],
        );
        let h = m.holder();
        assert_eq!(h.ordinals, [0, 1]);
        assert_eq!(h.render_minors, [128, 136]);
        let now = parse_rfc3339("2026-11-26T23:01:05Z").unwrap();
        let r = row(&m, Some("ready".into()), now);
        assert_eq!(r.model, "Qwen/Qwen3-8B");
        assert_eq!(r.port, Some(8001));
        assert_eq!(r.uptime_s, Some(3665));
        assert_eq!(r.health.as_deref(), Some("ready"));
        assert_eq!(r.id, "0123456789ab");
        let table = render_table(&[r]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        for cell in [
            "aim-engine-a",
            "Qwen/Qwen3-8B",
            "0,1",
            "r1",
            "8001",
            "running",
            "ready",
            "1h01m",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing in {table}");
        }
        let stopped = row(&managed("exited", &[]), None, now);
        assert_eq!(stopped.state, "exited (0)");
        assert_eq!(stopped.uptime_s, None);
        assert!(render_table(&[]).contains("No aim-engine containers"));
    }

    #[test]
    fn rfc3339_times() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-03-01T00:00:00Z", Some(951_868_800)),
            ("2026-11-26T22:40:01.123456789Z", Some(1_795_732_801)),
            ("2026-11-26T23:40:01+01:00", Some(1_795_732_801)),
            ("2026-11-26T21:40:01-01:00", Some(1_795_732_801)),
            ("0001-01-01T00:00:00Z", None),
            ("yesterday", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_rfc3339(s), *want, "{s}");
        }
    }

    #[test]
    fn durations_for_humans() {
        for (s, want) in [
            (0, "0s"),
            (59, "59s"),
            (65, "1m05s"),
            (7380, "2h03m"),
            (93_600, "1d02h"),
        ] {
            assert_eq!(human_duration(s), want);
        }
    }

    #[test]
    fn status_bodies() {
        let body = r#"{"phase":"restarting","attempt":2,"last_log_line":"Loading weights",
            "failures":[{"class":"oom","log_tail":["a","HIP out of memory"]}],"fatal":null}"#;
        let s = parse_status(body).unwrap();
        assert_eq!(s.phase, "restarting");
        assert_eq!(s.attempt, 2);
        assert_eq!(s.last_log_line.as_deref(), Some("Loading weights"));
        assert_eq!(
            s.last_failure,
            Some(("oom".into(), vec!["a".into(), "HIP out of memory".into()]))
        );
        assert_eq!(s.fatal, None);
        assert_eq!(parse_status("<html>"), None);
        assert_eq!(parse_status(r#"{"ok":true}"#), None);
    }

    #[test]
    fn progress_and_ready_text() {
        assert_eq!(
            progress_line("n", "loading", 1, 65, Some("  Loading safetensors  ")),
            "n: loading (1m05s): Loading safetensors"
        );
        assert_eq!(
            progress_line("n", "starting", 3, 5, None),
            "n: starting (attempt 3, 5s)"
        );
        let m = ready_message("n", "127.0.0.1", 8001, "Qwen/Qwen3-8B", &[2, 3]);
        assert!(m.contains("http://127.0.0.1:8001/v1"), "{m}");
        assert!(
            m.contains("curl http://127.0.0.1:8001/v1/chat/completions"),
            "{m}"
        );
        assert!(m.contains(r#""model":"Qwen/Qwen3-8B""#), "{m}");
        assert!(m.contains("GPU 2,3"), "{m}");
    }
    #[test]
    fn exit_statuses_logs_and_classes() {
        assert!(describe_exit(70).contains("every restart and fallback"));
        assert!(describe_exit(69).contains("no recipe fits"));
        assert!(describe_exit(139).contains("signal"));
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m engine failed"),
            "2026  WARN engine failed"
        );
        let lines: Vec<String> = [
            "\u{1b}[33m WARN\u{1b}[0m attempt failed \u{1b}[3mclass\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"kv_cache\"",
            "\u{1b}[33m WARN\u{1b}[0m attempt failed \u{1b}[3mclass\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"oom\"",
            "aim-engine: error: gave up",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(class_from_logs(&lines).as_deref(), Some("oom"));
        assert_eq!(class_from_logs(&["no class here".to_string()]), None);
    }
}
