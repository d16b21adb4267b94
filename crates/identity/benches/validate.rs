//! Cost of token validation: a cached token (what every request of a
//! protected route pays once the token has been seen) and a first
//! validation per algorithm.
//!
//! Run with `cargo bench -p perfgate-identity --bench validate` (add
//! `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use perfgate_identity::{JwtSettings, JwtValidator};
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "sub": "user-1234", "iss": "https://idp.example", "aud": "api",
        "exp": now + 3600, "iat": now, "scope": "read write", "roles": ["a", "b"]
    });
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_pub = std::env::temp_dir().join(format!(
        "perfgate-identity-bench-{}.pem",
        std::process::id()
    ));
    std::fs::write(&ec_pub, ec.public_key_pem()).unwrap();
    let settings = JwtSettings {
        algorithms: vec!["HS256".into(), "RS256".into(), "ES256".into()],
        secrets: vec![SECRET.to_vec()],
        public_key_files: vec![
            key_path("rsa1.pub.pem"),
            ec_pub.to_string_lossy().into_owned(),
        ],
        issuers: vec!["https://idp.example".into()],
        audiences: vec!["api".into()],
        leeway: Duration::from_secs(30),
        ..JwtSettings::default()
    };
    let rsa = std::fs::read(key_path("rsa1.key.pem")).unwrap();
    let tokens = [
        (
            "hs256",
            token(Algorithm::HS256, &EncodingKey::from_secret(SECRET)),
        ),
        (
            "rs256",
            token(Algorithm::RS256, &EncodingKey::from_rsa_pem(&rsa).unwrap()),
        ),
        (
            "es256",
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            ),
        ),
    ];

    let validator = JwtValidator::new(&settings).unwrap();
    for (name, token) in &tokens {
        validator.validate(token).unwrap();
        c.bench_function(&format!("validate/cached/{name}"), |b| {
            b.iter(|| validator.validate(black_box(token)).unwrap())
        });
    }
    for (name, token) in &tokens {
        c.bench_function(&format!("validate/first/{name}"), |b| {
            b.iter_batched(
                || JwtValidator::new(&settings).unwrap(),
                |fresh| fresh.validate(black_box(token)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    let _ = std::fs::remove_file(ec_pub);
}

criterion_group!(benches, bench);
criterion_main!(benches);
