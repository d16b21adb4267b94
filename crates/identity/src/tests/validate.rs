//! Keys, signatures and algorithms.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::*;
use crate::JwtError;

#[test]
fn hs256_inline_secret_accepted_with_claims() {
    let v = validator(&hs_settings());
    let token = hs_token(&json!({
        "sub": "alice", "exp": now() + 600, "roles": ["a", "b"], "n": 42, "admin": true,
        "org": {"id": 1}
    }));
    let claims = v.validate(&token).unwrap();
    assert_eq!(claims.user(), Some("alice"));
    assert_eq!(claims.header_value("roles").as_deref(), Some("a,b"));
    assert_eq!(claims.header_value("n").as_deref(), Some("42"));
    assert_eq!(claims.header_value("admin").as_deref(), Some("true"));
    assert_eq!(claims.header_value("org").as_deref(), Some(r#"{"id":1}"#));
    assert_eq!(claims.get("sub"), Some(&json!("alice")));
}

#[test]
fn hs256_secret_file_trailing_newline_trimmed() {
    let path = temp_file("secret", b"s3cret-from-file-0123456789abcdef\r\n \n");
    let v = validator(&JwtSettings {
        secret_files: vec![path],
        ..settings(&["HS256"])
    });
    let key = EncodingKey::from_secret(b"s3cret-from-file-0123456789abcdef");
    let token = sign(
        Algorithm::HS256,
        &key,
        None,
        &json!({"sub": "bob", "exp": now() + 60}),
    );
    assert_eq!(v.validate(&token).unwrap().user(), Some("bob"));
}

#[test]
fn rs256_spki_pkcs1_and_certificate_accepted() {
    let token = sign(
        Algorithm::RS256,
        &rsa_key(1),
        None,
        &json!({"sub": "carol", "exp": now() + 60}),
    );
    for file in ["rsa1.pub.pem", "rsa1.pkcs1.pub.pem", "rsa1.cert.pem"] {
        let v = validator(&JwtSettings {
            public_key_files: vec![key_path(file)],
            ..settings(&["RS256"])
        });
        assert_eq!(v.validate(&token).unwrap().user(), Some("carol"), "{file}");
    }
}

#[test]
fn es256_public_key_and_certificate_accepted() {
    let ec = EcKey::generate();
    let token = sign(
        Algorithm::ES256,
        &ec.encoding_key(),
        None,
        &json!({"sub": "dave", "exp": now() + 60}),
    );
    for pem in [&ec.public_pem, &ec.cert_pem] {
        let path = temp_file("ec.pem", pem.as_bytes());
        let v = validator(&JwtSettings {
            public_key_files: vec![path],
            ..settings(&["ES256"])
        });
        assert_eq!(v.validate(&token).unwrap().user(), Some("dave"));
    }
}

#[test]
fn bad_signature_refused() {
    let v = validator(&hs_settings());
    let other = EncodingKey::from_secret(b"another secret, not the configured one");
    let token = sign(
        Algorithm::HS256,
        &other,
        None,
        &json!({"sub": "eve", "exp": now() + 60}),
    );
    refused(&v, &token, JwtError::BadSignature);

    // A valid signature over a different payload.
    let good = hs_token(&json!({"sub": "alice", "exp": now() + 60}));
    let forged = hs_token(&json!({"sub": "admin", "exp": now() + 60}));
    let parts: Vec<_> = good.split('.').collect();
    let forged_payload = forged.split('.').nth(1).unwrap();
    refused(
        &v,
        &format!("{}.{forged_payload}.{}", parts[0], parts[2]),
        JwtError::BadSignature,
    );

    let v = validator(&JwtSettings {
        public_key_files: vec![key_path("rsa1.pub.pem")],
        ..settings(&["RS256"])
    });
    let token = sign(
        Algorithm::RS256,
        &rsa_key(2),
        None,
        &json!({"sub": "eve", "exp": now() + 60}),
    );
    refused(&v, &token, JwtError::BadSignature);
}

#[test]
fn algorithm_not_allowed() {
    let v = validator(&JwtSettings {
        public_key_files: vec![key_path("rsa1.pub.pem")],
        ..settings(&["RS256"])
    });
    refused(
        &v,
        &hs_token(&json!({"exp": now() + 60})),
        JwtError::AlgorithmNotAllowed,
    );

    let v = validator(&hs_settings());
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
        None,
        &json!({"exp": now() + 60}),
    );
    refused(&v, &hs512, JwtError::AlgorithmNotAllowed);
}

#[test]
fn alg_confusion_with_public_key_as_hmac_secret_refused() {
    let public_pem = read_key("rsa1.pub.pem");
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        None,
        &json!({"sub": "admin", "exp": now() + 60}),
    );

    let v = validator(&JwtSettings {
        public_key_files: vec![key_path("rsa1.pub.pem")],
        ..settings(&["RS256"])
    });
    refused(&v, &forged, JwtError::AlgorithmNotAllowed);

    // Both families allowed: the RSA key is never used as an HMAC secret.
    let v = validator(&JwtSettings {
        public_key_files: vec![key_path("rsa1.pub.pem")],
        secrets: vec![SECRET.to_vec()],
        ..settings(&["RS256", "HS256"])
    });
    refused(&v, &forged, JwtError::BadSignature);
}

