//! Small answers we build ourselves: JSON bodies and errors in the OpenAI error shape
//! (`{"error":{"message","type","param","code"}}`), so OpenAI clients show our message.

use super::{Body, BoxError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

/// A body from bytes we already hold.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}

/// `status` with `body` and a content type.
pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `status` with a JSON body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    with_type(status, "application/json", value.to_string())
}

/// The OpenAI error object.
pub fn error_body(message: &str, kind: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An error answer in the OpenAI shape.
pub fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response<Body> {
    json(status, &error_body(message, kind, code))
}

/// 503 with Retry-After (omitted when waiting will not help, e.g. after giving up).
pub fn unavailable(message: &str, code: &str, retry_after_s: Option<u32>) -> Response<Body> {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        message,
        "service_unavailable",
        code,
    );
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    r
}
