use proptest::prelude::*;

use super::*;

fn plain() -> KeyNormalizer {
    KeyNormalizer::new(&[])
}

fn dropping() -> KeyNormalizer {
    KeyNormalizer::new(&["utm_*".to_owned(), "fbclid".to_owned()])
}

#[test]
fn scheme_and_host_are_lowercased_and_default_ports_removed() {
    let n = plain();
    assert_eq!(
        n.primary_key("HTTP", "Example.COM:80", "/A"),
        "GET http://example.com/A"
    );
    assert_eq!(n.primary_key("https", "x.io:443", "/"), "GET https://x.io/");
    assert_eq!(
        n.primary_key("https", "x.io:80", "/"),
        "GET https://x.io:80/"
    );
    assert_eq!(n.primary_key("http", "[::1]:80", "/"), "GET http://[::1]/");
}

#[test]
fn hostile_hosts_cannot_impersonate_paths() {
    let n = plain();
    let evil = n.primary_key("http", "a.example/x", "/y");
    assert_ne!(evil, n.primary_key("http", "a.example", "/x/y"));
    assert_eq!(evil, "GET http://a.example%2Fx/y");
}

#[test]
fn empty_path_is_slash_and_empty_query_has_no_question_mark() {
    let n = plain();
    assert_eq!(n.primary_key("http", "h", ""), "GET http://h/");
    assert_eq!(n.primary_key("http", "h", "?"), "GET http://h/");
    assert_eq!(n.primary_key("http", "h", "/p?&&"), "GET http://h/p");
}

#[test]
fn escapes_are_normalized() {
    let n = plain();
    assert_eq!(
        n.primary_key("http", "h", "/%7e%41%2f%2F"),
        "GET http://h/~A%2F%2F"
    );
    assert_eq!(n.primary_key("http", "h", "/%zz%4"), "GET http://h/%zz%4");
    assert_eq!(n.primary_key("http", "h", "/%"), "GET http://h/%");
}

#[test]
fn dot_segments_are_removed_and_slashes_merged() {
    let n = plain();
    assert_eq!(n.primary_key("http", "h", "/a/../b"), "GET http://h/b");
    assert_eq!(
        n.primary_key("http", "h", "/a/../b"),
        n.primary_key("http", "h", "/b")
    );
    assert_eq!(
        n.primary_key("http", "h", "/a/%2e%2E/b/."),
        "GET http://h/b/"
    );
    assert_eq!(n.primary_key("http", "h", "//a//b"), "GET http://h/a/b");
    let keep = plain().with_path_rules(PathRules {
        merge_slashes: false,
        ..PathRules::default()
    });
    assert_eq!(
        keep.primary_key("http", "h", "//a//b"),
        "GET http://h//a//b"
    );
}

#[test]
fn normalize_path_examples() {
    let n = plain();
    let norm = |p: &str| n.normalize_path(p).map(|c| c.into_owned());
    assert_eq!(norm("/api/v1/%61ccount"), Ok("/api/v1/account".into()));
    assert_eq!(norm("/api/v1/./account"), Ok("/api/v1/account".into()));
    assert_eq!(norm("/api/x/../v1/account"), Ok("/api/v1/account".into()));
    assert_eq!(norm("/api//v1///account"), Ok("/api/v1/account".into()));
    assert_eq!(norm("/../../etc"), Ok("/etc".into()));
    assert_eq!(norm("/a/%7e%c3%a9"), Ok("/a/~%C3%A9".into()));
    assert_eq!(norm("/a/.."), Ok("/".into()));
    assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
    assert_eq!(norm("*"), Ok("*".into()));
    assert!(matches!(
        n.normalize_path("/plain/path"),
        Ok(Cow::Borrowed(_))
    ));
    assert!(matches!(
        n.normalize_path("/.well-known/x"),
        Ok(Cow::Borrowed(_))
    ));
    assert_eq!(norm("/api/v1/account;x"), Err(PathError::Parameter));
    assert_eq!(norm("/api/v1%2faccount"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/api/v1%2Faccount"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/api/v1%5caccount"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/api\\v1"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a%00b"), Err(PathError::EncodedControl));
    assert_eq!(norm("/a%0Db"), Err(PathError::EncodedControl));
    assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
    let lenient = plain().with_path_rules(PathRules {
        merge_slashes: false,
        allow_encoded_slashes: true,
    });
    assert_eq!(
        lenient
            .normalize_path("/a//b%2fc/%2E%2E/d")
            .map(|c| c.into_owned()),
        Ok("/a//d".into())
    );
    assert_eq!(
        lenient.normalize_path("/a/b%2fc").map(|c| c.into_owned()),
        Ok("/a/b%2Fc".into())
    );
}

