//! Async jobs never mix callers (issue #11, items 2, 5 and 18):
//! de-duplication is per caller unless the route says `global`, failed
//! results are never reused, a result's `Set-Cookie` never reaches another
//! caller, batches carry one caller's jobs, and the upstream sees the
//! submitting client's address.

use http::Method;
use perfgate_config::{AsyncRouteConfig, Config, DedupScope, JwtMode, RouteConfig};
use perfgate_test_support::jwt::{hs256, now};
use perfgate_test_support::{Gate, Origin, Rsp, TempDir, TestResponse};
use serde_json::{Value, json};

use crate::support::{Gateway, RunningGateway};

/// `jobs.rs`'s async route, with one worker so that jobs run in order.
fn route(tweak: impl FnOnce(&mut AsyncRouteConfig)) -> RouteConfig {
    crate::jobs::analyze_route(|a| {
        a.concurrency = 1;
        tweak(a);
    })
}

async fn gateway(
    origin: &perfgate_test_support::RunningOrigin,
    route: RouteConfig,
    tweak: impl FnOnce(&mut Config) + 'static,
) -> RunningGateway {
    Gateway::builder()
        .upstream(origin.addr())
        .route(route)
        .config(tweak)
        .spawn()
        .await
}

/// Submits `body` as the caller with these header fields.
async fn submit_as(gw: &RunningGateway, headers: &[(&str, &str)], body: &Value) -> TestResponse {
    let mut r = gw.request(Method::POST, "/api/v1/analyze/async").json(body);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.await
}

async fn wait_state(gw: &RunningGateway, url: &str, state: &str) -> Value {
    gw.client()
        .job_in_state(url, state)
        .await
        .unwrap_or_else(|v| panic!("{url} did not become {state}: {v}"))
}

