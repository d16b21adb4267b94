//! Async routes (issue #6) against real slow upstreams: 202 with a task id,
//! status and result URLs, de-duplication without upstream calls,
//! priorities, retries ending in the dead letter (and the admin retry),
//! 4xx without retries, bad input and a full queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use perfgate_config::{AsyncRouteConfig, Config, DedupMode, RouteConfig};
use perfgate_test_support::{Gate, Origin, PATIENCE, Rsp, TestResponse, eventually_async};
use serde_json::{Value, json};

use crate::support::{Gateway, RunningGateway};

const TOKEN: &str = "jobs-token";

pub(crate) fn analyze_route(tweak: impl FnOnce(&mut AsyncRouteConfig)) -> RouteConfig {
    let mut a = AsyncRouteConfig {
        status_path: Some("/api/v1/analyze/status".into()),
        concurrency: 4,
        backoff_base: perfgate_config::Duration::from_millis(20),
        backoff_max: perfgate_config::Duration::from_millis(100),
        ..AsyncRouteConfig::default()
    };
    tweak(&mut a);
    RouteConfig {
        name: Some("analyze".into()),
        path: Some("/api/v1/analyze/async".into()),
        async_job: Some(a),
        ..RouteConfig::default()
    }
}

async fn gateway(
    origin: &perfgate_test_support::RunningOrigin,
    route: RouteConfig,
    tweak: impl FnOnce(&mut Config) + 'static,
) -> RunningGateway {
    Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .route(route)
        .config(tweak)
        .spawn()
        .await
}

async fn submit(gw: &RunningGateway, query: &str, body: &Value) -> TestResponse {
    gw.request(Method::POST, &format!("/api/v1/analyze/async{query}"))
        .json(body)
        .await
}

/// Polls a status URL until the job is in `state`.
async fn wait_state(gw: &RunningGateway, url: &str, state: &str) -> Value {
    gw.client()
        .job_in_state(url, state)
        .await
        .unwrap_or_else(|v| panic!("{url} did not become {state}: {v}"))
}

#[tokio::test]
async fn a_hundred_concurrent_submissions_all_complete() {
    let origin = Origin::new()
        .handle("/api/v1/analyze", |req| {
            Rsp::json(format!(r#"{{"for":"{}"}}"#, req.uri.query().unwrap_or("")))
                .delay(Duration::from_millis(30))
        })
        .run()
        .await;
    let gw = Arc::new(gateway(&origin, analyze_route(|a| a.concurrency = 8), |_| {}).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            submit(
                &gw,
                &format!("?n={i}"),
                &json!({"url": format!("https://e.com/{i}")}),
            )
            .await
        }));
    }
    let mut urls = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "queued", "{v}");
        assert_eq!(r.header("location"), v["status_url"].as_str().unwrap());
        assert!(
            v["status_url"]
                .as_str()
                .unwrap()
                .starts_with("/api/v1/analyze/status/")
        );
        urls.push((
            v["status_url"].as_str().unwrap().to_string(),
            v["task_id"].clone(),
        ));
    }
    let ids: HashSet<String> = urls.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(ids.len(), 100, "every submission is its own task");
    for (url, _) in &urls {
        let v = wait_state(&gw, url, "succeeded").await;
        assert_eq!(v["attempts"], 1, "{v}");
        assert_eq!(v["result"]["status"], 200, "{v}");
        assert!(
            v["result"]["body"]["for"]
                .as_str()
                .unwrap()
                .starts_with("n="),
            "{v}"
        );
        // The result as the upstream sent it.
        let r = gw.get(&format!("{url}/result")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), v["result"]["body"]);
    }
    assert_eq!(origin.hits("/api/v1/analyze"), 100);
    // The generic status URL answers too.
    let id = urls[0].1.as_str().unwrap();
    let r = gw.get(&format!("/perfgate/jobs/{id}")).await;
    assert_eq!(r.json()["status"], "succeeded");
    let health = gw.admin(Method::GET, "/health/dependencies").await.json();
    let check = &health["checks"]["jobs"][0];
    assert_eq!(check["backend"], "embedded", "{health}");
    assert_eq!(check["status"], "pass", "{health}");
    let stats = gw.admin(Method::GET, "/admin/jobs/stats").await.json();
    let route = &stats["data"]["routes"]["analyze"];
    assert_eq!(route["depth"]["succeeded"], 100, "{stats}");
    assert_eq!(route["upstream_calls"], 100, "{stats}");
    assert_eq!(route["wait_ms"]["count"], 100, "{stats}");
    assert!(route["run_ms"]["p99"].as_u64().unwrap() >= 30, "{stats}");
}