#[test]
fn query_is_sorted_by_name_stably() {
    let n = plain();
    assert_eq!(
        n.primary_key("http", "h", "/?b=1&a=2&c&a=1"),
        "GET http://h/?a=2&a=1&b=1&c"
    );
}

#[test]
fn dropped_params_match_decoded_names() {
    let n = dropping();
    assert_eq!(
        n.primary_key(
            "http",
            "h",
            "/p?utm_source=x&id=1&fbclid=z&%75tm_medium=y&utm=keep"
        ),
        "GET http://h/p?id=1&utm=keep"
    );
    assert_eq!(
        n.primary_key("http", "h", "/p?FBCLID=1"),
        "GET http://h/p?FBCLID=1"
    );
    assert_eq!(n.primary_key("http", "h", "/p?utm_a=1"), "GET http://h/p");
}

#[test]
fn stray_percent_next_to_decoded_hex_stays_idempotent() {
    let n = plain();
    let once = n.primary_key("http", "h", "/%%341");
    assert_eq!(once, "GET http://h/%%341");
    assert_eq!(n.primary_key("http", "h", "/%A%341"), "GET http://h/%A%341");
}

#[test]
fn url_hash_is_stable_hex() {
    let hash = url_hash("GET http://example.com/");
    assert_eq!(hash.len(), 32);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(hash, url_hash("GET http://example.com/"));
    // Pinned so an accidental change of the hash function is noticed: stored
    // hashes are part of the admin API.
    assert_eq!(
        hash,
        format!("{:032x}", xxh3_128(b"GET http://example.com/"))
    );
}

/// Splits a key back into the part the normalizer takes as `path_and_query`.
fn path_and_query(key: &str) -> &str {
    key.strip_prefix("GET http://h").unwrap_or(key)
}

/// Encodes each unreserved character when its bit in `mask` is set, in
/// upper or lower case hex, giving an equivalent spelling.
fn respell(s: &str, mask: u64) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let bit = mask.rotate_right(i as u32 % 64);
        if is_unreserved(b) && bit & 1 == 1 {
            if bit & 2 == 2 {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(char::from(b));
        }
    }
    out
}

