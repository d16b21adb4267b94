//! Huge bodies stream through the real binary with bounded memory.

use perfgate_test_support::{Binary, Client, Origin, Rsp};

const EXE: &str = env!("CARGO_BIN_EXE_perfgate");
const SIZE: u64 = 100 * 1024 * 1024;
const MAX_HWM_KIB: u64 = 80 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_with_bounded_memory() {
    let origin = Origin::new()
        .route(
            "/no-store",
            Rsp::stream(SIZE).header("cache-control", "no-store"),
        )
        // Cacheable but larger than cache.max_object_bytes (8 MiB): chunked,
        // so the gateway only finds out while reading it.
        .route("/chunked", Rsp::stream(SIZE).max_age(60))
        // Cacheable with a declared length above the limit.
        .route(
            "/declared",
            Rsp::stream(SIZE)
                .max_age(60)
                .header("content-length", &SIZE.to_string()),
        )
        .run()
        .await;
    let bin = Binary::builder(EXE).upstream(origin.addr()).spawn().await;
    let client = Client::new(bin.url());
    let start_kib = bin.proc_status_kib("VmHWM").expect("/proc/<pid>/status");

    for (path, label) in [
        ("/no-store", "perfgate; fwd=miss"),
        ("/chunked", "perfgate; fwd=miss; detail=too-large"),
        ("/declared", "perfgate; fwd=miss; detail=too-large"),
    ] {
        let (status, headers, n) = client.get(path).send_discard().await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(n, SIZE, "{path}: every byte arrives");
        let cs = headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(cs.starts_with(label), "{path}: cache-status {cs:?}");
        let hwm = bin.proc_status_kib("VmHWM").unwrap();
        eprintln!("{path}: gateway VmHWM {hwm} KiB (at start {start_kib} KiB)");
        assert!(
            hwm < MAX_HWM_KIB,
            "{path}: gateway peak RSS {hwm} KiB (started at {start_kib} KiB) exceeds {MAX_HWM_KIB} KiB"
        );
    }

    // Nothing was stored.
    let stats = Client::new(format!("http://{}", bin.admin_addr()))
        .get("/admin/cache/stats")
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["data"]["entries"], 0, "{}", stats.text());
    assert_eq!(origin.total_hits(), 3);
}

/// An upstream body that stops arriving is cut after
/// `upstream.body_idle_timeout`: the client's connection ends short
/// instead of hanging, and the next request still gets through.
#[tokio::test]
async fn a_stalled_upstream_body_is_cut_after_the_idle_timeout() {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = s.read(&mut head).await.unwrap_or(0);
                let stall = head[..n].starts_with(b"GET /stall");
                let body: &[u8] = if stall { b"0123456789" } else { b"fine" };
                let len = if stall { 1000 } else { body.len() };
                let rsp = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-length: {len}\r\n\r\n"
                );
                let _ = s.write_all(rsp.as_bytes()).await;
                let _ = s.write_all(body).await;
                // The stalled body never gets its other 990 bytes.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let gw = crate::support::Gateway::builder()
        .upstream(origin)
        .config(|c| c.upstream.body_idle_timeout = perfgate_config::Duration::from_millis(300))
        .spawn()
        .await;

    let start = Instant::now();
    let got = perfgate_test_support::raw_timeout(
        gw.addr(),
        "GET /stall HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    let took = start.elapsed();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("0123456789"), "only what arrived: {got}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "cut after {took:?}"
    );

    let next = Client::new(gw.url()).get("/fine").send().await;
    assert_eq!(next.status, 200);
    assert_eq!(next.text(), "fine");
}
