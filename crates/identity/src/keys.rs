//! Loading verification keys (HMAC secrets, PEM public keys and
//! certificates, a JWKS file) and picking the candidates for a token.
//!
//! Every problem is collected as one message naming the file or setting, so
//! that start-up reports all of them at once. Messages never contain key
//! material.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::Value;

use crate::JwtSettings;

/// The algorithms this crate can be configured to accept.
pub(crate) const SUPPORTED: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];

/// Smallest RSA modulus accepted (the crypto backend refuses smaller keys
/// at verification time anyway).
const MIN_RSA_BITS: usize = 2048;

/// Parses the configured algorithm names.
pub(crate) fn parse_algorithms(names: &[String], errors: &mut Vec<String>) -> Vec<Algorithm> {
    if names.is_empty() {
        errors.push("jwt algorithms: none configured (expected HS256, RS256 and/or ES256)".into());
    }
    let mut algorithms = Vec::new();
    for name in names {
        match SUPPORTED.iter().find(|alg| alg_name(**alg) == name.trim()) {
            Some(alg) if !algorithms.contains(alg) => algorithms.push(*alg),
            Some(_) => {}
            None => errors.push(format!(
                "jwt algorithms: unsupported algorithm `{name}` (expected HS256, RS256 or ES256)"
            )),
        }
    }
    algorithms
}

/// The JOSE name of a supported algorithm.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "unsupported",
    }
}

/// One verification key.
struct KeyEntry {
    /// `kid` (JWKS keys only).
    kid: Option<String>,
    /// The only algorithm the key may be used with, when the JWKS says so.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl KeyEntry {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|only| only == alg)
    }
}

/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key of at
/// least the hash size (256 bits); shorter ones can be brute-forced offline
/// from a single token.
pub const MIN_HS256_SECRET: usize = 32;

/// All configured verification keys.
pub(crate) struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Reads every configured key, appending one message per problem.
    pub(crate) fn load(settings: &JwtSettings, errors: &mut Vec<String>) -> KeySet {
        let mut entries = Vec::new();
        let mut add = |key| {
            entries.push(KeyEntry {
                kid: None,
                alg: None,
                key,
            })
        };
        for path in &settings.secret_files {
            match std::fs::read(path) {
                Ok(mut secret) => {
                    secret.truncate(secret.trim_ascii_end().len());
                    if secret.is_empty() {
                        errors.push(format!("jwt secret file `{path}`: empty"));
                    } else if secret.len() < MIN_HS256_SECRET {
                        errors.push(format!(
                            "jwt secret file `{path}`: {} bytes; an HS256 secret needs at least {MIN_HS256_SECRET}",
                            secret.len()
                        ));
                    } else {
                        add(DecodingKey::from_secret(&secret));
                    }
                }
                Err(e) => errors.push(format!("jwt secret file `{path}`: cannot read: {e}")),
            }
        }
        for (i, secret) in settings.secrets.iter().enumerate() {
            if secret.is_empty() {
                errors.push(format!("jwt secret #{}: empty", i + 1));
            } else if secret.len() < MIN_HS256_SECRET {
                errors.push(format!(
                    "jwt secret #{}: {} bytes; an HS256 secret needs at least {MIN_HS256_SECRET}",
                    i + 1,
                    secret.len()
                ));
            } else {
                add(DecodingKey::from_secret(secret));
            }
        }
        for path in &settings.public_key_files {
            match std::fs::read(path) {
                Ok(pem) => match public_key_from_pem(&pem) {
                    Ok(key) => add(key),
                    Err(why) => errors.push(format!("jwt public key file `{path}`: {why}")),
                },
                Err(e) => errors.push(format!("jwt public key file `{path}`: cannot read: {e}")),
            }
        }
        if let Some(path) = &settings.jwks_file {
            match std::fs::read(path) {
                Ok(json) => load_jwks(&json, &mut entries).unwrap_or_else(|why| {
                    errors.extend(
                        why.into_iter()
                            .map(|why| format!("jwt jwks file `{path}`: {why}")),
                    )
                }),
                Err(e) => errors.push(format!("jwt jwks file `{path}`: cannot read: {e}")),
            }
        }
        KeySet { entries }
    }

    /// Whether some key can verify tokens signed with `alg`.
    pub(crate) fn has_key_for(&self, alg: Algorithm) -> bool {
        self.entries.iter().any(|entry| entry.fits(alg))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys to try for a token signed with `alg`: with a `kid`, the keys
    /// carrying that kid, or when none does, the keys without a kid (files
    /// and secrets); without a `kid`, every key of the right type.
    pub(crate) fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<&DecodingKey> {
        let fitting = self.entries.iter().filter(|entry| entry.fits(alg));
        if let Some(kid) = kid {
            let named: Vec<_> = fitting
                .clone()
                .filter(|entry| entry.kid.as_deref() == Some(kid))
                .map(|entry| &entry.key)
                .collect();
            if !named.is_empty() {
                return named;
            }
            return fitting
                .filter(|entry| entry.kid.is_none())
                .map(|entry| &entry.key)
                .collect();
        }
        fitting.map(|entry| &entry.key).collect()
    }
}

