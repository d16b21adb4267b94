use http::HeaderValue;
use proptest::prelude::*;

use super::*;

#[test]
fn parses_common_response_directives() {
    let cc = CacheControl::parse(b"public, max-age=60, s-maxage=120, must-revalidate");
    assert_eq!(
        cc,
        CacheControl {
            public: true,
            max_age: Some(60),
            s_maxage: Some(120),
            must_revalidate: true,
            ..Default::default()
        }
    );
}

#[test]
fn names_are_case_insensitive_and_whitespace_is_tolerated() {
    let cc = CacheControl::parse(b"  No-Store ,\tMAX-AGE = 5 ,, PRIVATE");
    assert!(cc.no_store && cc.private);
    assert_eq!(cc.max_age, Some(5));
}

#[test]
fn quoted_values_are_accepted() {
    assert_eq!(CacheControl::parse(b"max-age=\"60\"").max_age, Some(60));
}

#[test]
fn qualified_no_cache_and_private_are_conservative() {
    let cc = CacheControl::parse(b"no-cache=\"Set-Cookie, X-Foo\", private=\"x\", max-age=9");
    assert!(cc.no_cache && cc.private);
    // The comma inside the quotes must not start a new directive.
    assert_eq!(cc.max_age, Some(9));
}

#[test]
fn first_occurrence_wins() {
    assert_eq!(
        CacheControl::parse(b"max-age=1, max-age=2").max_age,
        Some(1)
    );
    assert_eq!(
        CacheControl::parse(b"max-age=x, max-age=2").max_age,
        Some(0)
    );
}

#[test]
fn invalid_freshness_means_stale() {
    assert_eq!(CacheControl::parse(b"max-age=-1").max_age, Some(0));
    assert_eq!(CacheControl::parse(b"s-maxage").s_maxage, Some(0));
    assert_eq!(CacheControl::parse(b"max-age=").max_age, Some(0));
    assert_eq!(CacheControl::parse(b"max-age=1.5").max_age, Some(0));
}

#[test]
fn invalid_stale_windows_are_ignored() {
    let cc = CacheControl::parse(b"stale-while-revalidate=abc, stale-if-error, min-fresh=-3");
    assert_eq!(cc, CacheControl::default());
    assert_eq!(CacheControl::parse(b"max-stale=zz").max_stale, None);
}

#[test]
fn bare_max_stale_is_unbounded() {
    assert_eq!(CacheControl::parse(b"max-stale").max_stale, Some(u64::MAX));
    assert_eq!(CacheControl::parse(b"max-stale=30").max_stale, Some(30));
}

#[test]
fn huge_values_saturate() {
    let cc = CacheControl::parse(b"max-age=999999999999999999999999999");
    assert_eq!(cc.max_age, Some(u64::MAX));
}

#[test]
fn unknown_directives_and_garbage_are_ignored() {
    let cc = CacheControl::parse(b"foo=\"bar, baz\", max-age 7, =, \"x\", immutable");
    assert!(cc.immutable);
    // `max-age 7` is malformed: the name is read, the stray token skipped.
    assert_eq!(cc.max_age, Some(0));
}

#[test]
fn unterminated_quote_does_not_panic() {
    let cc = CacheControl::parse(b"max-age=\"12");
    assert_eq!(cc.max_age, Some(12));
    let cc = CacheControl::parse(b"x=\"\\");
    assert_eq!(cc, CacheControl::default());
}

#[test]
fn from_headers_combines_lines_in_order() {
    let mut headers = HeaderMap::new();
    headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
    headers.append(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=20"),
    );
    let cc = CacheControl::from_headers(&headers);
    assert_eq!(cc.max_age, Some(10));
    assert!(cc.no_cache);
    assert_eq!(cc, CacheControl::parse(b"max-age=10, no-cache, max-age=20"));
}

#[test]
fn display_renders_bare_max_stale() {
    let cc = CacheControl {
        public: true,
        max_age: Some(3),
        max_stale: Some(u64::MAX),
        ..Default::default()
    };
    assert_eq!(cc.to_string(), "public, max-age=3, max-stale");
}

fn any_cc() -> impl Strategy<Value = CacheControl> {
    let flags = proptest::collection::vec(any::<bool>(), 10);
    let values = proptest::collection::vec(proptest::option::of(any::<u64>()), 6);
    (flags, values).prop_map(|(b, v)| CacheControl {
        max_age: v[0],
        s_maxage: v[1],
        no_store: b[0],
        no_cache: b[1],
        private: b[2],
        public: b[3],
        must_revalidate: b[4],
        proxy_revalidate: b[5],
        no_transform: b[6],
        immutable: b[7],
        stale_while_revalidate: v[2],
        stale_if_error: v[3],
        max_stale: v[4],
        min_fresh: v[5],
        only_if_cached: b[8] && b[9],
    })
}

/// Changes the case of every letter whose position has its bit set in `mask`
/// and pads every comma and `=` with the whitespace in `pad`.
fn garble(rendered: &str, mask: u64, pad: &str) -> String {
    let mut out = String::new();
    for (i, c) in rendered.chars().enumerate() {
        let upper = mask.rotate_left(i as u32 % 64) & 1 == 1;
        match c {
            ',' | '=' => {
                out.push_str(pad);
                out.push(c);
                out.push_str(pad);
            }
            ' ' => {}
            c if upper => out.push(c.to_ascii_uppercase()),
            c => out.push(c),
        }
    }
    out
}

proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = CacheControl::parse(&bytes);
    }

    #[test]
    fn never_panics_on_directive_like_input(s in "[a-zA-Z=\",\\\\ \t0-9-]{0,64}") {
        let _ = CacheControl::parse(s.as_bytes());
    }

    #[test]
    fn round_trips(cc in any_cc()) {
        prop_assert_eq!(CacheControl::parse(cc.to_string().as_bytes()), cc);
    }

    #[test]
    fn case_and_whitespace_insensitive(cc in any_cc(), mask in any::<u64>(), pad in "[ \t]{0,3}") {
        let garbled = garble(&cc.to_string(), mask, &pad);
        prop_assert_eq!(CacheControl::parse(garbled.as_bytes()), cc);
    }
}
