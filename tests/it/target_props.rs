//! Property tests for the request-target normal form and the API key check at the public port
//! (`http::target`, `http::auth`): bounded (a few hundred cases each), so they run with every
//! `cargo test`.
//!
//! The properties: normalisation never panics; what it forwards decodes back to exactly the
//! path that was routed and checked (a percent-decoding engine sees what we saw); the normal
//! form has no repeated slashes and no dot segments and is a fixed point; every spelling of a
//! protected path is either refused or normalises to that path (so the key is required); and
//! the key check accepts only `Bearer <the key>`.

use aim_engine::http::auth::{self, ApiKey};
use aim_engine::http::target::{Target, decode_lossless, normalize, parse};
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use proptest::prelude::*;

/// Paths made of the characters that matter: separators, dots, escapes, hex digits.
fn tricky_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%".to_string()),
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%5c".to_string()),
            Just("%25".to_string()),
            Just("\\".to_string()),
            "[a-zA-Z0-9]{1,3}",
            "%[0-9a-fA-F]{2}",
            "[ -~]",
        ],
        0..24,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

/// One spelling of `path`: each byte raw, or as an upper- or lower-case escape, each slash
/// possibly doubled.
fn spelling_of(path: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..4, path.len()).prop_map(move |choices| {
        let mut out = String::new();
        for (b, c) in path.bytes().zip(choices) {
            match (b, c) {
                (b'/', 0 | 1) => out.push('/'),
                (b'/', 2) => out.push_str("//"),
                (_, 0 | 1) => out.push(char::from(b)),
                (_, 2) => out.push_str(&format!("%{b:02X}")),
                _ => out.push_str(&format!("%{b:02x}")),
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn forwarded_target_decodes_to_what_was_checked(path in tricky_path(), q in proptest::option::of("[a-z0-9=&%]{0,8}")) {
        if let Ok(n) = normalize(&path, q.as_deref()) {
            let (fwd_path, fwd_query) = match n.forward.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (n.forward.as_str(), None),
            };
            prop_assert_eq!(decode_lossless(fwd_path), n.path.as_bytes().to_vec());
            prop_assert_eq!(fwd_query, q.as_deref());
            prop_assert!(n.path.starts_with('/'));
            prop_assert!(!n.path.contains("//"), "{}", n.path);
            prop_assert!(!n.path.split('/').any(|s| s == "." || s == ".."), "{}", n.path);
            prop_assert!(!n.path.contains('\\'));
            // A fixed point: the forwarded form normalises to itself.
            let again = normalize(fwd_path, None).expect("the forwarded form is normal");
            prop_assert_eq!(&again.path, &n.path);
            prop_assert_eq!(again.forward.as_str(), fwd_path);
            // hyper accepts what we build.
            prop_assert!(n.forward.parse::<Uri>().is_ok(), "{}", n.forward);
        }
    }

    #[test]
    fn every_spelling_of_a_protected_path_needs_the_key(
        s in prop_oneof![spelling_of("/v1/completions"), spelling_of("/v1/chat/completions"), spelling_of("/v1/models")],
        prefix in prop_oneof![Just(""), Just("/x/.."), Just("/%2e"), Just("/."), Just("//")],
    ) {
        let raw = format!("{prefix}{s}");
        let Ok(uri) = raw.parse::<Uri>() else { return Ok(()) };
        match parse(&Method::POST, &uri) {
            Err(_) => {}
            Ok(Target::Origin(n)) => {
                prop_assert!(auth::protected(&n.path), "{raw} -> {}", n.path);
                let routed = String::from_utf8(decode_lossless(&n.forward)).expect("utf-8");
                prop_assert!(auth::protected(&routed), "{raw} forwarded as {}", n.forward);
            }
            Ok(Target::ServerOptions) => prop_assert!(false, "{raw}"),
        }
    }

    #[test]
    fn key_check_accepts_only_bearer_and_the_key(key in "[A-Za-z0-9_-]{1,24}", given in "[ -~]{0,40}") {
        let k = ApiKey::new(&key).expect("non-empty key");
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&given) {
            h.insert(AUTHORIZATION, v);
        }
        let accepted = k.accepts(&h);
        let expected = given.len() > 7
            && given[..7].eq_ignore_ascii_case("bearer ")
            && given[7..].trim_matches(|c: char| c == ' ' || c == '\t') == key;
        prop_assert_eq!(accepted, expected, "{:?}", given);
        // The exact form is always accepted.
        let mut ok = HeaderMap::new();
        ok.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).expect("header"));
        prop_assert!(k.accepts(&ok));
    }
}
