//! The real binary: `SIGHUP` reloads the configuration file (a broken file
//! is refused with its problems and the running configuration stays),
//! requests slower than `server.slow_request_threshold` are logged with
//! their timing breakdown, and accepted jobs survive `kill -9`.

use std::time::Duration;

use perfgate_test_support::{
    Binary, Client, Origin, PATIENCE, Rsp, TempDir, eventually, eventually_async,
};

const EXE: &str = env!("CARGO_BIN_EXE_perfgate");

/// One never-cached route to `upstream`; listeners come from the flags.
fn config_toml(upstream: &str) -> String {
    format!(
        r#"
[server]
slow_request_threshold = "200ms"

[upstream]
url = "{upstream}"

[[routes]]
name = "who"
path = "/who"
[routes.cache]
bypass = true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_broken_file_keeps_the_running_config() {
    let a = Origin::new().route("/who", Rsp::text("a")).run().await;
    let b = Origin::new().route("/who", Rsp::text("b")).run().await;
    let dir = TempDir::new();
    let path = dir.write("perfgate.toml", config_toml(&a.url()));
    let mut bin = start_with(&path).await;
    let client = Client::new(bin.url());
    assert_eq!(client.get("/who").send().await.text(), "a");

    std::fs::write(&path, config_toml(&b.url())).unwrap();
    bin.signal("HUP");
    eventually_async("requests go to the reloaded upstream", PATIENCE, || {
        let client = client.clone();
        async move { client.get("/who").send().await.text() == "b" }
    })
    .await;

    std::fs::write(&path, "[server]\nno_such_setting = 1\n").unwrap();
    bin.signal("HUP");
    eventually("the rejected reload is logged", PATIENCE, || {
        bin.stderr().contains("configuration reload rejected")
    })
    .await;
    let log = bin.stderr();
    assert!(
        log.contains("no_such_setting"),
        "the problem is named:\n{log}"
    );
    for _ in 0..5 {
        let r = client.get("/who").send().await;
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "b".into()),
            "still the last good config"
        );
    }
    assert!(
        bin.is_running(),
        "a broken file never stops perfgate:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_are_logged_with_their_breakdown() {
    let origin = Origin::new()
        .route("/fast", Rsp::text("quick"))
        .route("/slow", Rsp::text("late").delay(Duration::from_millis(400)))
        .run()
        .await;
    let dir = TempDir::new();
    let path = dir.write(
        "perfgate.toml",
        config_toml(&origin.url()).replace("path = \"/who\"", "path = \"/\""),
    );
    let bin = start_with(&path).await;
    let client = Client::new(bin.url());
    assert_eq!(client.get("/fast").send().await.status, 200);
    assert_eq!(client.get("/slow").send().await.status, 200);
    eventually("the slow request is logged", PATIENCE, || {
        bin.stderr().contains("slow request")
    })
    .await;
    let log = bin.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("slow request"))
        .unwrap_or_default();
    assert!(line.contains("/slow"), "{line}");
    for field in [
        "total_ms",
        "gateway_ms",
        "queue_ms",
        "upstream_ms",
        "attempts",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        !log.contains("/fast"),
        "fast requests are not logged:\n{log}"
    );
}

/// `kill -9` while jobs are queued and running: a restarted perfgate on the
/// same data directory finishes every one of them, and each task's status
/// ends `succeeded` with its own result (the upstream may see a repeat of
/// an interrupted call: at-least-once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_jobs_in_flight_then_restart_completes_every_job() {
    let origin = Origin::new()
        .handle("/api/v1/analyze", |req| {
            Rsp::json(format!(r#"{{"for":"{}"}}"#, req.uri.query().unwrap_or("")))
                .delay(Duration::from_millis(300))
        })
        .run()
        .await;
    let dir = TempDir::new();
    let path = async_route_config(
        &dir,
        &origin.url(),
        "concurrency = 2\nstatus_path = \"/api/v1/analyze/status\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"",
    );
    let start = || start_with(&path);
    let mut first = start().await;
    let client = Client::new(first.url());
    let mut tasks = Vec::new();
    for i in 0..10 {
        let r = client
            .request(http::Method::POST, &format!("/api/v1/analyze/async?n={i}"))
            .json(&serde_json::json!({"n": i}))
            .send()
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let v = r.json();
        tasks.push((
            i,
            v["task_id"].as_str().unwrap().to_string(),
            v["status_url"].as_str().unwrap().to_string(),
        ));
    }
    eventually("some jobs are running", PATIENCE, || {
        origin.hits("/api/v1/analyze") >= 2
    })
    .await;
    assert!(
        origin.hits("/api/v1/analyze") < 10,
        "jobs remain queued when perfgate is killed"
    );
    first.signal("KILL");
    first
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("killed");

    let second = start().await;
    let client = Client::new(second.url());
    for (i, id, url) in &tasks {
        let v = client
            .job_in_state(url, "succeeded")
            .await
            .unwrap_or_else(|v| {
                panic!(
                    "task {i} ({id}) did not finish after the restart: {v}\n{}",
                    second.stderr()
                )
            });
        assert_eq!(v["task_id"], id.as_str());
        assert_eq!(v["result"]["body"]["for"], format!("n={i}"), "{v}");
    }
    assert!(origin.hits("/api/v1/analyze") >= 10);
}

/// `SIGTERM` with a job in flight: perfgate stops claiming, waits for the
/// job's answer, records it and exits 0; after a restart the job is
/// `succeeded` and the upstream was called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish() {
    let origin = Origin::new()
        .route(
            "/api/v1/analyze",
            Rsp::json(r#"{"done":true}"#).delay(Duration::from_millis(600)),
        )
        .run()
        .await;
    let dir = TempDir::new();
    let path = async_route_config(&dir, &origin.url(), "concurrency = 1");
    let start = || start_with(&path);
    let mut first = start().await;
    let r = Client::new(first.url())
        .request(http::Method::POST, "/api/v1/analyze/async")
        .json(&serde_json::json!({"n": 1}))
        .send()
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let url = r.json()["status_url"].as_str().unwrap().to_string();
    eventually("the job reaches the upstream", PATIENCE, || {
        origin.hits("/api/v1/analyze") == 1
    })
    .await;
    first.terminate();
    let status = first
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}:\n{}", first.stderr());

    let second = start().await;
    let v = Client::new(second.url()).get(&url).send().await.json();
    assert_eq!(v["status"], "succeeded", "recorded before exit: {v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.hits("/api/v1/analyze"), 1, "not run again");
}

/// `perfgate.toml` in `dir`: `upstream`, the job store in `dir/data`, and
/// the async route `analyze` on `/api/v1/analyze/async` with `settings`
/// (lines of `[routes.async]`).
fn async_route_config(dir: &TempDir, upstream: &str, settings: &str) -> std::path::PathBuf {
    let config = format!(
        "[upstream]\nurl = \"{upstream}\"\n\n[jobs]\ndata_dir = \"{}\"\n\n\
         [[routes]]\nname = \"analyze\"\npath = \"/api/v1/analyze/async\"\n\n\
         [routes.async]\n{settings}\n",
        dir.path().join("data").display()
    );
    dir.write("perfgate.toml", config)
}

/// The binary on `config` (free ports each time).
async fn start_with(config: &std::path::Path) -> Binary {
    Binary::builder(EXE)
        .arg("--config")
        .arg(config.display().to_string())
        .spawn()
        .await
}
