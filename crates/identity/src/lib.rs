//! JWT validation for perfgate's protected routes: HS256, RS256 and ES256
//! compact JWS tokens, verified against HMAC secrets, PEM public keys or
//! certificates, and JWKS keys.
//!
//! [`JwtValidator::new`] reads every key once and reports every problem;
//! [`JwtValidator::validate`] checks the signature, the algorithm, `exp` and
//! `nbf` (with leeway), `iss` and `aud`, and returns the token's [`Claims`].
//! [`bearer`] extracts the token from an `Authorization` header value.
//!
//! ```
//! use perfgate_identity::{JwtSettings, JwtValidator, bearer};
//! # use jsonwebtoken::{EncodingKey, Header, encode};
//! # use std::time::{SystemTime, UNIX_EPOCH};
//! let settings = JwtSettings {
//!     algorithms: vec!["HS256".into()],
//!     secrets: vec![b"a secret of at least 32 bytes....".to_vec()],
//!     ..JwtSettings::default()
//! };
//! let validator = JwtValidator::new(&settings).expect("settings");
//! # let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 60;
//! # let claims = serde_json::json!({"sub": "alice", "exp": exp});
//! # let key = EncodingKey::from_secret(b"a secret of at least 32 bytes....");
//! # let token = encode(&Header::default(), &claims, &key).unwrap();
//! let authorization = format!("Bearer {token}");
//! let token = bearer(authorization.as_bytes()).expect("bearer token");
//! let claims = validator.validate(token).expect("valid token");
//! assert_eq!(claims.user(), Some("alice"));
//! ```
//!
//! # Cache
//!
//! Validation runs on every request of a protected route, including cache
//! hits, so successful validations are remembered in a bounded in-memory
//! cache (10,000 tokens) keyed by the *full* token string (never a hash: a
//! collision would let one token pass as another). A cached token is served
//! until `min(exp + leeway, cached_at + 60 s)` and only while `nbf` allows;
//! then it is validated again from scratch. Failures are not cached: only
//! tokens signed by a configured key can occupy memory, and re-validating a
//! refused token costs what validating it did the first time.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod bearer;
mod claims;
mod error;
mod keys;
mod settings;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use moka::sync::Cache;
use serde_json::{Map, Value};

pub use bearer::bearer;
pub use claims::Claims;
pub use error::JwtError;
pub use keys::MIN_HS256_SECRET;
pub use settings::JwtSettings;

use keys::KeySet;

/// Most tokens remembered by a validator.
const CACHE_CAPACITY: u64 = 10_000;
/// Longest a validated token is served from the cache without re-validation.
const CACHE_TTL_SECS: u64 = 60;

/// Validates tokens against the configured keys and claim rules, with a
/// cache of tokens already validated.
///
/// Cheap to clone (clones share the keys and the cache); `Send + Sync`.
#[derive(Clone)]
pub struct JwtValidator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeySet,
    /// One `Validation` per allowed algorithm (`jsonwebtoken` wants all the
    /// algorithms of a `Validation` to share the key's family).
    validations: Vec<(Algorithm, Validation)>,
    leeway: u64,
    user_claim: String,
    cache: Cache<Arc<str>, Cached>,
}

/// A validated token's claims and how long they may be served.
#[derive(Clone)]
struct Cached {
    claims: Claims,
    /// Unix seconds after which the entry must not be served.
    valid_until: u64,
    not_before: Option<u64>,
}

