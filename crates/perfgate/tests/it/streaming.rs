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
