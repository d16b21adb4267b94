//! Identity modes, claim forwarding and 401 responses. Tokens are HS256,
//! signed once with [`SECRET`] (expiry in 2100, or in 2001 for the expired
//! one), so the proxy crate needs no signing library.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use perfgate_config::{Config, JwtConfig, JwtMode, RouteConfig};
use perfgate_identity::JwtError;
use perfgate_observe::Metrics;

use super::{Identity, Refusal, challenge, is_bearer_scheme};
use crate::context::Conn;
use perfgate_http::body::Body;

const SECRET: &str = "unit-test-secret-0123456789abcdef";
/// `{"sub":"alice","exp":4102444800,"role":"admin"}`.
const VALID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwicm9sZSI6ImFkbWluIn0.JERie5N6O5U3_XB9xuN7f_CPPPd2nB_LrMUg2XFkoJs";
/// `{"sub":"alice","exp":1000000000}`.
const EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTAwMDAwMDAwMH0.VnRuupAPM7IyA23YXsPY6vJx9c2WaMhtMFmq53ZV0a4";
/// VALID's claims signed with another secret.
const OTHER_SECRET: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.GCptiyV-Pi8O-n_dyOSJGHJYBfmdJRbltKqTSXEs9sg";
/// `{"sub":"alice"}`: no `exp`.
const NO_EXP: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.eqZeEP6Rytao0bmwkOWoNMX8ensKsqXRezRJF6khXPI";

/// A file holding [`SECRET`] (and a newline), written once per test run.
fn secret_file() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "perfgate-proxy-identity-{}.secret",
            std::process::id()
        ));
        std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
        path.to_string_lossy().into_owned()
    })
    .clone()
}

fn jwt_config() -> JwtConfig {
    JwtConfig {
        secret_file: Some(secret_file()),
        forward_claims: BTreeMap::from([
            ("sub".to_string(), "X-User-Id".to_string()),
            ("role".to_string(), "X-Role".to_string()),
        ]),
        ..JwtConfig::default()
    }
}

