use http::header::{ACCEPT_ENCODING, ACCEPT_LANGUAGE, COOKIE};

use super::*;

use crate::test_util::headers;

#[test]
fn fields_are_combined_lowercased_and_deduplicated() {
    let rsp = headers(&[
        ("vary", "Accept-Encoding, accept-language"),
        ("vary", " ACCEPT-ENCODING ,,Cookie"),
    ]);
    assert_eq!(
        vary_fields(&rsp),
        Ok(vec![ACCEPT_ENCODING, ACCEPT_LANGUAGE, COOKIE])
    );
    assert_eq!(vary_fields(&HeaderMap::new()), Ok(vec![]));
}

#[test]
fn star_anywhere_is_rejected() {
    let rsp = headers(&[("vary", "accept"), ("vary", "origin, *")]);
    assert_eq!(vary_fields(&rsp), Err(VaryStar));
}

#[test]
fn invalid_names_are_skipped() {
    let rsp = headers(&[("vary", "accept, bad name, (x)")]);
    assert_eq!(vary_fields(&rsp), Ok(vec![http::header::ACCEPT]));
}

#[test]
fn capture_normalizes_lines_and_whitespace() {
    let req = headers(&[("accept-language", "en , fr"), ("accept-language", "de")]);
    let key = VaryKey::capture(&[ACCEPT_LANGUAGE, COOKIE], &req, &[]);
    assert_eq!(
        key.entries(),
        &[
            (ACCEPT_LANGUAGE, Some(HeaderValue::from_static("en,fr,de"))),
            (COOKIE, None),
        ]
    );
}

#[test]
fn matches_equivalent_spellings_only() {
    let stored = headers(&[("accept-language", "en,fr")]);
    let key = VaryKey::capture(&[ACCEPT_LANGUAGE], &stored, &[]);
    assert!(key.matches(&headers(&[("accept-language", "en, fr")])));
    assert!(key.matches(&headers(&[
        ("accept-language", "en"),
        ("accept-language", " fr ")
    ])));
    assert!(!key.matches(&headers(&[("accept-language", "fr, en")])));
    assert!(!key.matches(&headers(&[("accept-language", "en")])));
    assert!(!key.matches(&headers(&[("accept-language", "en,fr,de")])));
    assert!(!key.matches(&HeaderMap::new()));
}

#[test]
fn absent_matches_only_absent() {
    let key = VaryKey::capture(&[COOKIE], &HeaderMap::new(), &[]);
    assert!(key.matches(&HeaderMap::new()));
    assert!(!key.matches(&headers(&[("cookie", "a=1")])));
    assert!(!key.is_empty());
}

#[test]
fn present_but_empty_differs_from_absent() {
    let key = VaryKey::capture(&[COOKIE], &headers(&[("cookie", "")]), &[]);
    assert!(key.matches(&headers(&[("cookie", "")])));
    assert!(!key.matches(&HeaderMap::new()));
    assert_ne!(
        key.digest(),
        VaryKey::capture(&[COOKIE], &HeaderMap::new(), &[]).digest()
    );
}

#[test]
fn skipped_fields_are_not_captured() {
    let req = headers(&[("accept-encoding", "gzip")]);
    let key = VaryKey::capture(&[ACCEPT_ENCODING], &req, &[ACCEPT_ENCODING]);
    assert!(key.is_empty());
    assert!(key.matches(&headers(&[("accept-encoding", "br")])));
}

#[test]
fn digest_follows_values() {
    let a = VaryKey::capture(
        &[ACCEPT_LANGUAGE],
        &headers(&[("accept-language", "en, fr")]),
        &[],
    );
    let b = VaryKey::capture(
        &[ACCEPT_LANGUAGE],
        &headers(&[("accept-language", "en,fr")]),
        &[],
    );
    let c = VaryKey::capture(
        &[ACCEPT_LANGUAGE],
        &headers(&[("accept-language", "fr")]),
        &[],
    );
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
    assert_eq!(VaryKey::from_entries(a.entries().to_vec()), a);
}
