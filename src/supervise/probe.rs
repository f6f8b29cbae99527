//! HTTP checks against the engine's loopback port: health, the model list, one test
//! inference. The client is in-process (hyper), so no probe process competes with the reaper.
//!
//! Readiness = GET /health answers 200 (vLLM refuses connections until loaded, SGLang answers
//! 503 while warming up), GET /v1/models lists the served name, and POST /v1/completions with
//! max_tokens 4 answers 200 with a `text`. The answer checks are pure functions.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Least time the test inference may take.
pub const INFERENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest answer body we read (a model list or a 4-token completion is far smaller).
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Prober {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What one readiness round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// /health is not 200 yet (refused, 503, timeout).
    NotHealthy(ProbeError),
    /// /health is 200 but the model list or the test inference is not right yet.
    Healthy(ProbeError),
    /// The engine answered 401/403: it was given an API key of its own. A configuration error,
    /// not something a restart or waiting fixes.
    Unauthorized(String),
    Ready,
}

/// Why one check against the engine did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The request could not be built.
    #[error("{uri}: {error}")]
    Request { uri: String, error: String },
    /// No connection or no answer (refused, reset); `cause` is the innermost error.
    #[error("{path}: {cause}")]
    Unreachable { path: &'static str, cause: String },
    #[error("{path}: reading the answer: {error}")]
    Body { path: &'static str, error: String },
    #[error("{path}: no answer within {timeout:?}")]
    NoAnswer {
        path: &'static str,
        timeout: Duration,
    },
    /// An answer other than 200 to a GET.
    #[error("{path} answered {status}")]
    Status { path: &'static str, status: u16 },
    /// The test inference answered other than 200; `text` is the start of its body.
    #[error("test inference answered {status}: {text}")]
    InferenceStatus { status: u16, text: String },
    #[error("/v1/models answered no JSON: {0}")]
    ModelsNotJson(String),
    #[error("/v1/models lists {listed:?}, not `{served}`")]
    NotListed { listed: Vec<String>, served: String },
    #[error("test inference answered no JSON: {0}")]
    InferenceNotJson(String),
    #[error("test inference answer has no choices[0].text")]
    NoText,
}

/// The message for an engine that refuses our checks with `status`.
fn unauthorized(path: &str, status: u16) -> Readiness {
    Readiness::Unauthorized(format!(
        "{path} answered {status}: the engine was given an API key of its own (an `api-key` \
         engine arg through the launcher, or VLLM_API_KEY), so it refuses aim-engine's \
         readiness checks; remove it and set the key with --api-key / AIM_API_KEY, which \
         aim-engine checks at the public port"
    ))
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            // Each probe on a fresh connection: a stale keep-alive connection to a previous
            // attempt on the same port must not answer for the new one.
            .pool_max_idle_per_host(0)
            .build(conn);
        Prober { client }
    }

    async fn request(
        &self,
        method: hyper::Method,
        port: u16,
        path: &'static str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), ProbeError> {
        let uri = format!("http://127.0.0.1:{port}{path}");
        let mut b = hyper::Request::builder().method(method).uri(&uri);
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ProbeError::Request {
                uri: uri.clone(),
                error: e.to_string(),
            })?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ProbeError::Unreachable {
                    path,
                    cause: root_cause(&e),
                })?;
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let body = limited
                .collect()
                .await
                .map_err(|e| ProbeError::Body {
                    path,
                    error: e.to_string(),
                })?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::NoAnswer { path, timeout }),
        }
    }

    /// GET /health == 200.
    pub async fn health(&self, port: u16, timeout: Duration) -> Result<(), ProbeError> {
        match self
            .request(hyper::Method::GET, port, "/health", None, timeout)
            .await?
        {
            (200, _) => Ok(()),
            (status, _) => Err(ProbeError::Status {
                path: "/health",
                status,
            }),
        }
    }

    /// The engine's own `/metrics` text.
    pub async fn metrics(&self, port: u16, timeout: Duration) -> Result<String, ProbeError> {
        match self
            .request(hyper::Method::GET, port, "/metrics", None, timeout)
            .await?
        {
            (200, body) => Ok(String::from_utf8_lossy(&body).into_owned()),
            (status, _) => Err(ProbeError::Status {
                path: "/metrics",
                status,
            }),
        }
    }

    /// The idle liveness probe: a 1-token completion through the engine core, which a wedged
    /// core cannot answer although its API server still answers `/health`.
    pub async fn inference(
        &self,
        port: u16,
        served: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let body = completion_request(served);
        match self
            .request(
                hyper::Method::POST,
                port,
                "/v1/completions",
                Some(body),
                timeout,
            )
            .await?
        {
            (200, body) => completion_has_text(&body),
            (status, body) => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.chars().take(200).collect();
                Err(ProbeError::InferenceStatus {
                    status,
                    text: text.trim().to_string(),
                })
            }
        }
    }

    /// One readiness round: health, then the model list, then (unless skipped) a test
    /// inference. `timeout` bounds each check; the test inference gets at least
    /// `INFERENCE_TIMEOUT`, since the first request after a load may compile kernels.
    pub async fn readiness(
        &self,
        port: u16,
        served: &str,
        test_inference: bool,
        timeout: Duration,
    ) -> Readiness {
        if let Err(e) = self.health(port, timeout).await {
            return Readiness::NotHealthy(e);
        }
        match self
            .request(hyper::Method::GET, port, "/v1/models", None, timeout)
            .await
        {
            Ok((200, body)) => {
                if let Err(e) = models_lists(&body, served) {
                    return Readiness::Healthy(e);
                }
            }
            Ok((s @ (401 | 403), _)) => return unauthorized("/v1/models", s),
            Ok((status, _)) => {
                return Readiness::Healthy(ProbeError::Status {
                    path: "/v1/models",
                    status,
                });
            }
            Err(e) => return Readiness::Healthy(e),
        }
        if test_inference {
            let body = completion_request(served);
            match self
                .request(
                    hyper::Method::POST,
                    port,
                    "/v1/completions",
                    Some(body),
                    timeout.max(INFERENCE_TIMEOUT),
                )
                .await
            {
                Ok((200, body)) => {
                    if let Err(e) = completion_has_text(&body) {
                        return Readiness::Healthy(e);
                    }
                }
                Ok((s @ (401 | 403), _)) => return unauthorized("/v1/completions", s),
                Ok((status, body)) => {
                    let text = String::from_utf8_lossy(&body);
                    let text: String = text.chars().take(200).collect();
                    return Readiness::Healthy(ProbeError::InferenceStatus {
                        status,
                        text: text.trim().to_string(),
                    });
                }
                Err(e) => return Readiness::Healthy(e),
            }
        }
        Readiness::Ready
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The test inference: one short, deterministic completion.
pub fn completion_request(served: &str) -> String {
    serde_json::json!({
        "model": served,
        "prompt": "Hello",
        "max_tokens": 4,
        "temperature": 0,
    })
    .to_string()
}

/// Ok when an OpenAI model list names `served`.
pub fn models_lists(body: &[u8], served: &str) -> Result<(), ProbeError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProbeError::ModelsNotJson(e.to_string()))?;
    let ids: Vec<&str> = v
        .get("data")
        .and_then(|d| d.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(|i| i.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if ids.contains(&served) {
        Ok(())
    } else {
        Err(ProbeError::NotListed {
            listed: ids.into_iter().map(str::to_string).collect(),
            served: served.to_string(),
        })
    }
}

/// Ok when a completion answer has `choices[0].text`.
pub fn completion_has_text(body: &[u8]) -> Result<(), ProbeError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProbeError::InferenceNotJson(e.to_string()))?;
    match v.pointer("/choices/0/text").and_then(|t| t.as_str()) {
        Some(_) => Ok(()),
        None => Err(ProbeError::NoText),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists() {
        let cases: &[(&str, &str, bool)] = &[
            (
                r#"{"object":"list","data":[{"id":"m/n","object":"model"}]}"#,
                "m/n",
                true,
            ),
            (r#"{"data":[{"id":"a"},{"id":"m/n"}]}"#, "m/n", true),
            (r#"{"data":[{"id":"other"}]}"#, "m/n", false),
            (r#"{"data":[]}"#, "m/n", false),
            (r#"{"error":"x"}"#, "m/n", false),
            ("not json", "m/n", false),
        ];
        for (body, served, ok) in cases {
            assert_eq!(models_lists(body.as_bytes(), served).is_ok(), *ok, "{body}");
        }
    }

    /// The errors are data; their text (shown in /status and the log) is what it was.
    #[test]
    fn probe_errors_render_their_fields() {
        let e = models_lists(br#"{"data":[{"id":"a"}]}"#, "m/n").unwrap_err();
        assert_eq!(
            e,
            ProbeError::NotListed {
                listed: vec!["a".into()],
                served: "m/n".into()
            }
        );
        assert_eq!(e.to_string(), r#"/v1/models lists ["a"], not `m/n`"#);
        assert_eq!(
            completion_has_text(b"{}").unwrap_err().to_string(),
            "test inference answer has no choices[0].text"
        );
        let s = ProbeError::Status {
            path: "/health",
            status: 503,
        };
        assert_eq!(s.to_string(), "/health answered 503");
        let t = ProbeError::NoAnswer {
            path: "/health",
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(t.to_string(), "/health: no answer within 1.5s");
    }

    #[test]
    fn completions() {
        let cases: &[(&str, bool)] = &[
            (r#"{"choices":[{"text":" world","index":0}]}"#, true),
            (r#"{"choices":[{"text":""}]}"#, true),
            (r#"{"choices":[]}"#, false),
            (r#"{"choices":[{"message":{"content":"x"}}]}"#, false),
            ("", false),
        ];
        for (body, ok) in cases {
            assert_eq!(completion_has_text(body.as_bytes()).is_ok(), *ok, "{body}");
        }
        let req: serde_json::Value = serde_json::from_str(&completion_request("m/n")).unwrap();
        assert_eq!(req["model"], "m/n");
        assert!(
            req["max_tokens"]
                .as_u64()
                .is_some_and(|n| (1..=8).contains(&n))
        );
    }
}
