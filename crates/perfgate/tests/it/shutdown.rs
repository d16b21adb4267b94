//! SIGTERM drains in-flight requests, refuses new connections and exits 0.

use std::time::{Duration, Instant};

use perfgate_test_support::{Binary, Client, Gate, Origin, PATIENCE, Rsp, eventually};

const EXE: &str = env!("CARGO_BIN_EXE_perfgate");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    // The response is held until the gateway has stopped accepting.
    let gate = Gate::new();
    let origin = Origin::new()
        .route(
            "/slow",
            Rsp::text("done")
                .header("cache-control", "no-store")
                .gated(&gate),
        )
        .run()
        .await;
    let mut bin = Binary::builder(EXE)
        .upstream(origin.addr())
        .env("PERFGATE_SERVER__DRAIN_TIMEOUT", "10s")
        .spawn()
        .await;
    let addr = bin.addr();
    let client = Client::new(bin.url());
    let in_flight = tokio::spawn(async move { client.get("/slow").send().await });
    eventually("the slow request reaches the origin", PATIENCE, || {
        origin.hits("/slow") == 1
    })
    .await;

    let t0 = Instant::now();
    bin.terminate();
    eventually("new connections are refused", PATIENCE, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(!in_flight.is_finished(), "the request is still in flight");
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.open();

    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request completes: {}", r.text());
    assert_eq!(r.text(), "done");

    let status = bin
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("perfgate did not exit after SIGTERM:\n{}", bin.stderr()));
    assert!(status.success(), "exit status {status}:\n{}", bin.stderr());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "exit took {:?}, beyond the drain timeout",
        t0.elapsed()
    );
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}
