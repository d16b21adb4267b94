//! A small keep-alive HTTP client (hyper-util's legacy client) whose
//! responses are read completely into a [`TestResponse`].

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one request may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    host: Option<HeaderValue>,
    inner: Hyper<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// An HTTP/1.1 client for `base` (`http://host:port`).
    pub fn new(base: impl Into<String>) -> Self {
        let inner = Hyper::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Self {
            base: base.into(),
            host: None,
            inner,
        }
    }

    /// The same client (same connection pool), sending `Host: host` on every
    /// request instead of the base URL's authority: several gateways behind
    /// one name share their cache keys, as behind a load balancer.
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(HeaderValue::from_str(host).expect("valid host"));
        self
    }

    /// The `Host` set by [`with_host`](Self::with_host), if any.
    pub fn host_str(&self) -> Option<String> {
        self.host
            .as_ref()
            .map(|h| h.to_str().expect("host is ASCII").to_string())
    }

    /// An HTTP/2 prior-knowledge (h2c) client for `base`.
    pub fn h2c(base: impl Into<String>) -> Self {
        let inner = Hyper::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self {
            base: base.into(),
            host: None,
            inner,
        }
    }

    /// A GET of `path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A request of `method` on `path`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Some(h) = &self.host {
            headers.insert(http::header::HOST, h.clone());
        }
        RequestBuilder {
            client: self.clone(),
            method,
            uri: format!("{}{}", self.base, path),
            headers,
            body: Bytes::new(),
        }
    }
}

/// A request being built; `.send().await` (or just `.await`) sends it.
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    client: Client,
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

impl RequestBuilder {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Replaces a header field (instead of appending another value).
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
        self
    }

    /// Sends the request and reads the whole response; panics on transport
    /// errors or after 30 s.
    pub async fn send(self) -> TestResponse {
        let what = format!("{} {}", self.method, self.uri);
        match tokio::time::timeout(REQUEST_TIMEOUT, self.try_send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: no complete response within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Sends the request and reads the body without keeping it: returns the
    /// status, the headers and the number of body bytes (for huge bodies).
    pub async fn send_discard(self) -> (StatusCode, HeaderMap, u64) {
        let what = format!("{} {}", self.method, self.uri);
        let mut req = Request::new(Full::new(self.body));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri.parse().expect("valid uri");
        *req.headers_mut() = self.headers;
        let rsp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.inner.request(req))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response head within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let (parts, mut body) = rsp.into_parts();
        let mut n = 0u64;
        // Generous: 100 MB through a debug build on a loaded machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .unwrap_or_else(|_| panic!("{what}: body not complete after {n} bytes"));
            match frame {
                None => break,
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                    }
                }
                Some(Err(e)) => panic!("{what}: body failed after {n} bytes: {e:?}"),
            }
        }
        (parts.status, parts.headers, n)
    }

    /// Sends the request; transport errors are returned.
    pub async fn try_send(self) -> Result<TestResponse, String> {
        let mut req = Request::new(Full::new(self.body));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri.parse().map_err(|e| format!("bad uri: {e}"))?;
        *req.headers_mut() = self.headers;
        let rsp = self
            .client
            .inner
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, body) = rsp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e:?}"))?
            .to_bytes();
        Ok(TestResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

impl IntoFuture for RequestBuilder {
    type Output = TestResponse;
    type IntoFuture = Pin<Box<dyn Future<Output = TestResponse> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status.
    pub status: StatusCode,
    /// Protocol version.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// The whole body, as received (not decoded).
    pub body: Bytes,
}

impl TestResponse {
    /// A header as a string; `""` when absent (use [`has`](Self::has) to
    /// tell absent from empty).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not UTF-8"))
            .unwrap_or("")
    }

    /// Every value of a header, joined with `", "`.
    pub fn header_all(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the header is present.
    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

impl Client {
    /// Polls an async job's status URL until its `status` is `state`
    /// (every 10 ms, up to [`PATIENCE`](crate::PATIENCE)); `Err` carries the
    /// last status document seen.
    pub async fn job_in_state(
        &self,
        status_url: &str,
        state: &str,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        loop {
            let v = self.get(status_url).send().await.json();
            if v["status"] == state {
                return Ok(v);
            }
            if std::time::Instant::now() >= deadline {
                return Err(v);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
