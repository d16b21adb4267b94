//! The cache of validated tokens, with an injected clock.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::JwtError;

#[test]
fn cached_token_refused_once_expired() {
    let v = validator(&hs_settings());
    let t0 = now();
    let token = hs_token(&json!({"sub": "a", "exp": t0 + 2}));
    assert!(v.validate_at(&token, t0).is_ok());
    assert!(v.inner.cache.contains_key(token.as_str()));
    assert_eq!(v.validate_at(&token, t0 + 2).unwrap().user(), Some("a"));
    assert_eq!(
        v.validate_at(&token, t0 + 3).map(|_| ()),
        Err(JwtError::Expired)
    );
    assert!(
        !v.inner.cache.contains_key(token.as_str()),
        "expired entry dropped"
    );
    assert_eq!(
        v.validate_at(&token, t0 + 3).map(|_| ()),
        Err(JwtError::Expired)
    );
}

#[test]
fn cached_token_honours_leeway() {
    let v = validator(&JwtSettings {
        leeway: Duration::from_secs(30),
        ..hs_settings()
    });
    let t0 = now();
    let token = hs_token(&json!({"exp": t0 + 10}));
    assert!(v.validate_at(&token, t0).is_ok());
    assert!(v.validate_at(&token, t0 + 40).is_ok());
    assert_eq!(
        v.validate_at(&token, t0 + 41).map(|_| ()),
        Err(JwtError::Expired)
    );
}

#[test]
fn cached_token_refused_before_nbf() {
    let v = validator(&hs_settings());
    let t0 = now();
    let token = hs_token(&json!({"exp": t0 + 600, "nbf": t0}));
    assert!(v.validate_at(&token, t0).is_ok());
    assert_eq!(
        v.validate_at(&token, t0 - 100).map(|_| ()),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn entries_served_at_most_a_minute() {
    let v = validator(&hs_settings());
    let t0 = now();
    let long = hs_token(&json!({"exp": t0 + 3600}));
    let short = hs_token(&json!({"exp": t0 + 20}));
    let unbounded = hs_token(&json!({"sub": "no exp"}));
    let v2 = validator(&JwtSettings {
        require_exp: false,
        ..hs_settings()
    });
    v.validate_at(&long, t0).unwrap();
    v.validate_at(&short, t0).unwrap();
    v2.validate_at(&unbounded, t0).unwrap();
    assert_eq!(
        v.inner.cache.get(long.as_str()).unwrap().valid_until,
        t0 + 60
    );
    assert_eq!(
        v.inner.cache.get(short.as_str()).unwrap().valid_until,
        t0 + 20
    );
    assert_eq!(
        v2.inner.cache.get(unbounded.as_str()).unwrap().valid_until,
        t0 + 60
    );
    // Past the minute the token is validated again (and cached afresh).
    v.validate_at(&long, t0 + 61).unwrap();
    assert_eq!(
        v.inner.cache.get(long.as_str()).unwrap().valid_until,
        t0 + 121
    );
}

#[test]
fn failures_not_cached_and_clones_share_cache() {
    let v = validator(&hs_settings());
    let bad = sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(b"wrong secret, wrong secret, wrong"),
        None,
        &json!({"exp": now() + 60}),
    );
    assert_eq!(v.validate(&bad).map(|_| ()), Err(JwtError::BadSignature));
    assert!(!v.inner.cache.contains_key(bad.as_str()));

    let good = hs_token(&json!({"exp": now() + 60}));
    v.clone().validate(&good).unwrap();
    assert!(v.inner.cache.contains_key(good.as_str()));
}

#[test]
fn cache_keyed_by_full_token() {
    // Two tokens differing only in the last signature character.
    let v = validator(&hs_settings());
    let good = hs_token(&json!({"exp": now() + 60}));
    v.validate(&good).unwrap();
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(v.validate(&tampered).is_err());
}
