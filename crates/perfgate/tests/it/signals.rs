//! The real binary: `SIGHUP` reloads the configuration file (a broken file
//! is refused with its problems and the running configuration stays), and
//! requests slower than `server.slow_request_threshold` are logged with
//! their timing breakdown.

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
    let mut bin = Binary::builder(EXE)
        .arg("--config")
        .arg(path.display().to_string())
        .spawn()
        .await;
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
    let bin = Binary::builder(EXE)
        .arg("--config")
        .arg(path.display().to_string())
        .spawn()
        .await;
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