#[test]
fn alg_none_refused() {
    let v = validator(&hs_settings());
    let token = hs_token(&json!({"sub": "admin", "exp": now() + 60}));
    let payload = token.split('.').nth(1).unwrap();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    refused(
        &v,
        &format!("{none_header}.{payload}."),
        JwtError::Malformed,
    );
    let signature = token.split('.').nth(2).unwrap();
    refused(
        &v,
        &format!("{none_header}.{payload}.{signature}"),
        JwtError::Malformed,
    );
}

#[test]
fn garbage_is_malformed() {
    let v = validator(&hs_settings());
    for token in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "eyJ.eyJ.x",
        "Bearer x.y.z",
    ] {
        refused(&v, token, JwtError::Malformed);
    }
    // Validly signed, but `exp` is not a number: unusable, so "missing" when
    // required, malformed otherwise.
    let token = hs_token(&json!({"exp": "tomorrow"}));
    refused(&v, &token, JwtError::MissingClaim("exp".into()));
    let v = validator(&JwtSettings {
        require_exp: false,
        ..hs_settings()
    });
    refused(&v, &token, JwtError::Malformed);
}

fn jwks_validator(ec: &EcKey) -> JwtValidator {
    let p384 = jsonwebtoken::DecodingKey::from_ec_pem(&read_key("ec384.pub.pem")).unwrap();
    let mut p384 = serde_json::to_value(Jwk::from_decoding_key(&p384, None).unwrap()).unwrap();
    p384["kid"] = "p384".into();
    let mut enc = jwk(&rsa_key(1), Algorithm::RS256, "enc");
    enc["use"] = "enc".into();
    enc["alg"] = "RSA-OAEP".into();
    let jwks = json!({"keys": [
        enc,
        jwk(&rsa_key(1), Algorithm::RS256, "k1"),
        jwk(&rsa_key(2), Algorithm::RS256, "k2"),
        jwk(&ec.encoding_key(), Algorithm::ES256, "e1"),
        p384,
    ]});
    let path = temp_file("jwks.json", jwks.to_string().as_bytes());
    validator(&JwtSettings {
        jwks_file: Some(path),
        ..settings(&["RS256", "ES256"])
    })
}

#[test]
fn jwks_key_picked_by_kid() {
    let ec = EcKey::generate();
    let v = jwks_validator(&ec);
    assert_eq!(v.inner.keys.len(), 3, "enc and P-384 keys skipped");
    let claims = json!({"sub": "k", "exp": now() + 60});
    assert!(
        v.validate(&sign(Algorithm::RS256, &rsa_key(2), Some("k2"), &claims))
            .is_ok()
    );
    assert!(
        v.validate(&sign(Algorithm::RS256, &rsa_key(1), Some("k1"), &claims))
            .is_ok()
    );
    // Without kid every RSA key is tried.
    assert!(
        v.validate(&sign(Algorithm::RS256, &rsa_key(2), None, &claims))
            .is_ok()
    );
    assert!(
        v.validate(&sign(
            Algorithm::ES256,
            &ec.encoding_key(),
            Some("e1"),
            &claims
        ))
        .is_ok()
    );
    // The kid names a key that did not sign the token.
    refused(
        &v,
        &sign(Algorithm::RS256, &rsa_key(2), Some("k1"), &claims),
        JwtError::BadSignature,
    );
    // The kid names a key of another type.
    refused(
        &v,
        &sign(Algorithm::RS256, &rsa_key(1), Some("e1"), &claims),
        JwtError::UnknownKey,
    );
}

#[test]
fn unknown_kid_refused() {
    let v = jwks_validator(&EcKey::generate());
    let token = sign(
        Algorithm::RS256,
        &rsa_key(2),
        Some("nope"),
        &json!({"exp": now() + 60}),
    );
    refused(&v, &token, JwtError::UnknownKey);
}

#[test]
fn kid_unknown_to_jwks_falls_back_to_key_files() {
    let v = validator(&JwtSettings {
        public_key_files: vec![key_path("rsa1.pub.pem")],
        ..settings(&["RS256"])
    });
    let token = sign(
        Algorithm::RS256,
        &rsa_key(1),
        Some("some-kid"),
        &json!({"exp": now() + 60}),
    );
    assert!(v.validate(&token).is_ok());
}
