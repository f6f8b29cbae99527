//! The optional API key, enforced at our port like vLLM's `--api-key`: `/v1/*` needs
//! `Authorization: Bearer KEY`; health (`/health*`, `/v1/health/*`), `/status` and `/metrics`
//! stay open.
//!
//! The Authorization header is forwarded unchanged: an engine started without a key ignores it,
//! and one started with the same key (if the supervisor ever passes it) accepts it, so our check
//! never breaks the engine.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// The configured key.
#[derive(Clone)]
pub struct ApiKey(Vec<u8>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// `None` for an empty key (an empty AIM_API_KEY means "no key").
    pub fn new(key: &str) -> Option<ApiKey> {
        let k = key.trim();
        (!k.is_empty()).then(|| ApiKey(k.as_bytes().to_vec()))
    }

    /// Whether `headers` carry the key. Compared in constant time (the length may leak).
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        self.accepts_value(headers.get(AUTHORIZATION).map(|v| v.as_bytes()))
    }

    /// Whether an Authorization value (None: no such header) carries the key.
    pub fn accepts_value(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(bearer) else {
            return false;
        };
        bool::from(given.ct_eq(&self.0))
    }
}

/// The token of `Bearer TOKEN` (scheme case-insensitive, as RFC 9110 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (rest.first() == Some(&b' ') && !token.is_empty()).then_some(token)
}

/// Whether `path` needs the key when one is configured.
pub fn protected(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/health/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn bearer_table() {
        let key = ApiKey::new("s3cret").expect("key");
        let cases: &[(Option<&str>, bool)] = &[
            (Some("Bearer s3cret"), true),
            (Some("bearer s3cret"), true),
            (Some("Bearer  s3cret "), true),
            (Some("Bearer s3cre"), false),
            (Some("Bearer s3cretX"), false),
            (Some("Basic s3cret"), false),
            (Some("Bearers3cret"), false),
            (Some("Bearer "), false),
            (Some("s3cret"), false),
            (None, false),
        ];
        for (header, want) in cases {
            let mut h = HeaderMap::new();
            if let Some(v) = header {
                h.insert(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
            }
            assert_eq!(key.accepts(&h), *want, "{header:?}");
        }
    }

    #[test]
    fn empty_key_means_none() {
        assert!(ApiKey::new("").is_none());
        assert!(ApiKey::new("  ").is_none());
    }

    #[test]
    fn protected_paths() {
        for (p, want) in [
            ("/v1/completions", true),
            ("/v1/models", true),
            ("/v1/health/live", false),
            ("/v1/health/ready", false),
            ("/health", false),
            ("/metrics", false),
            ("/status", false),
            ("/version", false),
            ("/v1", false),
        ] {
            assert_eq!(protected(p), want, "{p}");
        }
    }
}
