//! JWT validation on routes (issue #5): HS256 (secret file) and ES256
//! (public key file) tokens, required and optional routes, the 401 envelope
//! with `WWW-Authenticate`, and claims forwarded to the upstream as headers
//! that clients cannot spoof.

use std::collections::BTreeMap;

use perfgate_config::{JwtMode, RouteConfig};
use perfgate_test_support::jwt::{es256, hs256, now};
use perfgate_test_support::{Origin, Rsp, RunningOrigin, TempDir};
use serde_json::{Value, json};

use crate::support::{Gateway, RunningGateway};

const SECRET: &[u8] = b"integration-test-secret-0123456789";
const AUDIENCE: &str = "perfgate-tests";

/// A gateway with `/private` (jwt = required) and `/public`
/// (jwt = optional), HS256 and ES256 keys, `sub` forwarded as `X-User-Id`.
struct Setup {
    origin: RunningOrigin,
    gw: RunningGateway,
    /// The ES256 private key (PKCS#8 PEM) whose public key the gateway has.
    ec_key: String,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let origin = Origin::new()
        .handle("/private/data", |r| {
            Rsp::text("private").header("x-seen-user", r.header("x-user-id"))
        })
        .handle("/public/data", |r| {
            Rsp::text("public").header("x-seen-user", r.header("x-user-id"))
        })
        .route(
            "/private/cached",
            Rsp::text("shared").header("cache-control", "public, max-age=60"),
        )
        .run()
        .await;
    let dir = TempDir::new();
    let secret = dir.write("jwt.secret", SECRET);
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let public = dir.write("jwt-ec.pem", pair.public_key_pem());
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let (secret, public) = (path(secret), path(public));
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(RouteConfig {
            name: Some("private".into()),
            path: Some("/private".into()),
            jwt: Some(JwtMode::Required),
            ..RouteConfig::default()
        })
        .route(RouteConfig {
            name: Some("public".into()),
            path: Some("/public".into()),
            jwt: Some(JwtMode::Optional),
            ..RouteConfig::default()
        })
        .config(move |c| {
            c.jwt.secret_file = Some(secret);
            c.jwt.public_key_files = vec![public];
            c.jwt.audiences = vec![AUDIENCE.into()];
            c.jwt.forward_claims = BTreeMap::from([("sub".into(), "X-User-Id".into())]);
        })
        .spawn()
        .await;
    Setup {
        origin,
        gw,
        ec_key: pair.serialize_pem(),
        _dir: dir,
    }
}

/// Claims of a token for `sub`, valid for a minute.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "aud": AUDIENCE, "exp": now() + 60 })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The response is perfgate's 401 envelope with an RFC 6750 challenge.
fn assert_unauthorized(r: &perfgate_test_support::TestResponse, error: Option<&str>) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    let challenge = r.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"perfgate\""),
        "{challenge}"
    );
    match error {
        Some(description) => {
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            assert!(
                challenge.contains(&format!("error_description=\"{description}\"")),
                "{challenge}"
            );
            assert_eq!(v["error"]["message"], description, "{v}");
        }
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
}

#[tokio::test]
async fn valid_hs256_token_reaches_the_upstream_with_its_user() {
    let s = setup().await;
    let token = hs256(SECRET, &claims("alice"));
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&token))
            .header("x-user-id", "mallory")
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-user"), "alice");
    let seen = s.origin.last_request("/private/data").expect("request");
    assert_eq!(
        seen.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["alice"],
        "the client's X-User-Id is replaced, not added to"
    );
    assert_eq!(seen.header("authorization"), bearer(&token));
}

#[tokio::test]
async fn valid_es256_token_is_accepted() {
    let s = setup().await;
    let token = es256(&s.ec_key, &claims("bob"));
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&token))
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-user"), "bob");
}

