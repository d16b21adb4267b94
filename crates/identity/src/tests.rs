//! Unit tests: helpers shared by the test modules.
//!
//! RSA keys are checked in under `tests/keys/` (generated with `openssl`,
//! test-only); EC P-256 keys and certificates are generated with `rcgen`.

mod cache;
mod claim_checks;
mod config;
mod parsing;
mod validate;

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

use crate::{JwtSettings, JwtValidator, now_unix};

/// The HMAC secret used by most tests.
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    now_unix()
}

/// Path of a checked-in test key.
fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).expect("test key")
}

/// Writes `contents` to a fresh file in the temp directory; returns its path.
fn temp_file(name: &str, contents: &[u8]) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "perfgate-identity-{}-{n}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, contents).expect("temp file");
    path.to_string_lossy().into_owned()
}

/// Settings accepting `algorithms`, no key, leeway 0.
fn settings(algorithms: &[&str]) -> JwtSettings {
    JwtSettings {
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        leeway: std::time::Duration::ZERO,
        ..JwtSettings::default()
    }
}

/// HS256 with [`SECRET`].
fn hs_settings() -> JwtSettings {
    JwtSettings {
        secrets: vec![SECRET.to_vec()],
        ..settings(&["HS256"])
    }
}

fn validator(settings: &JwtSettings) -> JwtValidator {
    JwtValidator::new(settings).unwrap_or_else(|errors| panic!("settings refused: {errors:?}"))
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).expect("sign")
}

fn hs_token(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        claims,
    )
}

/// Private key of the checked-in RSA key pair `n` (1 or 2).
fn rsa_key(n: u8) -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_key(&format!("rsa{n}.key.pem"))).expect("rsa key")
}

/// A fresh EC P-256 key pair and a self-signed certificate for it.
struct EcKey {
    private_pem: String,
    public_pem: String,
    cert_pem: String,
}

impl EcKey {
    fn generate() -> EcKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
        let cert = rcgen::CertificateParams::new(vec!["perfgate.test".to_string()])
            .and_then(|params| params.self_signed(&pair))
            .expect("certificate");
        EcKey {
            private_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
            cert_pem: cert.pem(),
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ec_pem(self.private_pem.as_bytes()).expect("ec key")
    }
}

/// The public JWK of `key` for `alg`, with `kid`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut value =
        serde_json::to_value(Jwk::from_encoding_key(key, alg).expect("jwk")).expect("json");
    value["kid"] = kid.into();
    value
}

/// Asserts `token` is refused with `expected`.
#[track_caller]
fn refused(validator: &JwtValidator, token: &str, expected: crate::JwtError) {
    assert_eq!(
        validator.validate(token).map(|c| c.as_map().clone()),
        Err(expected)
    );
}
