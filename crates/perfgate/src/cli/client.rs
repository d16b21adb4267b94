//! A small client for the admin API: JSON in, the envelope's `data` out,
//! and errors that tell the operator what to do (start perfgate, fix
//! `--admin`, set the token).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Time allowed for one admin call (they are all quick; warm-up runs in the
/// background and is polled).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest admin answer read (statistics of many routes are a few KiB).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The admin API of one perfgate instance.
pub struct AdminClient {
    /// `http://host:port` plus an optional path prefix, without a trailing `/`.
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// An admin call that reached perfgate and was refused.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.message` of the envelope (or the raw body).
    pub message: String,
    /// `error.field`, for 400s.
    pub field: Option<String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field}): {}", self.status, self.message),
            None => write!(f, "{}: {}", self.status, self.message),
        }
    }
}

impl std::error::Error for ApiFailure {}

impl AdminClient {
    /// A client for the admin API at `base` (`http://host:port[/prefix]`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let trimmed = base.trim().trim_end_matches('/');
        let uri: Uri = trimmed.parse().with_context(|| {
            format!("--admin {base:?} is not a URL such as http://127.0.0.1:9090")
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => bail!(
                "--admin {base:?}: the admin API is plain HTTP; use http:// (or an https-terminating proxy in front of it)"
            ),
            _ => bail!("--admin {base:?} is not a URL such as http://127.0.0.1:9090"),
        }
        if uri.authority().is_none() || uri.query().is_some() {
            bail!("--admin {base:?} is not a URL such as http://127.0.0.1:9090");
        }
        let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        Ok(Self {
            base: trimmed.to_string(),
            token,
            http,
        })
    }

    /// `GET path` → `data`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body → `data`.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE path` → `data`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// One call. Errors: unreachable (with a hint), 401/403 (with the token
    /// hint), and any other refusal as an [`ApiFailure`] (so callers can
    /// tell a 404 apart).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .with_context(|| format!("cannot build a request for {url}"))?;
        let exchange = async {
            let rsp = self.http.request(req).await.map_err(|e| {
                anyhow!(
                    "cannot reach the perfgate admin API at {}: {}\n\
                     hint: is perfgate running? Point --admin (or PERFGATE_ADMIN_URL) at its admin listener (admin.listen)",
                    self.base,
                    error_chain(&e)
                )
            })?;
            let status = rsp.status();
            let bytes = http_body_util::Limited::new(rsp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer of {method} {url}: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow!(
                    "the perfgate admin API at {} did not answer {method} {path} within {}s",
                    self.base,
                    CALL_TIMEOUT.as_secs()
                )
            })??;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        let error = |key: &str| {
            json.as_ref()
                .and_then(|v| v["error"][key].as_str())
                .map(str::to_string)
        };
        match status {
            StatusCode::UNAUTHORIZED => bail!(
                "the admin API at {} refused the request (401 unauthorized): set PERFGATE_ADMIN_TOKEN \
                 (or --admin-token-file) to the token perfgate was started with",
                self.base
            ),
            StatusCode::FORBIDDEN => bail!(
                "the admin API at {} refused the request (403): {}",
                self.base,
                error("message").unwrap_or_else(|| "forbidden".into())
            ),
            s if s.is_success() => match json {
                Some(v) if v["success"] == true => Ok(v["data"].clone()),
                _ => bail!(
                    "{method} {url} answered {s} with something that is not the admin envelope; \
                     is --admin pointing at perfgate's admin listener (not the proxy)?"
                ),
            },
            s => Err(ApiFailure {
                status: s,
                message: error("message")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string()),
                field: error("field"),
            }
            .into()),
        }
    }
}

/// The error and its sources on one line ("connection refused" is usually
/// a source, not the top-level message).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
