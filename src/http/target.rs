//! The request target in one normal form: what we route on, what the API key is checked on,
//! and exactly what is forwarded.
//!
//! vLLM's server (uvicorn + Starlette) percent-decodes the path before it routes, so
//! `/%76%31/models` and `/v1%2Fmodels` reach its `/v1/models` handler. A check on the raw path
//! would let such spellings past the API key. So every origin-form target is decoded once
//! here:
//!
//! - percent escapes are decoded (a `%` not followed by two hex digits is refused);
//! - an escape that decodes to `/` or `\`, a raw `\`, a control character, bytes that are not
//!   UTF-8, and the dot segments `.` and `..` (raw or encoded) are refused with 400: they
//!   have no single meaning across servers, and no real client needs them;
//! - repeated slashes are merged (`//v1//models` is `/v1/models`).
//!
//! The decoded path is the normal form. The router and the key check see it, and the engine
//! gets it re-encoded (every byte outside RFC 3986 `pchar` as `%XX`), which decodes back to
//! exactly the normal form: what was checked is what the engine routes. The query is passed
//! unchanged (routing never looks at it).
//!
//! Only origin-form targets (`/path?query`) are forwarded. `OPTIONS *` is answered by us; any
//! other asterisk-form, absolute-form (`http://host/path`) or authority-form (`host:port`)
//! target is a 400.

use hyper::{Method, Uri};

/// What a request target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `OPTIONS *`: a question about the server itself.
    ServerOptions,
    /// An origin-form target in normal form.
    Origin(Normal),
}

/// An origin-form target in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal {
    /// The decoded path: routing and the API key look at this.
    pub path: String,
    /// The path re-encoded, plus `?query` when there is one: what the engine is sent.
    pub forward: String,
}

/// Why a target is refused (each is a 400 `bad_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    NotOriginForm,
    BadEscape,
    EncodedSlash,
    Backslash,
    DotSegment,
    ControlChar,
    NotUtf8,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetError::NotOriginForm => {
                "only origin-form request targets (`/path?query`) are accepted; `OPTIONS *` is \
                 the one exception"
            }
            TargetError::BadEscape => "the path has a `%` that is not followed by two hex digits",
            TargetError::EncodedSlash => {
                "the path has an encoded slash (`%2F` or `%5C`); send `/` as a plain separator"
            }
            TargetError::Backslash => "the path has a backslash; use `/` to separate segments",
            TargetError::DotSegment => {
                "the path has a `.` or `..` segment; send the path it stands for"
            }
            TargetError::ControlChar => "the path has a control character",
            TargetError::NotUtf8 => "the path does not decode to UTF-8",
        })
    }
}

/// Classifies and normalises the target of a request.
pub fn parse(method: &Method, uri: &Uri) -> Result<Target, TargetError> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(TargetError::NotOriginForm);
    }
    let path = uri.path();
    if path == "*" {
        return if method == Method::OPTIONS {
            Ok(Target::ServerOptions)
        } else {
            Err(TargetError::NotOriginForm)
        };
    }
    if !path.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    normalize(path, uri.query()).map(Target::Origin)
}

/// The normal form of an origin-form `path` (which starts with `/`) and its `query`.
pub fn normalize(path: &str, query: Option<&str>) -> Result<Normal, TargetError> {
    let decoded = decode(path.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| TargetError::NotUtf8)?;
    let trailing = decoded.len() > 1 && decoded.ends_with('/');
    let mut normal = String::with_capacity(decoded.len());
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(TargetError::DotSegment);
        }
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || trailing {
        normal.push('/');
    }
    let mut forward = encode(&normal);
    if let Some(q) = query {
        forward.push('?');
        forward.push_str(q);
    }
    Ok(Normal {
        path: normal,
        forward,
    })
}

