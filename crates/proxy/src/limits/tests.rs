//! Key extraction, rule matching, reload and the 429 path (local counts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use perfgate_config::{Config, IpNet, RateLimitConfig, RouteConfig};
use perfgate_observe::Metrics;
use perfgate_traffic::gcra::Quota;

use super::{KeyKind, Limits, RATELIMIT, RATELIMIT_POLICY, query_value};
use crate::context::Conn;
use crate::context::RequestContext;

fn conn(ip: [u8; 4]) -> Conn {
    Conn::new(SocketAddr::from((ip, 40000)), false)
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

/// The key value `kind` extracts, None when the rule does not apply.
fn value(kind: &str, uri: &str, pairs: &[(&str, &str)], conn: &Conn) -> Option<String> {
    value_trusting(kind, uri, pairs, conn, &[])
}

fn value_trusting(
    kind: &str,
    uri: &str,
    pairs: &[(&str, &str)],
    conn: &Conn,
    trusted: &[IpNet],
) -> Option<String> {
    let kind = KeyKind::parse(kind).expect("key kind");
    let uri: Uri = uri.parse().expect("uri");
    let mut out = String::new();
    kind.write_value(
        &mut out,
        "login",
        trusted,
        &uri,
        &headers(pairs),
        conn,
        None,
    )
    .then_some(out)
}

fn body_value_of(kind: &str, content_type: &str, body: &str) -> Option<String> {
    let kind = KeyKind::parse(kind).expect("key kind");
    let uri: Uri = "/login".parse().expect("uri");
    let mut out = String::new();
    let conn = Conn::new("127.0.0.1:1".parse().expect("addr"), false);
    let h = if content_type.is_empty() {
        headers(&[])
    } else {
        headers(&[("content-type", content_type)])
    };
    kind.write_value(
        &mut out,
        "login",
        &[],
        &uri,
        &h,
        &conn,
        Some(body.as_bytes()),
    )
    .then_some(out)
}

#[test]
fn body_keys_read_json_and_form_fields() {
    let v = |ct: &str, body: &str| body_value_of("body:username", ct, body);
    let json = "application/json";
    assert_eq!(
        v(json, r#"{"username":"alice","p":"x"}"#).as_deref(),
        Some("=alice")
    );
    assert_eq!(
        body_value_of("body:id", "application/json; charset=utf-8", r#"{"id":42}"#).as_deref(),
        Some("=42")
    );
    assert_eq!(
        v(
            "application/x-www-form-urlencoded",
            "username=al%69ce&password=x"
        )
        .as_deref(),
        Some("=alice")
    );
    assert_eq!(v("", r#"{"username":"bob"}"#).as_deref(), Some("=bob"));
    assert_eq!(v("", "username=bob").as_deref(), Some("=bob"));
}

/// Issue #11 (10): what used to make a `body:` rule skip the request (or
/// count it under a fresh key) now counts it under the client's IP.
#[test]
fn unreadable_body_keys_fall_back_to_the_ip() {
    let v = |ct: &str, body: &str| body_value_of("body:username", ct, body);
    let ip = Some("@127.0.0.1".to_string());
    let json = "application/json";
    // Missing, not a scalar, not JSON at all.
    assert_eq!(v(json, r#"{"other":1}"#), ip);
    assert_eq!(v(json, "not json"), ip);
    assert_eq!(v(json, r#"{"username":{"x":1}}"#), ip);
    assert_eq!(v(json, r#"{"username":null}"#), ip);
    assert_eq!(v(json, r#"{"username":"  "}"#), ip);
    // Duplicates: parsers disagree on which one counts.
    assert_eq!(v(json, r#"{"username":"x1","username":"alice"}"#), ip);
    assert_eq!(v(json, r#"{"username":"x1","UserName":"alice"}"#), ip);
    let form = "application/x-www-form-urlencoded";
    assert_eq!(v(form, "username=x1&username=alice"), ip);
    // A repeat of the same value is one client.
    assert_eq!(
        v(form, "username=alice&username=Alice").as_deref(),
        Some("=alice")
    );
    // Multipart and other types are not read.
    let multipart =
        "--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--b--\r\n";
    assert_eq!(v("multipart/form-data; boundary=b", multipart), ip);
    assert_eq!(v("text/plain", "username=alice"), ip);
}

#[test]
fn encoded_bodies_fall_back_to_the_ip() {
    let kind = KeyKind::parse("body:username").expect("kind");
    let uri: Uri = "/login".parse().expect("uri");
    let c = conn([192, 0, 2, 1]);
    let key = |encoding: &str| {
        let mut out = String::new();
        let h = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", encoding),
        ]);
        kind.write_value(
            &mut out,
            "login",
            &[],
            &uri,
            &h,
            &c,
            Some(br#"{"username":"alice"}"#),
        );
        out
    };
    assert_eq!(key("gzip"), "@192.0.2.1");
    assert_eq!(key("identity"), "=alice");
}

#[test]
fn values_are_trimmed_and_case_folded() {
    let json = "application/json";
    let a = body_value_of(
        "body:username",
        json,
        r#"{"username":" Alice@Example.COM "}"#,
    );
    let b = body_value_of("body:username", json, r#"{"username":"alice@example.com"}"#);
    assert_eq!(a, b);
    assert_eq!(a.as_deref(), Some("=alice@example.com"));
}

#[test]
fn parses_key_kinds() {
    assert_eq!(KeyKind::parse("ip"), Some(KeyKind::Ip));
    assert_eq!(KeyKind::parse("user"), Some(KeyKind::User));
    assert_eq!(KeyKind::parse("route"), Some(KeyKind::Route));
    assert_eq!(KeyKind::parse("global"), Some(KeyKind::Global));
    assert_eq!(
        KeyKind::parse("header:X-Api-Key"),
        Some(KeyKind::Header(http::HeaderName::from_static("x-api-key")))
    );
    assert_eq!(
        KeyKind::parse("query:key"),
        Some(KeyKind::Query("key".into()))
    );
    for bad in ["", "cookie:a", "header:", "query:", "header:a b", "IP"] {
        assert_eq!(KeyKind::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn ip_key_is_the_peer_or_the_forwarded_client_behind_trusted_proxies() {
    let c = conn([10, 0, 0, 7]);
    let xff = [("x-forwarded-for", "203.0.113.9, 10.0.0.1")];
    assert_eq!(value("ip", "/", &xff, &c).as_deref(), Some("10.0.0.7"));
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    assert_eq!(
        value_trusting("ip", "/", &xff, &c, &trusted).as_deref(),
        Some("203.0.113.9")
    );
}

#[test]
fn user_route_and_global_keys() {
    let mut c = conn([127, 0, 0, 1]);
    assert_eq!(value("user", "/", &[], &c), None, "no user: rule skipped");
    c.user = Some(Arc::from("alice"));
    assert_eq!(value("user", "/", &[], &c).as_deref(), Some("alice"));
    assert_eq!(value("route", "/", &[], &c).as_deref(), Some("login"));
    assert_eq!(value("global", "/", &[], &c).as_deref(), Some(""));
}

#[test]
fn header_key_uses_the_first_field_and_skips_when_absent() {
    let c = conn([127, 0, 0, 1]);
    let kind = "header:X-Api-Key";
    assert_eq!(value(kind, "/", &[], &c), None);
    let h = [("x-api-key", "k1"), ("x-api-key", "k2")];
    assert_eq!(value(kind, "/", &h, &c).as_deref(), Some("k1"));
    // Long values are hashed: bounded keys whatever the client sends.
    let long = "k".repeat(5000);
    let v = value(kind, "/", &[("x-api-key", &long)], &c).expect("value");
    assert!(v.starts_with('#') && v.len() == 33, "{v}");
    let other = format!("{long}x");
    assert_ne!(value(kind, "/", &[("x-api-key", &other)], &c), Some(v));
}

#[test]
fn query_key_is_decoded_and_falls_back_to_the_ip() {
    let c = conn([127, 0, 0, 1]);
    let ip = Some("@127.0.0.1".to_string());
    let v = |uri: &str| value("query:key", uri, &[], &c);
    // Absent, empty or repeated with different values: the IP counts.
    assert_eq!(v("/p"), ip);
    assert_eq!(v("/p?other=1"), ip);
    assert_eq!(v("/p?key"), ip);
    assert_eq!(v("/p?a=1&key=abc&key=z"), ip);
    assert_eq!(v("/p?key=abc&KEY=z"), ip);
    // One client, whatever the encoding, case or repeats of one value.
    for same in [
        "/p?key=abc",
        "/p?key=%61bc",
        "/p?%6Bey=abc",
        "/p?KEY=ABC",
        "/p?key=abc&key=ABC",
        "/p?key=+abc+",
    ] {
        assert_eq!(v(same).as_deref(), Some("=abc"), "{same}");
    }
}

#[test]
fn query_value_decoding() {
    assert_eq!(query_value("k=a+b%20c", "k").as_deref(), Some("a b c"));
    assert_eq!(
        query_value("k=%zz%4", "k").as_deref(),
        Some("%zz%4"),
        "bad escapes kept"
    );
    assert_eq!(query_value("k=%E2%82%AC", "k").as_deref(), Some("€"));
    assert_eq!(query_value("kk=1&k=2", "k").as_deref(), Some("2"));
    assert_eq!(query_value("", "k"), None);
}

fn rule(name: &str, key: &str, rate: u32, per_secs: u64) -> RateLimitConfig {
    RateLimitConfig {
        name: name.into(),
        key: key.into(),
        rate,
        per: perfgate_config::Duration::from_secs(per_secs),
        shared: false,
        ..RateLimitConfig::default()
    }
}

fn config_with(rules: Vec<RateLimitConfig>) -> Config {
    let mut config = Config::default();
    config.upstream.url = "http://127.0.0.1:9".into();
    config.routes.push(RouteConfig {
        name: Some("login".into()),
        path: Some("/login".into()),
        ..RouteConfig::default()
    });
    config.rate_limits = rules;
    config
}

#[test]
fn rules_match_routes_and_methods() {
    let mut r = rule("login-ip", "ip", 5, 60);
    r.routes = vec!["login".into()];
    r.methods = vec!["POST".into()];
    let all = rule("all", "global", 100, 1);
    let limits = Limits::build(
        &config_with(vec![r, all]),
        &perfgate_observe::Metrics::new(),
        None,
    )
    .expect("build");
    let [login, all] = limits.rules() else {
        panic!("two rules")
    };
    assert!(login.applies("login", &Method::POST));
    assert!(!login.applies("login", &Method::GET));
    assert!(!login.applies("default", &Method::POST));
    assert!(all.applies("default", &Method::GET));
    assert_eq!(
        login.quota,
        Quota {
            rate: 5,
            period: Duration::from_secs(60),
            burst: 5
        }
    );
}

#[test]
fn reload_keeps_unchanged_counters() {
    let config = config_with(vec![rule("a", "ip", 5, 60), rule("b", "ip", 5, 60)]);
    let first = Limits::build(&config, &perfgate_observe::Metrics::new(), None).expect("build");
    let mut changed = config_with(vec![rule("a", "ip", 5, 60), rule("b", "ip", 6, 60)]);
    changed.rate_limits[0].methods = vec!["POST".into()];
    let second =
        Limits::build(&changed, &perfgate_observe::Metrics::new(), Some(&first)).expect("reload");
    assert!(
        Arc::ptr_eq(&first.rules()[0].local, &second.rules()[0].local),
        "same name, key and quota: counters kept"
    );
    assert!(
        !Arc::ptr_eq(&first.rules()[1].local, &second.rules()[1].local),
        "quota changed: fresh counters"
    );
}

/// The parts of a policy generation this phase reads, built from `config`
/// as a gateway builds them (the phase is tested without a gateway).
struct Phase {
    routes: crate::route::Routes,
    limits: super::Limits,
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
            limits: super::Limits::build(config, &metrics, None).expect("limits"),
            metrics,
        }
    }

    /// Read like a policy generation: `policy.routes`, `policy.limits`.
    fn policy(&self) -> &Self {
        self
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn limit_env(&self) -> super::LimitEnv<'_> {
        super::LimitEnv {
            redis: None,
            metrics: &self.metrics,
            body_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The limit phase's inputs for `config` (local counts: no Redis).
fn gateway(config: &Config) -> Phase {
    Phase::new(config)
}

/// One request through `limit`; the response headers it would carry.
async fn check(
    gw: &Phase,
    method: Method,
    path: &str,
    pairs: &[(&str, &str)],
    conn: &Conn,
) -> Result<Vec<(http::HeaderName, HeaderValue)>, crate::Error> {
    let policy = gw.policy();
    let route = policy.routes.select(&method, path).expect("route").clone();
    let uri: Uri = path.parse().expect("uri");
    let mut cx = RequestContext::new(perfgate_observe::RequestKind::Client, &method, &uri, conn);
    policy
        .limits
        .check(
            &gw.limit_env(),
            &route,
            &method,
            &uri,
            &headers(pairs),
            conn,
            None,
            &mut cx,
        )
        .await?;
    Ok(cx.limit_headers)
}

#[tokio::test]
async fn sixth_login_is_refused_with_headers() {
    let mut r = rule("login-ip", "ip", 5, 60);
    r.routes = vec!["login".into()];
    r.methods = vec!["POST".into()];
    let gw = gateway(&config_with(vec![r]));
    let c = conn([192, 0, 2, 1]);
    for i in 0..5u32 {
        let h = check(&gw, Method::POST, "/login", &[], &c)
            .await
            .expect("allowed");
        assert_eq!(
            h[0],
            (
                RATELIMIT_POLICY,
                HeaderValue::from_static("\"login-ip\";q=5;w=60")
            )
        );
        assert_eq!(h[1].0, RATELIMIT);
        let left = 4 - i;
        assert!(
            h[1].1
                .to_str()
                .expect("ascii")
                .starts_with(&format!("\"login-ip\";r={left};t=")),
            "{:?}",
            h[1].1
        );
    }
    let err = check(&gw, Method::POST, "/login", &[], &c)
        .await
        .expect_err("sixth");
    assert_eq!(err.message, "rate limit \"login-ip\" exceeded");
    let rsp = err.into_response();
    assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = rsp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(rsp.headers()["ratelimit-policy"], "\"login-ip\";q=5;w=60");
    assert!(
        rsp.headers()["ratelimit"]
            .to_str()
            .expect("ascii")
            .starts_with("\"login-ip\";r=0;t=")
    );

    // Another client, another budget; GET and other routes are not limited.
    assert!(
        check(&gw, Method::POST, "/login", &[], &conn([192, 0, 2, 2]))
            .await
            .is_ok()
    );
    assert_eq!(
        check(&gw, Method::GET, "/login", &[], &c)
            .await
            .expect("GET")
            .len(),
        0
    );
    assert_eq!(
        check(&gw, Method::POST, "/other", &[], &c)
            .await
            .expect("other")
            .len(),
        0
    );

    let text = gw.metrics().encode();
    for needle in [
        "perfgate_rate_limit_decisions_total{rule=\"login-ip\",result=\"allowed\"} 6",
        "perfgate_rate_limit_decisions_total{rule=\"login-ip\",result=\"limited\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

#[tokio::test]
async fn headers_come_from_the_tightest_rule_and_unkeyed_rules_are_skipped() {
    let gw = gateway(&config_with(vec![
        rule("wide", "global", 100, 1),
        rule("narrow", "ip", 3, 60),
        rule("per-key", "header:X-Api-Key", 1, 60),
    ]));
    let c = conn([192, 0, 2, 1]);
    let h = check(&gw, Method::GET, "/x", &[], &c)
        .await
        .expect("allowed");
    assert!(
        h[1].1
            .to_str()
            .expect("ascii")
            .starts_with("\"narrow\";r=2;"),
        "{h:?}"
    );
    // With the API key, the 1-per-minute rule is the tightest…
    let key = [("x-api-key", "k1")];
    let h = check(&gw, Method::GET, "/x", &key, &c)
        .await
        .expect("allowed");
    assert!(
        h[1].1
            .to_str()
            .expect("ascii")
            .starts_with("\"per-key\";r=0;"),
        "{h:?}"
    );
    // …and refuses the second request with that key, not another key.
    let err = check(&gw, Method::GET, "/x", &key, &c)
        .await
        .expect_err("limited");
    assert_eq!(err.message, "rate limit \"per-key\" exceeded");
    assert!(
        check(
            &gw,
            Method::GET,
            "/x",
            &[("x-api-key", "k2")],
            &conn([192, 0, 2, 9])
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn no_rules_no_headers() {
    let gw = gateway(&config_with(Vec::new()));
    let h = check(&gw, Method::GET, "/login", &[], &conn([127, 0, 0, 1]))
        .await
        .expect("ok");
    assert!(h.is_empty());
}