fn identity() -> Identity {
    Identity::from_settings(&jwt_config(), None).expect("identity")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn default_algorithms_build_with_only_a_secret() {
    // jwt.algorithms allows HS256, RS256 and ES256 by default; a secret
    // alone must be enough.
    assert_eq!(JwtConfig::default().algorithms.len(), 3);
    let id = identity();
    let mut h = headers(&[("authorization", &bearer(VALID))]);
    assert_eq!(
        id.check(JwtMode::Required, &mut h)
            .expect("valid")
            .as_deref(),
        Some("alice")
    );
}

#[test]
fn explicit_algorithm_without_its_key_is_an_error() {
    let jwt = JwtConfig {
        algorithms: vec!["RS256".into()],
        ..jwt_config()
    };
    let err = Identity::from_settings(&jwt, None)
        .err()
        .expect("no RSA key");
    assert!(err.contains("RS256"), "{err}");
}

#[test]
fn unreadable_key_file_is_an_error_naming_it() {
    let jwt = JwtConfig {
        public_key_files: vec!["/nonexistent/perfgate-key.pem".into()],
        ..jwt_config()
    };
    let err = Identity::from_settings(&jwt, None)
        .err()
        .expect("missing file");
    assert!(err.contains("/nonexistent/perfgate-key.pem"), "{err}");
}

#[test]
fn secret_from_the_environment_value() {
    let jwt = JwtConfig {
        secret_file: None,
        ..JwtConfig::default()
    };
    let id = Identity::from_settings(&jwt, Some(OsString::from(format!("{SECRET}\n"))))
        .expect("env secret, trailing newline trimmed");
    let mut h = headers(&[("authorization", &bearer(VALID))]);
    assert_eq!(
        id.check(JwtMode::Required, &mut h)
            .expect("valid")
            .as_deref(),
        Some("alice")
    );
    // An empty variable is no secret at all.
    assert!(Identity::from_settings(&jwt, Some(OsString::new())).is_err());
}

#[test]
fn build_is_none_when_every_route_is_off() {
    let mut config = Config {
        jwt: jwt_config(),
        ..Config::default()
    };
    assert!(Identity::build(&config).expect("build").is_none());
    config.routes.push(RouteConfig {
        path: Some("/api".into()),
        jwt: Some(JwtMode::Optional),
        ..RouteConfig::default()
    });
    assert!(Identity::build(&config).expect("build").is_some());
    config.routes[0].jwt = None;
    config.jwt.mode = JwtMode::Required;
    assert!(Identity::build(&config).expect("build").is_some());
}

#[test]
fn valid_token_sets_user_and_forwarded_claims() {
    let id = identity();
    let mut h = headers(&[
        ("authorization", &bearer(VALID)),
        ("x-user-id", "mallory"),
        ("x-user-id", "eve"),
        ("x-role", "root"),
    ]);
    for mode in [JwtMode::Optional, JwtMode::Required] {
        let mut h = h.clone();
        let user = id.check(mode, &mut h).expect("valid");
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(h.get_all("x-user-id").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(h.get_all("x-role").iter().collect::<Vec<_>>(), ["admin"]);
        assert!(h.contains_key(AUTHORIZATION), "the token itself goes on");
    }
    // Served from the validator's cache the second time: same answer.
    assert_eq!(
        id.check(JwtMode::Required, &mut h)
            .expect("cached")
            .as_deref(),
        Some("alice")
    );
}

#[test]
fn optional_without_token_strips_forwarded_headers() {
    let id = identity();
    let mut h = headers(&[("x-user-id", "mallory"), ("x-role", "admin")]);
    assert_eq!(id.check(JwtMode::Optional, &mut h), Ok(None));
    assert!(!h.contains_key("x-user-id"));
    assert!(!h.contains_key("x-role"));
    // Another scheme is not a bearer token: no user, nothing refused.
    let mut h = headers(&[("authorization", "Basic YWxpY2U6cHc="), ("x-user-id", "x")]);
    assert_eq!(id.check(JwtMode::Optional, &mut h), Ok(None));
    assert!(!h.contains_key("x-user-id"));
    assert_eq!(h.get(AUTHORIZATION).expect("kept"), "Basic YWxpY2U6cHc=");
}

#[test]
fn claim_headers_spelled_with_underscores_are_stripped() {
    // Issue #11 item 16: `X_User_Id` is `x-user-id` to CGI/WSGI upstreams.
    let id = identity();
    let mut h = headers(&[
        ("X_User_Id", "mallory"),
        ("x_role", "admin"),
        ("x-user_id", "mallory"),
        ("x_user_ids", "kept"),
        ("x-other", "kept"),
    ]);
    id.strip_claim_headers(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(left, ["x-other", "x_user_ids"]);
    // The same on a route whose mode is `optional` (check strips first).
    let mut h = headers(&[("X_USER_ID", "mallory")]);
    assert_eq!(id.check(JwtMode::Optional, &mut h), Ok(None));
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn required_without_token_is_missing() {
    let id = identity();
    for pairs in [
        vec![("x-user-id", "mallory")],
        vec![("authorization", "Basic YWxpY2U6cHc=")],
    ] {
        let mut h = headers(&pairs);
        assert_eq!(id.check(JwtMode::Required, &mut h), Err(Refusal::Missing));
        assert!(!h.contains_key("x-user-id"));
    }
}

#[test]
fn bad_tokens_are_refused_in_both_modes() {
    let id = identity();
    let cases = [
        (bearer(OTHER_SECRET), JwtError::BadSignature),
        (bearer(EXPIRED), JwtError::Expired),
        (bearer(NO_EXP), JwtError::MissingClaim("exp".into())),
        (bearer("not.a.jwt"), JwtError::Malformed),
        ("Bearer".to_string(), JwtError::Malformed),
        ("bearer    ".to_string(), JwtError::Malformed),
        ("Bearer a b".to_string(), JwtError::Malformed),
    ];
    for mode in [JwtMode::Optional, JwtMode::Required] {
        for (value, expected) in &cases {
            let mut h = headers(&[("authorization", value), ("x-user-id", "mallory")]);
            assert_eq!(
                id.check(mode, &mut h),
                Err(Refusal::Invalid(expected.clone())),
                "{mode:?} {value:?}"
            );
        }
    }
}

#[test]
fn two_authorization_fields_are_refused() {
    let id = identity();
    let mut h = headers(&[
        ("authorization", &bearer(VALID)),
        ("authorization", &bearer(OTHER_SECRET)),
    ]);
    assert_eq!(id.check(JwtMode::Optional, &mut h), Err(Refusal::Ambiguous));
}

#[test]
fn wrong_audience_is_refused() {
    let jwt = JwtConfig {
        audiences: vec!["tickets".into()],
        ..jwt_config()
    };
    let id = Identity::from_settings(&jwt, None).expect("identity");
    let mut h = headers(&[("authorization", &bearer(VALID))]);
    assert_eq!(
        id.check(JwtMode::Required, &mut h),
        Err(Refusal::Invalid(JwtError::MissingClaim("aud".into())))
    );
}

#[test]
fn refusals_become_401_with_a_challenge() {
    let rsp = Refusal::Missing.into_error().into_response();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rsp.headers()[WWW_AUTHENTICATE], "Bearer realm=\"perfgate\"");

    let rsp = Refusal::Invalid(JwtError::Expired).into_error();
    assert_eq!(rsp.message, "token expired");
    let rsp = rsp.into_response();
    assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        rsp.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"perfgate\", error=\"invalid_token\", error_description=\"token expired\""
    );
    assert_eq!(Refusal::Invalid(JwtError::Expired).code(), "expired");
    assert_eq!(Refusal::Missing.code(), "missing");
}

#[test]
fn challenge_escapes_the_description() {
    assert_eq!(
        challenge("invalid_token", "a \"b\" \\ c\u{1}é"),
        "Bearer realm=\"perfgate\", error=\"invalid_token\", error_description=\"a \\\"b\\\" \\\\ c??\""
    );
}

#[test]
fn bearer_scheme_detection() {
    assert!(is_bearer_scheme(b"Bearer"));
    assert!(is_bearer_scheme(b" bearer  x y"));
    assert!(!is_bearer_scheme(b"Bearerx"));
    assert!(!is_bearer_scheme(b"Basic abc"));
    assert!(!is_bearer_scheme(b"Bear"));
}

/// The parts of a policy generation this phase reads, built from `config`
/// as a gateway builds them (the phase is tested without a gateway).
struct Phase {
    routes: crate::route::Routes,
    identity: Option<super::Identity>,
    metrics: Arc<Metrics>,
}

impl Phase {
    fn new(config: &Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let tasks = perfgate_runtime::Supervisor::new();
        let pools =
            perfgate_upstream::pool::Pools::build(config, &metrics, None, &tasks).expect("pools");
        let routes = crate::route::Routes::build(config, &metrics, &pools).expect("routes");
        Self {
            routes,
            identity: super::Identity::build(config).expect("identity"),
            metrics,
        }
    }

    /// Read like a policy generation: `policy.routes`, `policy.identity`.
    fn policy(&self) -> &Self {
        self
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The identity phase's inputs for a default upstream (never contacted)
/// and these routes.
fn gateway(jwt: JwtConfig, routes: Vec<RouteConfig>) -> Phase {
    let mut config = Config {
        jwt,
        routes,
        ..Config::default()
    };
    config.upstream.url = "http://127.0.0.1:9".into();
    Phase::new(&config)
}

fn request(path: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::get(path).body(Body::full("")).expect("request");
    *req.headers_mut() = headers(pairs);
    req
}

fn conn() -> Conn {
    Conn::new(SocketAddr::from(([127, 0, 0, 1], 40000)), false)
}

#[tokio::test]
async fn gateway_applies_the_route_mode() {
    let gw = gateway(
        jwt_config(),
        vec![
            RouteConfig {
                name: Some("private".into()),
                path: Some("/private".into()),
                jwt: Some(JwtMode::Required),
                ..RouteConfig::default()
            },
            RouteConfig {
                name: Some("public".into()),
                path: Some("/public".into()),
                jwt: Some(JwtMode::Optional),
                ..RouteConfig::default()
            },
        ],
    );
    let policy = gw.policy();
    let route = |path: &str| {
        policy
            .routes
            .select(&http::Method::GET, path)
            .expect("route")
            .clone()
    };

    // Off (the default route): the token is not looked at, but a
    // client-sent forwarded-claim header is still removed.
    let mut req = request(
        "/other",
        &[("authorization", "Bearer junk"), ("x-user-id", "m")],
    );
    let mut c = conn();
    super::identify(
        policy.identity.as_ref(),
        &route("/other"),
        &mut req,
        &mut c,
        gw.metrics(),
    )
    .expect("off");
    assert!(req.headers().get("x-user-id").is_none());
    assert_eq!(req.headers()["authorization"], "Bearer junk");
    assert_eq!(c.user, None);

    // Required, valid.
    let mut req = request("/private", &[("authorization", &bearer(VALID))]);
    let mut c = conn();
    super::identify(
        policy.identity.as_ref(),
        &route("/private"),
        &mut req,
        &mut c,
        gw.metrics(),
    )
    .expect("valid");
    assert_eq!(c.user.as_deref(), Some("alice"));
    assert_eq!(req.headers()["x-user-id"], "alice");

    // Required, missing → 401 with the challenge, counted.
    let mut req = request("/private", &[]);
    let err = super::identify(
        policy.identity.as_ref(),
        &route("/private"),
        &mut req,
        &mut conn(),
        gw.metrics(),
    )
    .expect_err("missing");
    assert_eq!(err.kind, crate::ErrorKind::Unauthorized);
    assert_eq!(err.headers[0].0, WWW_AUTHENTICATE);

    // Optional without a token: no user, spoofed header gone.
    let mut req = request("/public", &[("x-user-id", "mallory")]);
    let mut c = conn();
    c.user = Some(Arc::from("stale"));
    super::identify(
        policy.identity.as_ref(),
        &route("/public"),
        &mut req,
        &mut c,
        gw.metrics(),
    )
    .expect("optional");
    assert_eq!(c.user, None);
    assert!(!req.headers().contains_key("x-user-id"));

    let mut text = String::new();
    prometheus_client_text(&gw, &mut text);
    assert!(
        text.contains("perfgate_jwt_failures_total{reason=\"missing\"} 1"),
        "{text}"
    );
}

fn prometheus_client_text(gw: &Phase, out: &mut String) {
    *out = gw.metrics().encode();
}
