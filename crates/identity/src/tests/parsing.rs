//! `bearer`, `Claims` rendering and `JwtError` labels.

use serde_json::{Map, Value, json};

use crate::{Claims, JwtError, bearer};

#[test]
fn bearer_parsing() {
    assert_eq!(bearer(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
    assert_eq!(bearer(b"bearer abc"), Some("abc"));
    assert_eq!(bearer(b"BEARER abc"), Some("abc"));
    assert_eq!(bearer(b"  Bearer   abc  "), Some("abc"));
    assert_eq!(bearer(b"Bearer\tabc"), Some("abc"));
    assert_eq!(bearer(b"Bearer a-b_c.d~e+f/g=="), Some("a-b_c.d~e+f/g=="));
    for refused in [
        &b""[..],
        b"Bearer",
        b"Bearer ",
        b"Bearerabc",
        b"Basic dXNlcjpwYXNz",
        b"Bearer abc def",
        b"Bearer ab\x01c",
        b"Bearer \xc3\xa9",
        b"Token abc",
    ] {
        assert_eq!(
            bearer(refused),
            None,
            "{:?}",
            String::from_utf8_lossy(refused)
        );
    }
}

fn claims(value: Value) -> Claims {
    match value {
        Value::Object(map) => Claims::new(map, "sub"),
        _ => unreachable!(),
    }
}

#[test]
fn header_value_rendering() {
    let c = claims(json!({
        "s": "plain value", "i": -7, "f": 1.5, "b": false, "arr": ["x", "y", "z"],
        "mixed": ["x", 1], "obj": {"k": ["v"]}, "null": null, "empty": [],
        "ctl": "a\r\nX-Injected: 1", "tab": "a\tb", "utf8": "é"
    }));
    let hv = |name| c.header_value(name);
    assert_eq!(hv("s").as_deref(), Some("plain value"));
    assert_eq!(hv("i").as_deref(), Some("-7"));
    assert_eq!(hv("f").as_deref(), Some("1.5"));
    assert_eq!(hv("b").as_deref(), Some("false"));
    assert_eq!(hv("arr").as_deref(), Some("x,y,z"));
    assert_eq!(hv("mixed").as_deref(), Some(r#"["x",1]"#));
    assert_eq!(hv("obj").as_deref(), Some(r#"{"k":["v"]}"#));
    assert_eq!(hv("empty").as_deref(), Some(""));
    assert_eq!(hv("tab").as_deref(), Some("a\tb"));
    assert_eq!(hv("utf8").as_deref(), Some("é"));
    assert_eq!(hv("null"), None);
    assert_eq!(hv("absent"), None);
    assert_eq!(hv("ctl"), None);
}

#[test]
fn user_rendering() {
    assert_eq!(claims(json!({"sub": "alice"})).user(), Some("alice"));
    assert_eq!(claims(json!({"sub": 42})).user(), Some("42"));
    assert_eq!(claims(json!({"sub": true})).user(), None);
    assert_eq!(claims(json!({"sub": "a\nb"})).user(), None);
    assert_eq!(claims(json!({})).user(), None);
    assert_eq!(Claims::new(Map::new(), "sub").as_map().len(), 0);
}

#[test]
fn error_codes_and_messages() {
    let cases = [
        (JwtError::Malformed, "malformed", "malformed token"),
        (
            JwtError::BadSignature,
            "bad_signature",
            "invalid token signature",
        ),
        (JwtError::Expired, "expired", "token expired"),
        (
            JwtError::NotYetValid,
            "not_yet_valid",
            "token not yet valid",
        ),
        (
            JwtError::WrongIssuer,
            "wrong_issuer",
            "token issuer not accepted",
        ),
        (
            JwtError::WrongAudience,
            "wrong_audience",
            "token audience not accepted",
        ),
        (
            JwtError::UnknownKey,
            "unknown_key",
            "token signing key not recognised",
        ),
        (
            JwtError::AlgorithmNotAllowed,
            "algorithm_not_allowed",
            "token algorithm not allowed",
        ),
        (
            JwtError::MissingClaim("exp".into()),
            "missing_claim",
            "token lacks the `exp` claim",
        ),
    ];
    for (error, code, message) in cases {
        assert_eq!(error.code(), code);
        assert_eq!(error.to_string(), message);
    }
}