#[tokio::test]
async fn duplicates_within_the_ttl_make_no_extra_upstream_calls() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/api/v1/analyze", Rsp::json(r#"{"score":7}"#).gated(&gate))
        .run()
        .await;
    let gw = gateway(
        &origin,
        analyze_route(|a| {
            a.dedup = DedupMode::Url;
            a.unit_cost = 0.5;
        }),
        |_| {},
    )
    .await;
    let first = submit(
        &gw,
        "",
        &json!({"url": "HTTPS://Example.com:443/a?b=1&utm_source=x#top"}),
    )
    .await;
    assert_eq!(first.status, 202);
    let first = first.json();
    assert_eq!(first["deduplicated"], false);
    // While the first runs: the same page, written differently.
    let again = submit(&gw, "", &json!({"url": "https://example.com/a?b=1"})).await;
    assert_eq!(again.status, 202);
    let again = again.json();
    assert_eq!(again["task_id"], first["task_id"], "{again}");
    assert_eq!(again["deduplicated"], true);
    // Another page is other work.
    let other = submit(&gw, "", &json!({"url": "https://example.com/b"}))
        .await
        .json();
    assert_ne!(other["task_id"], first["task_id"]);
    gate.open();
    let url = first["status_url"].as_str().unwrap();
    wait_state(&gw, url, "succeeded").await;
    // Finished within the TTL: answered from the result at once.
    let done = submit(
        &gw,
        "",
        &json!({"url": "https://EXAMPLE.com/a?b=1&fbclid=z"}),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let done = done.json();
    assert_eq!(done["task_id"], first["task_id"]);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"]["body"]["score"], 7, "{done}");
    wait_state(&gw, other["status_url"].as_str().unwrap(), "succeeded").await;
    assert_eq!(
        origin.hits("/api/v1/analyze"),
        2,
        "one call per distinct page"
    );

    let stats = gw.admin(Method::GET, "/admin/jobs/stats").await.json();
    let route = &stats["data"]["routes"]["analyze"];
    assert_eq!(route["upstream_calls"], 2, "{stats}");
    assert_eq!(route["calls_saved"], 2, "{stats}");
    assert_eq!(route["cost"], 1.0, "{stats}");
    assert_eq!(route["cost_saved"], 1.0, "{stats}");
    let metrics = gw.admin(Method::GET, "/metrics").await.text();
    for line in [
        r#"perfgate_jobs_submitted_total{route="analyze",outcome="deduplicated"} 1"#,
        r#"perfgate_jobs_submitted_total{route="analyze",outcome="cached"} 1"#,
        r#"perfgate_jobs_upstream_calls_total{route="analyze",result="success"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn priorities_order_the_work() {
    let gate = Gate::new();
    let origin = Origin::new()
        .handle("/api/v1/analyze", {
            let gate = gate.clone();
            move |req| {
                let rsp = Rsp::json("{}");
                // The first job holds the only worker until the gate opens.
                if req.uri.query() == Some("n=blocker") {
                    rsp.gated(&gate)
                } else {
                    rsp
                }
            }
        })
        .run()
        .await;
    let gw = gateway(&origin, analyze_route(|a| a.concurrency = 1), |_| {}).await;
    let blocker = submit(&gw, "?n=blocker", &json!({})).await.json();
    wait_state(&gw, blocker["status_url"].as_str().unwrap(), "running").await;
    let mut urls = Vec::new();
    for (n, priority) in [
        ("low", "-3"),
        ("normal", "0"),
        ("high", "7"),
        ("higher", "9"),
    ] {
        let r = gw
            .request(Method::POST, &format!("/api/v1/analyze/async?n={n}"))
            .header("x-priority", priority)
            .json(&json!({}))
            .await;
        assert_eq!(r.status, 202);
        assert_eq!(r.json()["priority"], priority.parse::<i64>().unwrap());
        urls.push(r.json()["status_url"].as_str().unwrap().to_string());
    }
    // A JSON "priority" field works as well as the header.
    let body_priority = submit(&gw, "?n=body", &json!({"priority": 8})).await.json();
    assert_eq!(body_priority["priority"], 8);
    urls.push(body_priority["status_url"].as_str().unwrap().to_string());
    gate.open();
    for url in &urls {
        wait_state(&gw, url, "succeeded").await;
    }
    let order: Vec<String> = origin
        .requests("/api/v1/analyze")
        .iter()
        .map(|r| {
            r.uri
                .query()
                .unwrap_or("")
                .trim_start_matches("n=")
                .to_string()
        })
        .collect();
    // Highest first; every fifth job handed out is the oldest waiting one,
    // so low priorities are never starved (here: the fifth, "low").
    assert_eq!(
        order,
        ["blocker", "higher", "body", "high", "low", "normal"]
    );
    let bad = gw
        .request(Method::POST, "/api/v1/analyze/async")
        .header("x-priority", "urgent")
        .json(&json!({}))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("X-Priority"), "{}", bad.text());
}