#[tokio::test]
async fn bad_signature_is_401_and_never_reaches_the_upstream() {
    let s = setup().await;
    let forged = hs256(b"not-the-secret-0123456789abcdefgh", &claims("alice"));
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&forged))
            .await;
    assert_unauthorized(&r, Some("invalid token signature"));
    // An ES256 token from another key pair.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let forged = es256(&other.serialize_pem(), &claims("alice"));
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&forged))
            .await;
    assert_unauthorized(&r, Some("invalid token signature"));
    assert_eq!(s.origin.hits("/private/data"), 0);
    let failures =
        s.gw.metric(
            "perfgate_jwt_failures_total",
            &[("reason", "bad_signature")],
        )
        .await;
    assert_eq!(failures, Some(2.0));
}

#[tokio::test]
async fn expired_token_is_401() {
    let s = setup().await;
    // Past the 30 s leeway.
    let expired = hs256(
        SECRET,
        &json!({ "sub": "alice", "aud": AUDIENCE, "exp": now() - 120 }),
    );
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&expired))
            .await;
    assert_unauthorized(&r, Some("token expired"));
    assert_eq!(s.origin.hits("/private/data"), 0);
}

#[tokio::test]
async fn wrong_audience_is_401() {
    let s = setup().await;
    let token = hs256(
        SECRET,
        &json!({ "sub": "alice", "aud": "another-service", "exp": now() + 60 }),
    );
    let r =
        s.gw.get("/private/data")
            .header("authorization", &bearer(&token))
            .await;
    assert_unauthorized(&r, Some("token audience not accepted"));
    assert_eq!(s.origin.hits("/private/data"), 0);
}

#[tokio::test]
async fn missing_token_on_a_required_route_is_401() {
    let s = setup().await;
    let r = s.gw.get("/private/data").await;
    assert_unauthorized(&r, None);
    assert_eq!(r.header("www-authenticate"), "Bearer realm=\"perfgate\"");
    assert_eq!(r.json()["error"]["message"], "a bearer token is required");
    // Another scheme is no bearer token.
    let r =
        s.gw.get("/private/data")
            .header("authorization", "Basic YWxpY2U6cHc=")
            .await;
    assert_unauthorized(&r, None);
    assert_eq!(s.origin.hits("/private/data"), 0);
}

#[tokio::test]
async fn optional_route_without_token_strips_a_spoofed_user_header() {
    let s = setup().await;
    let r = s.gw.get("/public/data").header("x-user-id", "admin").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.origin.last_request("/public/data").expect("request");
    assert!(
        !seen.headers.contains_key("x-user-id"),
        "spoofed X-User-Id reached the upstream: {:?}",
        seen.headers
    );
    // With a valid token, the user is forwarded.
    let token = hs256(SECRET, &claims("carol"));
    let r =
        s.gw.get("/public/data")
            .header("authorization", &bearer(&token))
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-seen-user"), "carol");
}

#[tokio::test]
async fn optional_route_with_a_bad_token_is_401() {
    let s = setup().await;
    let r =
        s.gw.get("/public/data")
            .header("authorization", "Bearer not.a.token")
            .await;
    assert_unauthorized(&r, Some("malformed token"));
    assert_eq!(s.origin.hits("/public/data"), 0);
}

#[tokio::test]
async fn cached_responses_still_require_a_token() {
    let s = setup().await;
    let token = hs256(SECRET, &claims("alice"));
    let auth = bearer(&token);
    let first =
        s.gw.get("/private/cached")
            .header("authorization", &auth)
            .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let hit =
        s.gw.get("/private/cached")
            .header("authorization", &auth)
            .await;
    assert_eq!(hit.status, 200);
    assert_eq!(
        hit.header("cache-status"),
        "perfgate; hit",
        "{:?}",
        hit.headers
    );
    // The stored entry is not served to a client without a token.
    assert_unauthorized(&s.gw.get("/private/cached").await, None);
    assert_eq!(s.origin.hits("/private/cached"), 1);
}