/// An RSA or EC P-256 public key from a PEM "PUBLIC KEY" (SPKI),
/// "RSA PUBLIC KEY" (PKCS#1) or "CERTIFICATE" block.
fn public_key_from_pem(pem: &[u8]) -> Result<DecodingKey, String> {
    if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") {
        return Err("holds a private key; configure the public key or a certificate".into());
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        check_rsa(&key)?;
        return Ok(key);
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        check_p256(&key)?;
        return Ok(key);
    }
    Err("not a PEM RSA or EC public key or certificate".into())
}

/// Checks that an RSA key parses and is at least [`MIN_RSA_BITS`] long.
fn check_rsa(key: &DecodingKey) -> Result<(), String> {
    let components;
    let modulus = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, .. } => n,
        DecodingKeyKind::SecretOrDer(_) => {
            // Round-trip through a JWK: parses the DER with the crypto
            // backend and yields the modulus.
            components = Jwk::from_decoding_key(key, None)
                .and_then(|jwk| DecodingKey::from_jwk(&jwk))
                .map_err(|_| "invalid RSA public key".to_string())?;
            match components.kind() {
                DecodingKeyKind::RsaModulusExponent { n, .. } => n,
                DecodingKeyKind::SecretOrDer(_) => return Err("invalid RSA public key".into()),
            }
        }
    };
    let leading_zeros = modulus.iter().take_while(|b| **b == 0).count();
    let bits = (modulus.len() - leading_zeros) * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key of about {bits} bits; at least {MIN_RSA_BITS} required"
        ));
    }
    Ok(())
}

/// Checks that an EC key is an uncompressed P-256 point (ES256 only).
fn check_p256(key: &DecodingKey) -> Result<(), String> {
    match key.kind() {
        DecodingKeyKind::SecretOrDer(point) if point.len() == 65 && point[0] == 4 => Ok(()),
        _ => Err("EC key is not on curve P-256 (only ES256 is supported)".into()),
    }
}

/// Adds the usable keys of a JWKS document. Keys meant for encryption,
/// for another algorithm, or of another type or curve are skipped; keys that
/// should be usable but are broken are errors, as is a set with no usable
/// key.
fn load_jwks(json: &[u8], entries: &mut Vec<KeyEntry>) -> Result<(), Vec<String>> {
    let doc: Value =
        serde_json::from_slice(json).map_err(|e| vec![format!("invalid JSON: {e}")])?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(vec!["no `keys` array".into()]);
    };
    let mut errors = Vec::new();
    let before = entries.len();
    for (i, raw) in keys.iter().enumerate() {
        let label = match raw.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key `{kid}`"),
            None => format!("key #{}", i + 1),
        };
        if raw.get("use").is_some_and(|usage| usage != "sig") {
            continue;
        }
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                errors.push(format!("{label}: invalid: {e}"));
                continue;
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::HS256) => Some(Algorithm::HS256),
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(_) => continue,
        };
        let check: fn(&DecodingKey) -> Result<(), String> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => check_rsa,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => check_p256,
            AlgorithmParameters::OctetKey(p) => {
                // base64url without padding: 4 characters carry 3 bytes.
                let len = p.value.trim_end_matches('=').len() * 3 / 4;
                if len < MIN_HS256_SECRET {
                    errors.push(format!(
                        "{label}: {len} bytes; an HS256 secret needs at least {MIN_HS256_SECRET}"
                    ));
                    continue;
                }
                |_: &DecodingKey| Ok(())
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(&jwk)
            .map_err(|e| e.to_string())
            .and_then(|key| check(&key).map(|()| key))
        {
            Ok(key) => entries.push(KeyEntry {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            }),
            Err(why) => errors.push(format!("{label}: {why}")),
        }
    }
    if errors.is_empty() && entries.len() == before {
        errors.push("no usable key (RSA, EC P-256 or oct, for signatures)".into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
