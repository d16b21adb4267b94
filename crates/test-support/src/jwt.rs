//! Signing test tokens (HS256 with a secret, ES256 with a PKCS#8 PEM key)
//! for the JWT tests.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

/// The current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HS256 token with `claims`, signed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign HS256 token")
}

/// An ES256 token with `claims`, signed with a P-256 private key in PKCS#8
/// PEM (as `rcgen::KeyPair::serialize_pem` writes it).
pub fn es256(private_key_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(private_key_pem.as_bytes()).expect("EC private key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("sign ES256 token")
}