impl JwtValidator {
    /// Reads every key file and checks the settings. `Err` lists every
    /// problem, one message each, naming the file or setting and the reason
    /// (never key material).
    ///
    /// Besides unreadable or invalid files, it is an error to configure no
    /// algorithm, an unsupported one, or an algorithm for which no key is
    /// configured (e.g. RS256 without any RSA key).
    pub fn new(settings: &JwtSettings) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let algorithms = keys::parse_algorithms(&settings.algorithms, &mut errors);
        let before_keys = errors.len();
        let keys = KeySet::load(settings, &mut errors);
        if errors.len() == before_keys {
            for alg in &algorithms {
                if !keys.has_key_for(*alg) {
                    let kind = match alg {
                        Algorithm::HS256 => "HMAC secret",
                        Algorithm::RS256 => "RSA public key",
                        _ => "EC P-256 public key",
                    };
                    errors.push(format!(
                        "jwt algorithms: {} is allowed but no {kind} is configured",
                        keys::alg_name(*alg)
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let leeway = settings.leeway.as_secs();
        let validations = algorithms
            .iter()
            .map(|alg| (*alg, settings.validation_for(*alg, leeway)))
            .collect();
        let user_claim = match settings.user_claim.as_str() {
            "" => "sub".to_string(),
            claim => claim.to_string(),
        };
        let cache = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .time_to_live(Duration::from_secs(CACHE_TTL_SECS))
            .build();
        Ok(JwtValidator {
            inner: Arc::new(Inner {
                keys,
                validations,
                leeway,
                user_claim,
                cache,
            }),
        })
    }

    /// Validates a compact JWS token (without "Bearer "): signature, allowed
    /// algorithm, `exp`/`nbf` with leeway, `iss`, `aud`. Served from the
    /// cache when the same token was validated recently.
    pub fn validate(&self, token: &str) -> Result<Claims, JwtError> {
        self.validate_at(token, now_unix())
    }

    /// [`JwtValidator::validate`] with the clock (Unix seconds) given: used
    /// for the cache and for the `exp`/`nbf` checks.
    pub(crate) fn validate_at(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let inner = &*self.inner;
        if let Some(cached) = inner.cache.get(token) {
            let nbf_ok = cached
                .not_before
                .is_none_or(|nbf| nbf <= now.saturating_add(inner.leeway));
            if now <= cached.valid_until && nbf_ok {
                return Ok(cached.claims);
            }
            inner.cache.invalidate(token);
        }
        let (claims, exp, not_before) = self.verify(token, now)?;
        let ttl_end = now.saturating_add(CACHE_TTL_SECS);
        let valid_until = exp.map_or(ttl_end, |exp| exp.saturating_add(inner.leeway).min(ttl_end));
        let cached = Cached {
            claims: claims.clone(),
            valid_until,
            not_before,
        };
        inner.cache.insert(Arc::from(token), cached);
        Ok(claims)
    }

    /// Full validation, bypassing the cache. Returns the claims with `exp`
    /// and `nbf`.
    fn verify(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Claims, Option<u64>, Option<u64>), JwtError> {
        let inner = &*self.inner;
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        let Some((alg, validation)) = inner.validations.iter().find(|(alg, _)| *alg == header.alg)
        else {
            return Err(JwtError::AlgorithmNotAllowed);
        };
        let candidates = inner.keys.candidates(*alg, header.kid.as_deref());
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        let mut payload = None;
        for key in candidates {
            match decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    payload = Some(data.claims);
                    break;
                }
                Err(e) if error::is_key_mismatch(e.kind()) => {}
                Err(e) => return Err(error::from_kind(e.kind())),
            }
        }
        let payload = payload.ok_or(JwtError::BadSignature)?;
        // `jsonwebtoken` checked exp/nbf against the system clock; check them
        // against `now` too (the same clock outside tests).
        let exp = numeric_date(payload.get("exp"));
        let not_before = numeric_date(payload.get("nbf"));
        if exp.is_some_and(|exp| exp.saturating_add(inner.leeway) < now) {
            return Err(JwtError::Expired);
        }
        if not_before.is_some_and(|nbf| nbf > now.saturating_add(inner.leeway)) {
            return Err(JwtError::NotYetValid);
        }
        Ok((Claims::new(payload, &inner.user_claim), exp, not_before))
    }
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<_> = self
            .inner
            .validations
            .iter()
            .map(|(alg, _)| keys::alg_name(*alg))
            .collect();
        f.debug_struct("JwtValidator")
            .field("algorithms", &algorithms)
            .field("keys", &self.inner.keys.len())
            .field("leeway", &self.inner.leeway)
            .field("user_claim", &self.inner.user_claim)
            .finish_non_exhaustive()
    }
}

/// A JWT NumericDate as whole Unix seconds (as `jsonwebtoken` reads it:
/// non-negative, fractions rounded).
fn numeric_date(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

/// The system clock in Unix seconds.
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