#[tokio::test]
async fn failures_back_off_into_the_dead_letter_and_admin_retry_revives() {
    let healthy = Arc::new(AtomicBool::new(false));
    let origin = Origin::new()
        .handle("/api/v1/analyze", {
            let healthy = healthy.clone();
            move |_| {
                if healthy.load(Ordering::SeqCst) {
                    Rsp::json(r#"{"ok":true}"#)
                } else {
                    Rsp::status(503)
                }
            }
        })
        .route("/api/v1/refuse", Rsp::status(422))
        .run()
        .await;
    let refuse = RouteConfig {
        name: Some("refuse".into()),
        path: Some("/api/v1/refuse/async".into()),
        async_job: Some(AsyncRouteConfig::default()),
        ..RouteConfig::default()
    };
    let gw = gateway(&origin, analyze_route(|a| a.max_attempts = 3), move |c| {
        c.routes.push(refuse);
        // The pool's own retries would hide the attempts counted here.
        c.upstream.retry.attempts = 0;
        c.upstream.breaker.enabled = false;
    })
    .await;
    let v = submit(&gw, "", &json!({"url": "https://e.com/x"}))
        .await
        .json();
    let url = v["status_url"].as_str().unwrap().to_string();
    let id = v["task_id"].as_str().unwrap().to_string();
    let dead = wait_state(&gw, &url, "dead").await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(origin.hits("/api/v1/analyze"), 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    let listed = gw.admin(Method::GET, "/admin/jobs?state=dead").await.json();
    assert_eq!(listed["data"]["count"], 1, "{listed}");
    assert_eq!(listed["data"]["jobs"][0]["task_id"], id.as_str());
    // A dead job is no answer: but the admin can send it again.
    healthy.store(true, Ordering::SeqCst);
    let r = gw
        .admin(Method::POST, &format!("/admin/jobs/{id}/retry"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let done = wait_state(&gw, &url, "succeeded").await;
    assert_eq!(done["attempts"], 1, "{done}");
    // Retrying a job that succeeded is refused, naming why.
    let r = gw
        .admin(Method::POST, &format!("/admin/jobs/{id}/retry"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Discard removes it.
    let r = gw.admin(Method::DELETE, &format!("/admin/jobs/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get(&url).await.status, 404);

    // 4xx: failed at once, never retried.
    let v = gw
        .request(Method::POST, "/api/v1/refuse/async")
        .json(&json!({}))
        .await
        .json();
    let failed = wait_state(&gw, v["status_url"].as_str().unwrap(), "failed").await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["result"]["status"], 422, "{failed}");
    assert_eq!(origin.hits("/api/v1/refuse"), 1);

    let r = gw.admin(Method::GET, "/admin/jobs?state=sleeping").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "state", "{}", r.text());
}

#[tokio::test]
async fn bad_input_and_a_full_queue_get_clear_errors() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/api/v1/analyze", Rsp::json("{}").gated(&gate))
        .run()
        .await;
    let gw = gateway(
        &origin,
        analyze_route(|a| {
            a.concurrency = 1;
            a.max_body_bytes = perfgate_config::ByteSize(64);
            a.dedup = DedupMode::Off;
        }),
        |c| c.jobs.max_queued = 2,
    )
    .await;
    let big = json!({"url": "x".repeat(100)});
    let r = submit(&gw, "", &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "payload_too_large");

    let r = gw.get("/api/v1/analyze/status/not-a-task").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw
        .get("/api/v1/analyze/status/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "not_found");

    let first = submit(&gw, "", &json!({})).await.json();
    wait_state(&gw, first["status_url"].as_str().unwrap(), "running").await;
    assert_eq!(submit(&gw, "", &json!({})).await.status, 202);
    let full = submit(&gw, "", &json!({})).await;
    assert_eq!(full.status, 503, "{}", full.text());
    assert_eq!(full.json()["error"]["code"], "queue_full");
    assert!(full.has("retry-after"));
    gate.open();
    wait_state(&gw, first["status_url"].as_str().unwrap(), "succeeded").await;
    // Room again.
    eventually_async("the queue accepts again", PATIENCE, || async {
        submit(&gw, "", &json!({})).await.status == 202
    })
    .await;
}

#[tokio::test]
async fn batching_sends_several_jobs_in_one_upstream_call() {
    let origin = Origin::new()
        .handle("/api/v1/analyze/batch", |req| {
            let items: Vec<Value> = serde_json::from_slice(&req.body).unwrap_or_default();
            let out: Vec<Value> = items.iter().map(|i| json!({"echo": i["n"]})).collect();
            Rsp::json(serde_json::to_string(&out).unwrap())
        })
        .run()
        .await;
    let gw = Arc::new(
        gateway(
            &origin,
            analyze_route(|a| {
                a.concurrency = 1;
                a.batch_path = Some("/api/v1/analyze/batch".into());
                a.batch_max = 5;
                a.batch_window = perfgate_config::Duration::from_millis(300);
            }),
            |_| {},
        )
        .await,
    );
    let mut tasks = Vec::new();
    for n in 0..10 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            (n, submit(&gw, "", &json!({"n": n})).await.json())
        }));
    }
    for t in tasks {
        // Each job gets its own item of the batch answer back.
        let (n, v) = t.await.unwrap();
        let done = wait_state(&gw, v["status_url"].as_str().unwrap(), "succeeded").await;
        assert_eq!(done["result"]["body"]["echo"], n, "{done}");
    }
    let calls = origin.hits("/api/v1/analyze/batch");
    assert!(
        (2..=4).contains(&calls),
        "10 jobs in batches of at most 5: {calls} calls"
    );
    assert_eq!(origin.hits("/api/v1/analyze"), 0);
    let biggest = origin
        .requests("/api/v1/analyze/batch")
        .iter()
        .map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len())
        .max()
        .unwrap();
    assert!((2..=5).contains(&biggest), "batch sizes up to 5: {biggest}");
}

/// `jobs.backend = "redis"`: two instances share the queue. Every job runs
/// once, whichever instance took it; statuses read the same from both;
/// identical work submitted to both is one job; with Redis gone,
/// submissions are refused with a clear 503 (never accepted and lost).
#[tokio::test]
async fn two_instances_on_redis_share_the_work_without_losing_or_doubling_it() {
    let Some(mut redis) = perfgate_test_support::RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .handle("/api/v1/analyze", |req| {
            Rsp::json(format!(r#"{{"for":"{}"}}"#, req.uri.query().unwrap_or("")))
                .delay(Duration::from_millis(20))
        })
        .run()
        .await;
    let prefix = perfgate_test_support::unique_name("jobs");
    let (a, b) = Gateway::members(origin.addr(), &redis.url(), &prefix, |g| {
        g.route(analyze_route(|a| a.concurrency = 2))
            .config(|c| c.jobs.backend = perfgate_config::JobBackend::Redis)
    })
    .await;
    let mut submitted = Vec::new();
    for i in 0..40 {
        let (to, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let r = submit(to, &format!("?n={i}"), &json!({"n": i})).await;
        assert_eq!(r.status, 202, "{}", r.text());
        submitted.push((i, r.json(), other));
    }
    for (i, v, other) in &submitted {
        // Read from the instance that did not take the submission.
        let done = wait_state(other, v["status_url"].as_str().unwrap(), "succeeded").await;
        assert_eq!(done["result"]["body"]["for"], format!("n={i}"), "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
    }
    assert_eq!(
        origin.hits("/api/v1/analyze"),
        40,
        "each job ran exactly once"
    );
    let calls = |gw: &RunningGateway| {
        let gw = gw.admin(Method::GET, "/admin/jobs/stats");
        async move { gw.await.json()["data"]["routes"]["analyze"]["upstream_calls"].as_u64() }
    };
    let (ca, cb) = (calls(&a).await.unwrap_or(0), calls(&b).await.unwrap_or(0));
    assert_eq!(ca + cb, 40);
    assert!(ca > 0 && cb > 0, "both instances worked: {ca} + {cb}");

    let one = submit(&a, "?same", &json!({"url": "https://e.com/"}))
        .await
        .json();
    let two = submit(&b, "?same", &json!({"url": "https://e.com/"}))
        .await
        .json();
    assert_eq!(one["task_id"], two["task_id"], "identical work is one job");

    redis.kill();
    let r = submit(&a, "?n=after", &json!({"n": "after"})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "job_store_unavailable");
    assert!(r.has("retry-after"));
    // Finished jobs just read are kept in memory (L1; the store is L2):
    // their status still answers while Redis is away.
    let (_, v, other) = &submitted[0];
    let r = other.get(v["status_url"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "succeeded");
}

/// `rate`/`rate_per`: a third-party quota. Five calls per second with four
/// workers: six jobs take at least a second, spaced evenly.
#[tokio::test]
async fn the_route_quota_spaces_upstream_calls() {
    let origin = Origin::new()
        .route("/api/v1/analyze", Rsp::json("{}"))
        .run()
        .await;
    let gw = gateway(
        &origin,
        analyze_route(|a| {
            a.concurrency = 4;
            a.rate = 5;
            a.rate_per = perfgate_config::Duration::from_secs(1);
            a.dedup = DedupMode::Off;
        }),
        |_| {},
    )
    .await;
    let start = std::time::Instant::now();
    let mut urls = Vec::new();
    for _ in 0..6 {
        urls.push(submit(&gw, "", &json!({})).await.json()["status_url"].clone());
    }
    for url in &urls {
        wait_state(&gw, url.as_str().unwrap(), "succeeded").await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "6 calls at 5/s took only {took:?}"
    );
    assert_eq!(origin.hits("/api/v1/analyze"), 6);
}
