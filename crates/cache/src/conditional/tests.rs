use super::*;

const LM: &str = "Tue, 15 Nov 1994 12:45:26 GMT";
const BEFORE: &str = "Mon, 14 Nov 1994 12:45:26 GMT";
const AFTER: &str = "Wed, 16 Nov 1994 12:45:26 GMT";

use crate::test_util::headers;

fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

#[test]
fn if_none_match_cases() {
    let etag = hv("\"abc\"");
    let weak = hv("W/\"abc\"");
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a HeaderValue>, bool);
    let cases: &[Case<'_>] = &[
        (&[("if-none-match", "\"abc\"")], Some(&etag), true),
        (&[("if-none-match", "W/\"abc\"")], Some(&etag), true),
        (&[("if-none-match", "\"abc\"")], Some(&weak), true),
        (&[("if-none-match", "\"x\", \"abc\"")], Some(&etag), true),
        (
            &[("if-none-match", "\"x\""), ("if-none-match", "\"abc\"")],
            Some(&etag),
            true,
        ),
        (
            &[("if-none-match", "\"a,bc\", \"y\"")],
            Some(&hv("\"a,bc\"")),
            true,
        ),
        (&[("if-none-match", "\"abcd\"")], Some(&etag), false),
        (&[("if-none-match", "abc")], Some(&etag), false),
        (&[("if-none-match", "\"abc\"")], None, false),
        (&[("if-none-match", "*")], None, true),
        (&[("if-none-match", " * ")], Some(&etag), true),
        (&[("if-none-match", "")], Some(&etag), false),
    ];
    for (i, (req, etag, expected)) in cases.iter().enumerate() {
        assert_eq!(
            not_modified(&headers(req), *etag, None),
            *expected,
            "case {i}"
        );
    }
}

#[test]
fn if_none_match_takes_precedence_over_if_modified_since() {
    let req = headers(&[("if-none-match", "\"other\""), ("if-modified-since", AFTER)]);
    let lm = HeaderValue::from_static(LM);
    assert!(!not_modified(&req, Some(&hv("\"abc\"")), Some(&lm)));
}

#[test]
fn if_modified_since_cases() {
    let lm = HeaderValue::from_static(LM);
    let check = |ims: &str, lm: Option<&HeaderValue>| {
        not_modified(&headers(&[("if-modified-since", ims)]), None, lm)
    };
    assert!(check(LM, Some(&lm)));
    assert!(check(AFTER, Some(&lm)));
    assert!(!check(BEFORE, Some(&lm)));
    assert!(!check("yesterday", Some(&lm)));
    assert!(!check(AFTER, None));
    assert!(!check(AFTER, Some(&hv("garbage"))));
    assert!(!not_modified(
        &HeaderMap::new(),
        Some(&hv("\"a\"")),
        Some(&lm)
    ));
}

#[test]
fn detects_conditionals() {
    assert!(has_conditionals(&headers(&[("if-none-match", "*")])));
    assert!(has_conditionals(&headers(&[("if-modified-since", LM)])));
    assert!(!has_conditionals(&headers(&[("if-match", "*")])));
    assert!(has_other_preconditions(&headers(&[("if-range", "\"a\"")])));
    assert!(!has_other_preconditions(&headers(&[(
        "if-none-match",
        "*"
    )])));
}

#[test]
fn revalidation_carries_validators() {
    let etag = hv("\"v1\"");
    let lm = hv(LM);
    let h = revalidation_headers(Some(&etag), Some(&lm));
    assert_eq!(h.get(IF_NONE_MATCH), Some(&etag));
    assert_eq!(h.get(IF_MODIFIED_SINCE), Some(&lm));
    assert!(revalidation_headers(None, None).is_empty());
}

#[test]
fn merge_replaces_metadata_and_keeps_body_fields() {
    let mut stored = headers(&[
        ("cache-control", "max-age=10"),
        ("content-length", "42"),
        ("content-encoding", "gzip"),
        ("etag", "\"v1\""),
        ("x-old", "1"),
        ("x-multi", "a"),
        ("x-multi", "b"),
    ]);
    let rsp = headers(&[
        ("cache-control", "max-age=60"),
        ("content-length", "0"),
        ("content-encoding", "identity"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("connection", "x-private"),
        ("x-private", "secret"),
        ("set-cookie", "sid=1"),
        ("x-multi", "c"),
        ("date", LM),
    ]);
    merge_304(&mut stored, &rsp);
    let expected = headers(&[
        ("cache-control", "max-age=60"),
        ("content-length", "42"),
        ("content-encoding", "gzip"),
        ("etag", "\"v1\""),
        ("x-old", "1"),
        ("x-multi", "c"),
        ("date", LM),
    ]);
    assert_eq!(stored, expected);
}

#[test]
fn not_modified_headers_keep_only_validators_and_caching() {
    let stored = headers(&[
        ("cache-control", "max-age=10"),
        ("content-length", "42"),
        ("content-type", "text/plain"),
        ("etag", "\"v1\""),
        ("vary", "accept"),
        ("vary", "origin"),
        ("last-modified", LM),
    ]);
    let expected = headers(&[
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("vary", "accept"),
        ("vary", "origin"),
        ("last-modified", LM),
    ]);
    assert_eq!(not_modified_headers(&stored), expected);
}