/// Percent-decodes `raw`, refusing what has no single meaning (see the module docs).
fn decode(raw: &[u8]) -> Result<Vec<u8>, TargetError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let byte = if b == b'%' {
            let hi = raw.get(i + 1).and_then(|c| hex(*c));
            let lo = raw.get(i + 2).and_then(|c| hex(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(TargetError::BadEscape);
            };
            i += 3;
            let d = hi << 4 | lo;
            if d == b'/' || d == b'\\' {
                return Err(TargetError::EncodedSlash);
            }
            d
        } else {
            i += 1;
            if b == b'\\' {
                return Err(TargetError::Backslash);
            }
            b
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(TargetError::ControlChar);
        }
        out.push(byte);
    }
    Ok(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 `pchar` plus `/`: the bytes a path may carry unescaped.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// Percent-encodes every byte of `path` that is not a path character.
fn encode(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if is_path_char(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Percent-decodes without refusing anything: what a decoding server routes on. Public for the
/// property tests, which check that `decode_lossless(forward) == path`.
pub fn decode_lossless(raw: &str) -> Vec<u8> {
    let raw = raw.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).and_then(|c| hex(*c)),
                raw.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, TargetError> {
        normalize(path, None).map(|n| n.path)
    }

    #[test]
    fn normal_forms() {
        for (raw, want) in [
            ("/", "/"),
            ("/v1/models", "/v1/models"),
            ("/%76%31/models", "/v1/models"),
            ("//v1//models", "/v1/models"),
            ("/v1/models/", "/v1/models/"),
            ("/v1/models//", "/v1/models/"),
            ("//", "/"),
            ("/a%20b", "/a b"),
            ("/%E2%82%AC", "/\u{20ac}"),
            ("/...", "/..."),
            ("/.a/b.", "/.a/b."),
        ] {
            assert_eq!(n(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refusals() {
        for (raw, want) in [
            ("/v1%2Fmodels", TargetError::EncodedSlash),
            ("/v1%2fmodels", TargetError::EncodedSlash),
            ("/v1%5cmodels", TargetError::EncodedSlash),
            ("/v1\\models", TargetError::Backslash),
            ("/a/../v1", TargetError::DotSegment),
            ("/a/%2e%2E/v1", TargetError::DotSegment),
            ("/./v1", TargetError::DotSegment),
            ("/v1/.", TargetError::DotSegment),
            ("/%", TargetError::BadEscape),
            ("/%4", TargetError::BadEscape),
            ("/%zz", TargetError::BadEscape),
            ("/%00", TargetError::ControlChar),
            ("/%0a", TargetError::ControlChar),
            ("/%ff", TargetError::NotUtf8),
        ] {
            assert_eq!(n(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn forward_form_decodes_to_the_checked_path() {
        let got = normalize("/a%20b/%3F%23%25", Some("x=%2F")).expect("ok");
        assert_eq!(got.path, "/a b/?#%");
        assert_eq!(got.forward, "/a%20b/%3F%23%25?x=%2F");
        assert_eq!(decode_lossless("/a%20b/%3F%23%25"), b"/a b/?#%");
    }

    #[test]
    fn target_forms() {
        let opt = |m: Method, t: &str| parse(&m, &t.parse::<Uri>().expect("uri"));
        assert_eq!(opt(Method::OPTIONS, "*"), Ok(Target::ServerOptions));
        assert_eq!(opt(Method::POST, "*"), Err(TargetError::NotOriginForm));
        assert_eq!(
            opt(Method::GET, "http://127.0.0.1:80/v1/models"),
            Err(TargetError::NotOriginForm)
        );
        assert_eq!(
            opt(Method::CONNECT, "127.0.0.1:80"),
            Err(TargetError::NotOriginForm)
        );
        assert!(matches!(
            opt(Method::GET, "/v1/models?x=1"),
            Ok(Target::Origin(Normal { ref path, ref forward })) if path == "/v1/models" && forward == "/v1/models?x=1"
        ));
    }
}
