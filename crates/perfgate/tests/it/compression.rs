//! Compressed variants are produced once per object and encoding; small
//! bodies, images and already-encoded responses are left alone.

use std::io::Read as _;

use bytes::Bytes;
use perfgate_test_support::{Origin, Rsp, TestResponse};

use crate::support::Gateway;

fn decode(r: &TestResponse) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        "br" => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "gzip" => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "zstd" => out = zstd::decode_all(&r.body[..]).expect("valid zstd"),
        "" => out = r.body.to_vec(),
        other => panic!("unexpected content-encoding {other}"),
    }
    out
}

fn has_vary_accept_encoding(r: &TestResponse) -> bool {
    r.header_all("vary")
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_is_compressed_once() {
    let body = crate::events_json();
    assert!(body.len() > 2000);
    let origin = Origin::new()
        .route("/events", Rsp::json(body.clone()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    for enc in ["br", "gzip", "zstd"] {
        for _ in 0..50 {
            let r = gw.get("/events").header("accept-encoding", enc).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), enc);
            assert!(has_vary_accept_encoding(&r), "{:?}", r.headers);
            assert!(r.body.len() < body.len(), "{enc} did not shrink the body");
            assert_eq!(
                decode(&r),
                body.as_bytes(),
                "{enc} decodes to the origin body"
            );
        }
    }
    // Identity is still served to clients that accept nothing.
    let plain = gw.get("/events").await;
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.text(), body);

    assert_eq!(origin.hits("/events"), 1);
    assert_eq!(gw.gateway().cache_stats().compressions, 3);
}

#[tokio::test]
async fn small_bodies_and_images_are_not_compressed() {
    let png = Bytes::from(vec![0x89u8; 4096]);
    let origin = Origin::new()
        .route("/small", Rsp::json(r#"{"ok":true}"#).max_age(60))
        .route(
            "/image",
            Rsp::ok(png.clone())
                .header("content-type", "image/png")
                .max_age(60),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    for _ in 0..2 {
        let r = gw.get("/small").header("accept-encoding", "gzip, br").await;
        assert_eq!(r.header("content-encoding"), "");
        assert_eq!(r.text(), r#"{"ok":true}"#);
        let r = gw.get("/image").header("accept-encoding", "gzip, br").await;
        assert_eq!(r.header("content-encoding"), "");
        assert_eq!(r.body, png);
    }
    assert_eq!(gw.gateway().cache_stats().compressions, 0);
}

#[tokio::test]
async fn upstream_gzip_passes_through_byte_identical() {
    let json = crate::events_json();
    let mut gz = Vec::new();
    {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::new(9));
        e.write_all(json.as_bytes()).unwrap();
        e.finish().unwrap();
    }
    let gz = Bytes::from(gz);
    let origin = Origin::new()
        .route(
            "/pre",
            Rsp::json(gz.clone())
                .header("content-encoding", "gzip")
                .header("vary", "accept-encoding")
                .max_age(60),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    for label in ["perfgate; fwd=miss; stored", "perfgate; hit"] {
        let r = gw.get("/pre").header("accept-encoding", "gzip").await;
        assert_eq!(r.header("cache-status"), label);
        assert_eq!(r.header("content-encoding"), "gzip");
        assert_eq!(r.body, gz, "byte-identical to what the origin sent");
    }
    assert_eq!(gw.gateway().cache_stats().compressions, 0);
}

/// Issue #11 item 13: concurrent first requests for one variant share one
/// compression (made off the request threads) and all get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_compression() {
    let body = crate::events_json().repeat(20);
    let origin = Origin::new()
        .route("/big", Rsp::json(body.clone()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    assert_eq!(gw.get("/big").await.status, 200);
    let client = gw.new_client();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("/big").header("accept-encoding", "br").send().await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), "br");
        assert_eq!(decode(&r), body.as_bytes());
    }
    assert_eq!(gw.gateway().cache_stats().compressions, 1);
}

/// Issue #11 item 19 (part): a 206 is a range of the identity body and is
/// never compressed, even for a client that accepts compression.
#[tokio::test]
async fn partial_content_is_never_compressed() {
    let body = crate::events_json();
    let part = Bytes::from(body.as_bytes()[..1000].to_vec());
    let range = format!("bytes 0-999/{}", body.len());
    let origin = Origin::new()
        .route(
            "/file",
            Rsp::json(part.clone())
                .with_status(206)
                .header("content-range", &range),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    let r = gw
        .get("/file")
        .header("range", "bytes=0-999")
        .header("accept-encoding", "gzip, br, zstd")
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), "", "{:?}", r.headers);
    assert_eq!(r.header("content-range"), range);
    assert_eq!(r.body, part);
}