fn task(r: &TestResponse) -> String {
    r.json()["task_id"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn the_same_work_of_two_callers_is_two_jobs() {
    let gate = Gate::new();
    let origin = Origin::new()
        .handle("/api/v1/analyze", {
            let gate = gate.clone();
            move |req| {
                let who = req.header("authorization").to_string();
                Rsp::json(format!(r#"{{"for":"{who}"}}"#))
                    .header("set-cookie", &format!("session={}", who.len()))
                    .gated(&gate)
            }
        })
        .run()
        .await;
    let gw = gateway(&origin, route(|_| {}), |_| {}).await;
    let body = json!({"url": "https://example.com/report"});
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let first = submit_as(&gw, &alice, &body).await;
    assert_eq!(first.status, 202, "{}", first.text());
    // Another credential, or none, or a cookie: their own jobs.
    let as_bob = submit_as(&gw, &bob, &body).await;
    assert_eq!(as_bob.status, 202);
    assert_ne!(task(&as_bob), task(&first), "bob joined alice's job");
    assert_eq!(as_bob.json()["deduplicated"], false);
    let anonymous = submit_as(&gw, &[], &body).await;
    assert_ne!(task(&anonymous), task(&first));
    assert_ne!(task(&anonymous), task(&as_bob));
    let with_cookie = submit_as(&gw, &[("cookie", "sid=1")], &body).await;
    assert_ne!(task(&with_cookie), task(&anonymous));
    // The same caller again still joins its own job.
    let again = submit_as(&gw, &alice, &body).await;
    assert_eq!(again.status, 202);
    assert_eq!(task(&again), task(&first));
    assert_eq!(again.json()["deduplicated"], true);

    gate.open();
    let url = first.json()["status_url"].as_str().unwrap().to_string();
    let done = wait_state(&gw, &url, "succeeded").await;
    // The submitter's own result keeps what the upstream set for it.
    assert_eq!(
        done["result"]["headers"]["set-cookie"], "session=12",
        "{done}"
    );
    wait_state(
        &gw,
        as_bob.json()["status_url"].as_str().unwrap(),
        "succeeded",
    )
    .await;
    // Finished: bob is answered from bob's result, never alice's.
    let bob_again = submit_as(&gw, &bob, &body).await;
    assert_eq!(bob_again.status, 200, "{}", bob_again.text());
    assert_eq!(task(&bob_again), task(&as_bob));
    assert_eq!(bob_again.json()["result"]["body"]["for"], "Bearer bob");
    // Anonymous callers share one identity; their result carries no cookie.
    wait_state(
        &gw,
        anonymous.json()["status_url"].as_str().unwrap(),
        "succeeded",
    )
    .await;
    let anon_again = submit_as(&gw, &[], &body).await;
    assert_eq!(anon_again.status, 200);
    assert_eq!(task(&anon_again), task(&anonymous));
    let headers = &anon_again.json()["result"]["headers"];
    assert!(headers.get("set-cookie").is_none(), "{headers}");
    let result_url = format!(
        "{}/result",
        anonymous.json()["status_url"].as_str().unwrap()
    );
    let r = gw.get(&result_url).await;
    assert!(!r.has("set-cookie"), "a shared result's cookie was stored");
    assert_eq!(origin.hits("/api/v1/analyze"), 4);
}

#[tokio::test]
async fn a_global_route_shares_work_but_never_a_cookie() {
    let origin = Origin::new()
        .route(
            "/api/v1/analyze",
            Rsp::json(r#"{"score":1}"#).header("set-cookie", "session=first-caller"),
        )
        .run()
        .await;
    let gw = gateway(
        &origin,
        route(|a| a.dedup_scope = DedupScope::Global),
        |_| {},
    )
    .await;
    let body = json!({"url": "https://example.com/"});
    let first = submit_as(&gw, &[("authorization", "Bearer alice")], &body).await;
    assert_eq!(first.status, 202);
    let url = first.json()["status_url"].as_str().unwrap().to_string();
    let done = wait_state(&gw, &url, "succeeded").await;
    assert!(
        done["result"]["headers"].get("set-cookie").is_none(),
        "{done}"
    );
    let other = submit_as(&gw, &[("authorization", "Bearer mallory")], &body).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(task(&other), task(&first), "global scope shares the job");
    assert!(
        other.json()["result"]["headers"]
            .get("set-cookie")
            .is_none()
    );
    let r = gw.get(&format!("{url}/result")).await;
    assert_eq!(r.status, 200);
    assert!(!r.has("set-cookie"));
    assert_eq!(origin.hits("/api/v1/analyze"), 1);
}

#[tokio::test]
async fn a_failed_result_is_never_reused() {
    let origin = Origin::new()
        .handle("/api/v1/analyze", |req| {
            if req.header("authorization") == "Bearer expired" {
                Rsp::json(r#"{"error":"token expired"}"#).with_status(401)
            } else {
                Rsp::json(r#"{"ok":true}"#)
            }
        })
        .run()
        .await;
    let gw = gateway(
        &origin,
        route(|a| a.dedup_scope = DedupScope::Global),
        |_| {},
    )
    .await;
    let body = json!({"url": "https://example.com/"});
    let first = submit_as(&gw, &[("authorization", "Bearer expired")], &body).await;
    let url = first.json()["status_url"].as_str().unwrap().to_string();
    wait_state(&gw, &url, "failed").await;
    // The same work again (anyone's, on a global route): new work, not the
    // 401 of the first caller.
    let second = submit_as(&gw, &[("authorization", "Bearer fresh")], &body).await;
    assert_eq!(second.status, 202, "{}", second.text());
    assert_ne!(task(&second), task(&first));
    let done = wait_state(
        &gw,
        second.json()["status_url"].as_str().unwrap(),
        "succeeded",
    )
    .await;
    assert_eq!(done["result"]["body"]["ok"], true, "{done}");
    assert_eq!(origin.hits("/api/v1/analyze"), 2);
}

#[tokio::test]
async fn a_batch_call_carries_one_callers_jobs() {
    let origin = Origin::new()
        .handle("/api/v1/analyze/batch", |req| {
            let items: Vec<Value> = serde_json::from_slice(&req.body).unwrap_or_default();
            Rsp::json(Value::Array(items.iter().map(|_| json!({"ok": true})).collect()).to_string())
        })
        .run()
        .await;
    let gw = gateway(
        &origin,
        route(|a| {
            a.batch_path = Some("/api/v1/analyze/batch".into());
            a.batch_max = 10;
            a.batch_window = perfgate_config::Duration::from_millis(400);
        }),
        |_| {},
    )
    .await;
    let mut urls = Vec::new();
    for (i, who) in ["alice", "bob", "alice", "bob", "alice"].iter().enumerate() {
        let auth = format!("Bearer {who}");
        let r = submit_as(
            &gw,
            &[("authorization", &auth)],
            &json!({"who": who, "n": i}),
        )
        .await;
        assert_eq!(r.status, 202);
        urls.push(r.json()["status_url"].as_str().unwrap().to_string());
    }
    for url in &urls {
        wait_state(&gw, url, "succeeded").await;
    }
    let calls = origin.requests("/api/v1/analyze/batch");
    assert!(!calls.is_empty());
    let mut jobs = 0;
    for call in &calls {
        let auth = call.header("authorization").to_string();
        let items: Vec<Value> = serde_json::from_slice(&call.body).unwrap();
        for item in &items {
            let who = item["who"].as_str().unwrap();
            assert_eq!(
                auth,
                format!("Bearer {who}"),
                "{who}'s job was sent with {auth}"
            );
        }
        jobs += items.len();
    }
    assert_eq!(jobs, 5);
}

#[tokio::test]
async fn the_upstream_sees_the_submitting_clients_address() {
    let origin = Origin::new()
        .route("/api/v1/analyze", Rsp::json("{}"))
        .run()
        .await;
    let gw = gateway(&origin, route(|_| {}), |c| {
        // The test client connects from 127.0.0.1: a trusted proxy here,
        // so the client is the address it forwards.
        c.forwarded.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let r = submit_as(
        &gw,
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
        ],
        &json!({"n": 1}),
    )
    .await;
    assert_eq!(r.status, 202);
    wait_state(&gw, r.json()["status_url"].as_str().unwrap(), "succeeded").await;
    let up = origin.last_request("/api/v1/analyze").unwrap();
    assert_eq!(up.header("x-forwarded-for"), "203.0.113.9");
    assert_eq!(up.header("x-forwarded-proto"), "http");
    assert_ne!(up.header("x-forwarded-host"), "evil.example");

    // Untrusted: the peer itself, whatever the client claims.
    let gw = gateway(&origin, route(|_| {}), |_| {}).await;
    let r = submit_as(&gw, &[("x-forwarded-for", "203.0.113.9")], &json!({"n": 2})).await;
    wait_state(&gw, r.json()["status_url"].as_str().unwrap(), "succeeded").await;
    let up = origin.last_request("/api/v1/analyze").unwrap();
    assert_eq!(up.header("x-forwarded-for"), "127.0.0.1");
}

#[tokio::test]
async fn on_a_jwt_route_the_caller_is_the_subject() {
    const SECRET: &[u8] = b"job-isolation-test-secret-0123456789";
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/api/v1/analyze", Rsp::json("{}").gated(&gate))
        .run()
        .await;
    let dir = TempDir::new();
    let secret = dir
        .write("jwt.secret", SECRET)
        .to_string_lossy()
        .into_owned();
    let mut r = route(|_| {});
    r.jwt = Some(JwtMode::Required);
    let gw = gateway(&origin, r, move |c| c.jwt.secret_file = Some(secret)).await;
    let token = |sub: &str, n: u64| {
        format!(
            "Bearer {}",
            hs256(SECRET, &json!({"sub": sub, "exp": now() + 60, "n": n}))
        )
    };
    let body = json!({"url": "https://example.com/"});
    let first = submit_as(&gw, &[("authorization", &token("alice", 1))], &body).await;
    assert_eq!(first.status, 202, "{}", first.text());
    // Another token of the same user: the same caller.
    let same_user = submit_as(&gw, &[("authorization", &token("alice", 2))], &body).await;
    assert_eq!(task(&same_user), task(&first));
    // Another user: other work.
    let other_user = submit_as(&gw, &[("authorization", &token("bob", 1))], &body).await;
    assert_eq!(other_user.status, 202);
    assert_ne!(task(&other_user), task(&first));
    gate.open();
}
