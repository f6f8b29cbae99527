//! A small Hub client on hyper-util's client with rustls: the repo listing and a file's bytes
//! (with Range), following redirects, with the token only ever sent to the Hub's own host.

use super::error::DownloadError;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// How long to wait for a response's headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;

/// One file of a repo listing (`siblings` of `/api/models/{repo}/revision/{rev}?blobs=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub name: String,
    pub size: Option<u64>,
    /// The git blob id (sha1), the cache's blob name for a file not in LFS.
    pub blob_id: Option<String>,
    /// The LFS sha256, the blob name and checksum of a file in LFS.
    pub sha256: Option<String>,
}

/// A repo at a revision.
#[derive(Debug, Clone)]
pub struct Listing {
    pub commit: String,
    pub siblings: Vec<Sibling>,
}

/// A failed request, as the caller's retry loop needs it.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try (connection, timeout, 5xx, a cut body).
    Transient(String),
    /// 429: wait (as long as Retry-After says, when it says) and try again.
    Throttled(Option<Duration>),
    /// An answer that will not change: 401/403/404 and other 4xx.
    Status { status: u16, error_code: String },
}

pub struct Hub {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    endpoint: String,
    authority: String,
    token: Option<String>,
}

/// Percent-encodes one path segment (or several, keeping `/` when `keep_slash`).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Location` resolved against the URL that answered with it.
fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if location.starts_with("//") {
        return format!("{scheme}:{location}").parse().ok();
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// Retry-After as seconds (the Hub's form); an HTTP date counts as absent.
fn retry_after(resp: &Response<Incoming>) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Hub {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Hub, DownloadError> {
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        let bad = || DownloadError::BadEndpoint(endpoint.clone());
        let uri: Uri = endpoint.parse().map_err(|_| bad())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(bad());
        }
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Hub {
            client,
            endpoint,
            authority,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn token_set(&self) -> bool {
        self.token.is_some()
    }

    /// The model's page on the Hub.
    pub fn page(&self, repo: &str) -> String {
        format!("{}/{repo}", self.endpoint)
    }

    pub fn listing_url(&self, repo: &str, revision: &str) -> String {
        format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            encode(revision, false)
        )
    }

    pub fn file_url(&self, repo: &str, commit: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.endpoint,
            encode(file, true)
        )
    }

    /// GET `url` (from byte `from` when > 0), following redirects; a 2xx answer or a Failure.
    pub async fn get(&self, url: &str, from: u64) -> Result<Response<Incoming>, Failure> {
        let mut uri: Uri = url
            .parse()
            .map_err(|_| Failure::Transient(format!("`{url}` is not a URL")))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::get(uri.clone()).header(
                header::USER_AGENT,
                concat!("aim-engine/", env!("CARGO_PKG_VERSION")),
            );
            if from > 0 {
                req = req.header(header::RANGE, format!("bytes={from}-"));
            }
            let own_host = uri.authority().map(|a| a.as_str()) == Some(self.authority.as_str());
            if let (Some(t), true) = (&self.token, own_host) {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", t.trim()));
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| Failure::Transient(e.to_string()))?;
            let resp = match tokio::time::timeout(HEADERS_TIMEOUT, self.client.request(req)).await {
                Err(_) => {
                    return Err(Failure::Transient(format!(
                        "no answer within {}s",
                        HEADERS_TIMEOUT.as_secs()
                    )));
                }
                Ok(Err(e)) => return Err(Failure::Transient(error_chain(&e))),
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve_location(&uri, l))
                    .ok_or_else(|| {
                        Failure::Transient(format!("redirect {status} without a usable Location"))
                    })?;
                uri = next;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Failure::Throttled(retry_after(&resp)));
            }
            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                return Err(Failure::Transient(format!("the server answered {status}")));
            }
            let error_code = resp
                .headers()
                .get("x-error-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            return Err(Failure::Status {
                status: status.as_u16(),
                error_code,
            });
        }
        Err(Failure::Transient(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// What is wrong with a repo-at-revision answer.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("not JSON ({0})")]
    NotJson(serde_json::Error),
    #[error("no `sha` (commit)")]
    NoCommit,
    #[error("`sha` `{0}` is not a 40-hex commit")]
    BadCommit(String),
    #[error("no `siblings` (file list)")]
    NoSiblings,
}

/// Parses the repo-at-revision JSON.
pub fn parse_listing(text: &[u8]) -> Result<Listing, ListingError> {
    let v: serde_json::Value = serde_json::from_slice(text).map_err(ListingError::NotJson)?;
    let commit = v
        .get("sha")
        .and_then(|s| s.as_str())
        .ok_or(ListingError::NoCommit)?
        .to_string();
    if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ListingError::BadCommit(commit));
    }
    let siblings = v
        .get("siblings")
        .and_then(|s| s.as_array())
        .ok_or(ListingError::NoSiblings)?
        .iter()
        .filter_map(|s| {
            let name = s.get("rfilename")?.as_str()?.to_string();
            let lfs = s.get("lfs");
            Some(Sibling {
                name,
                size: s
                    .get("size")
                    .and_then(|n| n.as_u64())
                    .or_else(|| lfs?.get("size")?.as_u64()),
                blob_id: s.get("blobId").and_then(|b| b.as_str()).map(str::to_string),
                sha256: lfs
                    .and_then(|l| l.get("sha256"))
                    .and_then(|h| h.as_str())
                    .map(str::to_string),
            })
        })
        .collect();
    Ok(Listing { commit, siblings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_parses_the_hub_shape() {
        let json = br#"{"_id":"x","id":"org/m","sha":"0123456789abcdef0123456789abcdef01234567",
          "siblings":[{"rfilename":"config.json","blobId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":12},
                      {"rfilename":"model.safetensors","blobId":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":99,
                       "lfs":{"sha256":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":99,"pointerSize":134}}]}"#;
        let l = parse_listing(json).unwrap();
        assert_eq!(l.commit, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(l.siblings.len(), 2);
        assert_eq!(l.siblings[0].size, Some(12));
        assert_eq!(l.siblings[0].sha256, None);
        assert_eq!(l.siblings[1].sha256.as_deref().map(str::len), Some(64));
        assert!(
            parse_listing(b"{}")
                .unwrap_err()
                .to_string()
                .contains("sha")
        );
        assert!(parse_listing(br#"{"sha":"main","siblings":[]}"#).is_err());
    }

    #[test]
    fn urls_are_encoded_and_redirects_resolved() {
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c+d.json", true), "a%20b/c%2Bd.json");
        let base: Uri = "http://h:1/org/m/resolve/c/f.bin".parse().unwrap();
        assert_eq!(
            resolve_location(&base, "/cdn/x?y=1").unwrap().to_string(),
            "http://h:1/cdn/x?y=1"
        );
        assert_eq!(
            resolve_location(&base, "https://cdn.example/x")
                .unwrap()
                .to_string(),
            "https://cdn.example/x"
        );
        assert_eq!(
            resolve_location(&base, "g.bin").unwrap().to_string(),
            "http://h:1/org/m/resolve/c/g.bin"
        );
        assert!(Hub::new("ftp://x", None).is_err());
        assert!(Hub::new("not a url", None).is_err());
    }
}