proptest! {
    #[test]
    fn idempotent(pq in "[/a-zA-Z0-9%?&=._~-]{0,40}") {
        let n = dropping();
        let once = n.primary_key("http", "h", &pq);
        let twice = n.primary_key("http", "h", path_and_query(&once));
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn idempotent_on_arbitrary_text(pq in "\\PC{0,40}") {
        let n = dropping();
        let once = n.primary_key("http", "h", &pq);
        let twice = n.primary_key("http", "h", path_and_query(&once));
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn distinct_params_permute_freely(
        params in proptest::collection::btree_map("[a-z%0-9]{1,6}", "[a-z0-9]{0,4}", 0..6),
        seed in any::<u64>(),
    ) {
        let mut pieces: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let sorted = plain().primary_key("http", "h", &format!("/p?{}", pieces.join("&")));
        // A deterministic shuffle driven by the seed.
        let len = pieces.len();
        for i in (1..len).rev() {
            let j = (seed.rotate_left(i as u32) as usize) % (i + 1);
            pieces.swap(i, j);
        }
        let shuffled = plain().primary_key("http", "h", &format!("/p?{}", pieces.join("&")));
        // Names that differ only in spelling may normalize to one name, and
        // then their order legitimately follows the input; skip those.
        let names: std::collections::BTreeSet<String> = params
            .keys()
            .map(|k| { let mut s = String::new(); normalize_escapes(&mut s, k); s })
            .collect();
        prop_assume!(names.len() == params.len());
        prop_assert_eq!(sorted, shuffled);
    }

    #[test]
    fn dropped_params_never_change_the_key(
        path in "/[a-z0-9/]{0,10}",
        kept in proptest::collection::vec("[a-z]{1,4}=[0-9]{0,3}", 0..4),
        dropped in proptest::collection::vec("(utm_[a-z]{0,4}|fbclid)=[a-z]{0,3}", 0..4),
        seed in any::<u64>(),
    ) {
        let n = dropping();
        let base = n.primary_key("http", "h", &format!("{path}?{}", kept.join("&")));
        // Insert the dropped params at seed-driven positions; the kept ones
        // keep their relative order, which matters for repeated names.
        let mut all: Vec<&String> = kept.iter().collect();
        for (i, d) in dropped.iter().enumerate() {
            let at = (seed.rotate_left(i as u32 * 7) as usize) % (all.len() + 1);
            all.insert(at, d);
        }
        let joined: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        let with = n.primary_key("http", "h", &format!("{path}?{}", joined.join("&")));
        prop_assert_eq!(base, with);
    }

    #[test]
    fn never_panics(scheme in "\\PC{0,8}", host in "\\PC{0,20}", pq in "\\PC{0,60}") {
        let _ = dropping().primary_key(&scheme, &host, &pq);
    }

    #[test]
    fn equivalent_encodings_are_equal(pq in "/[a-zA-Z0-9._~/-]{0,20}(\\?[a-z0-9._~=&-]{0,20})?", mask in any::<u64>()) {
        let n = plain();
        let respelled = respell(&pq, mask);
        prop_assert_eq!(n.primary_key("http", "h", &pq), n.primary_key("http", "h", &respelled));
    }
}

/// Requests normalized by the gateway: the shapes of path that matter
/// (segments, dots, slashes, escapes of every kind).
fn request_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just("//".to_string()),
            Just("/.".to_string()),
            Just("/..".to_string()),
            Just("/%2e".to_string()),
            Just("/%2E%2e".to_string()),
            "[a-zA-Z0-9._~-]{1,4}",
            "%[0-9a-fA-F]{2}",
        ],
        0..12,
    )
    .prop_map(|parts| format!("/{}", parts.concat()))
}

fn rules() -> impl Strategy<Value = PathRules> {
    (any::<bool>(), any::<bool>()).prop_map(|(merge_slashes, allow_encoded_slashes)| PathRules {
        merge_slashes,
        allow_encoded_slashes,
    })
}

proptest! {
    #[test]
    fn normalized_paths_are_stable(path in request_path(), rules in rules()) {
        let n = plain().with_path_rules(rules);
        if let Ok(once) = n.normalize_path(&path) {
            let twice = n.normalize_path(&once).map(|c| c.into_owned());
            prop_assert_eq!(Ok(once.clone().into_owned()), twice);
            prop_assert!(once.starts_with('/'));
            prop_assert!(
                !once.split('/').any(|s| s == ".." || s == "."),
                "dot segment left in {}", once
            );
            if rules.merge_slashes {
                prop_assert!(!once.contains("//"), "{}", once);
            }
            // The key of the raw path is the key of its normalized form, so
            // the cache can never tell two spellings of one route apart.
            prop_assert_eq!(
                n.primary_key("http", "h", &path),
                n.primary_key("http", "h", &once)
            );
        }
    }

    #[test]
    fn normalize_path_never_panics(path in "\\PC{0,60}", rules in rules()) {
        let _ = plain().with_path_rules(rules).normalize_path(&path);
    }

    #[test]
    fn encoded_separators_never_become_separators(
        path in request_path(),
        rules in rules(),
    ) {
        let n = plain().with_path_rules(rules);
        if let Ok(out) = n.normalize_path(&path) {
            let raw_slashes = path.matches('/').count();
            // Merging and dot removal only ever remove separators.
            prop_assert!(out.matches('/').count() <= raw_slashes.max(1));
        }
    }
}
