//! HTTP/2 (h2c and TLS with ALPN), and the headers a proxy adds and removes.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use perfgate_config::TlsConfig;
use perfgate_test_support::{Client, Origin, Rsp, TempDir};

use crate::support::Gateway;

#[tokio::test]
async fn h2c_prior_knowledge_gets_cached_responses() {
    let origin = Origin::new()
        .route("/events", Rsp::json(crate::events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    let h2 = Client::h2c(gw.url());

    let first = h2.get("/events").await;
    assert_eq!(first.version, Version::HTTP_2);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-status"), "perfgate; fwd=miss; stored");
    let second = h2.get("/events").await;
    assert_eq!(second.version, Version::HTTP_2);
    assert_eq!(second.header("cache-status"), "perfgate; hit");
    assert_eq!(second.text(), crate::events_json());
    assert_eq!(origin.hits("/events"), 1);
    let up = origin.last_request("/events").unwrap();
    assert_eq!(
        up.header("via"),
        "2 perfgate",
        "Via names the client's protocol"
    );
}

#[tokio::test]
async fn forwarding_headers_and_via_reach_the_origin() {
    let origin = Origin::new()
        .route("/cached", Rsp::text("c").max_age(60))
        .route(
            "/passed",
            Rsp::text("p").header("cache-control", "no-store"),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    for path in ["/cached", "/passed"] {
        let r = gw
            .get(path)
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .await;
        assert_eq!(r.status, 200);
        let up = origin.last_request(path).unwrap();
        assert_eq!(up.header("via"), "1.1 perfgate", "{path}");
        assert_eq!(
            up.header("x-forwarded-for"),
            "127.0.0.1",
            "{path}: an untrusted client's value is replaced"
        );
        assert_eq!(up.header("x-forwarded-proto"), "http", "{path}");
        assert_eq!(
            up.header("host"),
            origin.addr().to_string(),
            "{path}: Host is the upstream's authority"
        );
        assert_eq!(
            up.header("x-forwarded-host"),
            gw.addr().to_string(),
            "{path}"
        );
    }
}

/// `server.via_name` is "added to requests and responses": streamed
/// responses get it, responses built from the cache must too.
#[tokio::test]
async fn responses_carry_via() {
    let origin = Origin::new()
        .route("/cached", Rsp::text("c").max_age(60))
        .route(
            "/passed",
            Rsp::text("p").header("cache-control", "no-store"),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    for path in ["/passed", "/cached", "/cached"] {
        let r = gw.get(path).await;
        assert!(
            r.header_all("via").contains("1.1 perfgate"),
            "{path} ({}): response Via: {:?}",
            r.header("cache-status"),
            r.headers
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let origin = Origin::new()
        .route("/cached", Rsp::text("c").max_age(60))
        .route(
            "/passed",
            Rsp::text("p").header("cache-control", "no-store"),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    for path in ["/cached", "/passed"] {
        let raw = perfgate_test_support::raw(
            gw.addr(),
            format!(
                "GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: keep-alive, x-drop\r\n\
                 x-drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
                 TE: trailers\r\nx-kept: yes\r\n\r\n"
            ),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let up = origin.last_request(path).unwrap();
        assert_eq!(up.header("x-kept"), "yes");
        for h in ["x-drop", "keep-alive", "proxy-connection", "te"] {
            assert!(
                !up.headers.contains_key(h),
                "{path}: {h} was forwarded: {:?}",
                up.headers
            );
        }
        let conn = up.header("connection").to_ascii_lowercase();
        assert!(
            !conn.contains("x-drop"),
            "{path}: Connection forwarded: {conn}"
        );
    }
}

#[tokio::test]
async fn tls_with_alpn_h2() {
    let origin = Origin::new()
        .route("/events", Rsp::json(crate::events_json()).max_age(60))
        .run()
        .await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = TempDir::new();
    let cert_file = dir.write("cert.pem", certified.cert.pem());
    let key_file = dir.write("key.pem", certified.signing_key.serialize_pem());
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(move |c| {
            c.server.tls = Some(TlsConfig {
                cert_file: cert_file.display().to_string(),
                key_file: key_file.display().to_string(),
            });
        })
        .spawn()
        .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN negotiates h2"
    );
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);

    let mut labels = Vec::new();
    for _ in 0..2 {
        let req = Request::builder()
            .uri(format!("https://localhost:{}/events", gw.addr().port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = sender.send_request(req).await.expect("h2 request");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.version(), Version::HTTP_2);
        labels.push(rsp.headers()["cache-status"].to_str().unwrap().to_string());
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, crate::events_json().as_bytes());
    }
    assert_eq!(labels, ["perfgate; fwd=miss; stored", "perfgate; hit"]);
    let up = origin.last_request("/events").unwrap();
    assert_eq!(up.header("x-forwarded-proto"), "https");
    assert_eq!(origin.hits("/events"), 1);
}
