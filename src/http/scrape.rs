//! `/metrics`: our `aim_*` metrics followed by the engine's own text, as one valid Prometheus
//! text exposition (0.0.4).
//!
//! prometheus-client writes OpenMetrics: it ends with `# EOF`, has `# UNIT` lines and names
//! counter families without `_total` while their samples carry it. The 0.0.4 format wants the
//! family name to equal the sample name for counters and has no `# EOF`, so `to_prometheus_text`
//! rewrites those (pure, tested). The engine's text is fetched with a short timeout so a
//! scrape never hangs on a busy or dead engine.

use super::{Body, Ctx, reply};
use crate::status::Phase;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, StatusCode};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest engine metrics text we append (vLLM's is tens of KiB).
const MAX_ENGINE_TEXT: usize = 8 * 1024 * 1024;

/// Rewrites OpenMetrics text from prometheus-client into Prometheus 0.0.4 text.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
            && kind.trim() == "counter"
            && !name.ends_with("_total")
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Our text followed by the engine's (whose `# EOF`, if any, is dropped), or a comment saying
/// why the engine's part is missing.
pub fn combine(ours: &str, engine: Result<&str, &str>) -> String {
    let mut out = to_prometheus_text(ours);
    match engine {
        Ok(text) => {
            for line in text.lines() {
                if line.trim_end() == "# EOF" {
                    continue;
                }
                out.push_str(line);
                out.push('\n');
            }
        }
        Err(why) => {
            out.push_str("# engine metrics unavailable: ");
            out.push_str(&why.replace('\n', " "));
            out.push('\n');
        }
    }
    out
}

/// Whether the engine is expected to answer HTTP at all in `phase`.
fn engine_up(phase: Phase) -> bool {
    matches!(phase, Phase::Validating | Phase::Ready | Phase::Draining)
}

/// Why the engine's own text is missing from a `/metrics` answer (shown after
/// `# engine metrics unavailable: `).
#[derive(Debug, thiserror::Error)]
enum EngineMetricsError {
    #[error("engine not up (phase {0})")]
    NotUp(Phase),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    #[error("{0}")]
    Connect(#[from] hyper_util::client::legacy::Error),
    #[error("engine answered {0}")]
    Status(StatusCode),
    #[error("{0}")]
    Body(super::BoxError),
    #[error("engine metrics are not UTF-8")]
    NotUtf8,
}

/// The `/metrics` answer.
pub async fn answer(ctx: &Ctx) -> Response<Body> {
    let phase = ctx.shared.phase();
    let ours = ctx.shared.metrics.render();
    let text = match engine_text(ctx, phase).await {
        Ok(text) => combine(&ours, Ok(&text)),
        Err(why) => combine(&ours, Err(&why.to_string())),
    };
    reply::with_type(StatusCode::OK, CONTENT_TYPE, text)
}

/// The engine's metrics text, when it is up (in `phase`) and answers within the limit.
async fn engine_text(ctx: &Ctx, phase: Phase) -> Result<String, EngineMetricsError> {
    if !engine_up(phase) {
        return Err(EngineMetricsError::NotUp(phase));
    }
    let limit = ctx.limits.engine_metrics_timeout;
    tokio::time::timeout(limit, fetch_engine(ctx))
        .await
        .unwrap_or(Err(EngineMetricsError::Timeout(limit)))
}

async fn fetch_engine(ctx: &Ctx) -> Result<String, EngineMetricsError> {
    let port = ctx.shared.engine_port();
    let req = Request::get(format!("http://127.0.0.1:{port}/metrics")).body(
        Empty::new()
            .map_err(|never| -> super::BoxError { match never {} })
            .boxed_unsync(),
    )?;
    let resp = ctx.client.request(req).await?;
    if !resp.status().is_success() {
        return Err(EngineMetricsError::Status(resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ENGINE_TEXT)
        .collect()
        .await
        .map_err(EngineMetricsError::Body)?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| EngineMetricsError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn our_text_becomes_valid_0_0_4() {
        let m = Metrics::new();
        m.restart("oom");
        m.set_phase(Phase::Ready);
        let text = to_prometheus_text(&m.render());
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        assert!(
            text.contains("# TYPE aim_restarts_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP aim_restarts_total "), "{text}");
        assert!(
            text.contains("aim_restarts_total{class=\"oom\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE aim_ready gauge\naim_ready 1\n"),
            "{text}"
        );
        // Every sample belongs to the family declared just before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default().to_string();
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(name.starts_with(&family), "{name} outside {family}");
            }
        }
    }

    #[test]
    fn engine_text_follows_ours_without_eof() {
        let engine = "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2.0\n# EOF\n";
        let out = combine(
            "# HELP aim_ready r\n# TYPE aim_ready gauge\naim_ready 1\n# EOF\n",
            Ok(engine),
        );
        assert_eq!(
            out,
            "# HELP aim_ready r\n# TYPE aim_ready gauge\naim_ready 1\n# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2.0\n"
        );
        let down = combine("aim_ready 0\n# EOF\n", Err("connection refused"));
        assert_eq!(
            down,
            "aim_ready 0\n# engine metrics unavailable: connection refused\n"
        );
    }
}
