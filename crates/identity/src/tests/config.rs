//! `JwtValidator::new`: every problem reported, none leaking key material.

use serde_json::json;

use super::*;

fn errors(settings: &JwtSettings) -> Vec<String> {
    JwtValidator::new(settings).expect_err("settings should be refused")
}

#[track_caller]
fn assert_mentions(errors: &[String], needles: &[&str]) {
    for needle in needles {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no error mentions {needle:?}: {errors:#?}"
        );
    }
}

#[test]
fn every_missing_file_reported() {
    let errs = errors(&JwtSettings {
        secret_files: vec!["/nonexistent/secret-a".into()],
        public_key_files: vec!["/nonexistent/key-b.pem".into()],
        jwks_file: Some("/nonexistent/jwks-c.json".into()),
        ..settings(&["HS256", "RS256"])
    });
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_mentions(
        &errs,
        &[
            "/nonexistent/secret-a",
            "/nonexistent/key-b.pem",
            "/nonexistent/jwks-c.json",
        ],
    );
    assert!(errs.iter().all(|e| e.contains("cannot read")));
}

#[test]
fn algorithms_checked() {
    let errs = errors(&JwtSettings {
        secrets: vec![SECRET.to_vec()],
        ..settings(&[])
    });
    assert_mentions(&errs, &["none configured"]);
    let errs = errors(&JwtSettings {
        secrets: vec![SECRET.to_vec()],
        ..settings(&["HS256", "none", "RS512"])
    });
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_mentions(&errs, &["`none`", "`RS512`"]);
}

#[test]
fn allowed_algorithm_without_key_reported() {
    let errs = errors(&JwtSettings {
        secrets: vec![SECRET.to_vec()],
        ..settings(&["HS256", "RS256", "ES256"])
    });
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_mentions(
        &errs,
        &[
            "RS256 is allowed but no RSA public key",
            "ES256 is allowed but no EC P-256",
        ],
    );
}

#[test]
fn bad_key_files_reported_together() {
    let garbage = temp_file("garbage.pem", b"not a key");
    let empty = temp_file("empty-secret", b" \n");
    let errs = errors(&JwtSettings {
        secret_files: vec![empty.clone()],
        secrets: vec![Vec::new()],
        public_key_files: vec![
            key_path("rsa1.key.pem"),
            key_path("rsa1024.pub.pem"),
            key_path("ec384.pub.pem"),
            garbage.clone(),
        ],
        ..settings(&["HS256", "RS256", "ES256"])
    });
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert_mentions(
        &errs,
        &[
            &format!("`{empty}`: empty"),
            "secret #1: empty",
            "rsa1.key.pem`: holds a private key",
            "rsa1024.pub.pem`: RSA key of about 1024 bits",
            "ec384.pub.pem`: EC key is not on curve P-256",
            &format!("`{garbage}`: not a PEM"),
        ],
    );
}

/// Issue #11 (19): a secret shorter than 32 bytes can be brute-forced from
/// one token; it is refused whether it comes from a file or the environment.
#[test]
fn short_hs256_secrets_refused() {
    let short = temp_file("short-secret", b"0123456789abcdef0123456789abcde\n");
    let errs = errors(&JwtSettings {
        secret_files: vec![short.clone()],
        secrets: vec![b"too-short".to_vec()],
        ..settings(&["HS256"])
    });
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_mentions(
        &errs,
        &[
            &format!("`{short}`: 31 bytes; an HS256 secret needs at least 32"),
            "secret #1: 9 bytes",
        ],
    );
    // Exactly 32 bytes is enough.
    let ok = temp_file("ok-secret", b"0123456789abcdef0123456789abcdef\n");
    validator(&JwtSettings {
        secret_files: vec![ok],
        ..settings(&["HS256"])
    });
}

#[test]
fn bad_jwks_reported() {
    let cases = [
        ("{not json", "invalid JSON"),
        (r#"{"foo": []}"#, "no `keys` array"),
        (
            r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}"#,
            "no usable key",
        ),
        (
            r#"{"keys": [{"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}]}"#,
            "key `broken`",
        ),
    ];
    for (json, needle) in cases {
        let path = temp_file("jwks.json", json.as_bytes());
        let errs = errors(&JwtSettings {
            jwks_file: Some(path.clone()),
            ..settings(&["RS256"])
        });
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_mentions(&errs, &[needle, &path]);
    }
}

#[test]
fn jwks_key_restricted_to_its_alg() {
    // A JWKS key declared for ES256 cannot verify RS256 tokens... and an RSA key
    // declared "RS256" is the only key here, so RS256 is usable.
    let mut key = jwk(&rsa_key(1), jsonwebtoken::Algorithm::RS256, "k1");
    let path = temp_file(
        "jwks.json",
        json!({"keys": [key.clone()]}).to_string().as_bytes(),
    );
    assert!(
        JwtValidator::new(&JwtSettings {
            jwks_file: Some(path),
            ..settings(&["RS256"])
        })
        .is_ok()
    );
    key["alg"] = "ES256".into();
    let path = temp_file("jwks.json", json!({"keys": [key]}).to_string().as_bytes());
    let errs = errors(&JwtSettings {
        jwks_file: Some(path),
        ..settings(&["RS256"])
    });
    assert_mentions(&errs, &["RS256 is allowed but no RSA public key"]);
}

#[test]
fn debug_output_has_no_secret() {
    let v = validator(&hs_settings());
    let debug = format!("{v:?}");
    assert!(debug.contains("HS256"), "{debug}");
    assert!(
        !debug.contains(std::str::from_utf8(SECRET).unwrap()),
        "{debug}"
    );
    let debug = format!("{:?}", hs_settings());
    assert!(debug.contains("[1 redacted]"), "{debug}");
    assert!(!debug.contains("48, 49, 50"), "{debug}");
}

#[test]
fn validator_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<JwtValidator>();
    check::<crate::Claims>();
}
