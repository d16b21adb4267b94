//! Registered claims (`exp`, `nbf`, `iss`, `aud`) and the user claim.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::JwtError;

#[test]
fn user_claim_configurable_and_numbers_rendered() {
    let v = validator(&JwtSettings {
        user_claim: "uid".into(),
        ..hs_settings()
    });
    let claims = v
        .validate(&hs_token(
            &json!({"sub": "x", "uid": 1234, "exp": now() + 60}),
        ))
        .unwrap();
    assert_eq!(claims.user(), Some("1234"));
    let claims = v
        .validate(&hs_token(&json!({"sub": "x", "exp": now() + 60})))
        .unwrap();
    assert_eq!(claims.user(), None);
}

#[test]
fn expiry_checked_with_leeway() {
    let v = validator(&JwtSettings {
        leeway: Duration::from_secs(30),
        ..hs_settings()
    });
    assert!(
        v.validate(&hs_token(&json!({"sub": "a", "exp": now() - 10})))
            .is_ok()
    );
    refused(
        &v,
        &hs_token(&json!({"sub": "a", "exp": now() - 100})),
        JwtError::Expired,
    );

    let v = validator(&hs_settings());
    refused(
        &v,
        &hs_token(&json!({"sub": "a", "exp": now() - 5})),
        JwtError::Expired,
    );
}

#[test]
fn not_before_checked_with_leeway() {
    let v = validator(&JwtSettings {
        leeway: Duration::from_secs(30),
        ..hs_settings()
    });
    let claims = json!({"sub": "a", "exp": now() + 600, "nbf": now() + 100});
    refused(&v, &hs_token(&claims), JwtError::NotYetValid);
    assert!(
        v.validate(&hs_token(
            &json!({"sub": "a", "exp": now() + 600, "nbf": now() + 10})
        ))
        .is_ok()
    );
}

#[test]
fn audience_checked() {
    let v = validator(&JwtSettings {
        audiences: vec!["api".into(), "web".into()],
        ..hs_settings()
    });
    let exp = now() + 60;
    assert!(
        v.validate(&hs_token(&json!({"aud": "web", "exp": exp})))
            .is_ok()
    );
    assert!(
        v.validate(&hs_token(&json!({"aud": ["other", "api"], "exp": exp})))
            .is_ok()
    );
    refused(
        &v,
        &hs_token(&json!({"aud": "other", "exp": exp})),
        JwtError::WrongAudience,
    );
    refused(
        &v,
        &hs_token(&json!({"aud": ["x", "y"], "exp": exp})),
        JwtError::WrongAudience,
    );
    refused(
        &v,
        &hs_token(&json!({"exp": exp})),
        JwtError::MissingClaim("aud".into()),
    );

    // Not configured: any aud (or none) is fine.
    let v = validator(&hs_settings());
    assert!(
        v.validate(&hs_token(&json!({"aud": "anything", "exp": exp})))
            .is_ok()
    );
}

#[test]
fn issuer_checked() {
    let v = validator(&JwtSettings {
        issuers: vec!["https://idp.test".into()],
        ..hs_settings()
    });
    let exp = now() + 60;
    assert!(
        v.validate(&hs_token(&json!({"iss": "https://idp.test", "exp": exp})))
            .is_ok()
    );
    refused(
        &v,
        &hs_token(&json!({"iss": "https://evil.test", "exp": exp})),
        JwtError::WrongIssuer,
    );
    refused(
        &v,
        &hs_token(&json!({"exp": exp})),
        JwtError::MissingClaim("iss".into()),
    );
}

#[test]
fn exp_required_only_when_configured() {
    let token = hs_token(&json!({"sub": "a"}));
    refused(
        &validator(&hs_settings()),
        &token,
        JwtError::MissingClaim("exp".into()),
    );
    let v = validator(&JwtSettings {
        require_exp: false,
        ..hs_settings()
    });
    assert_eq!(v.validate(&token).unwrap().user(), Some("a"));
}
