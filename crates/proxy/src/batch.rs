//! The batch endpoint (`batch.enabled`, `POST /batch` by default): a JSON
//! list of GET requests, `[{"method": "GET", "path": "/events/1"}, …]`,
//! each served through the normal path (guards, JWT, limits, cache,
//! coalescing, pools) at most `batch.concurrency` at a time, answered in
//! order as `[{"status": 200, "headers": {…}, "body": …}, …]`. A JSON body
//! is embedded as JSON, any other as a string (bytes that are not UTF-8 are
//! replaced). Sub-requests carry the batch request's `Host`, `Authorization`
//! and `Cookie`, plus their own `headers`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::context::Conn;
use crate::gateway::Gateway;
use crate::policy::Policy;
use perfgate_http::body::Body;
use perfgate_http::error::{Error, ErrorKind};

/// Largest batch request body.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest sub-response body embedded in the answer.
const MAX_ITEM_BYTES: usize = 8 * 1024 * 1024;

struct Item {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

type Answered = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

impl Gateway {
    /// Answers a batch request. Boxed: its sub-requests go through
    /// `handle_with`, which may call it.
    pub(crate) fn batch(
        self: &Arc<Self>,
        policy: &Arc<Policy>,
        req: Request<Body>,
        conn: &Conn,
    ) -> Answered {
        Box::pin(self.clone().serve_batch(policy.clone(), req, conn.clone()))
    }

    async fn serve_batch(
        self: Arc<Self>,
        policy: Arc<Policy>,
        req: Request<Body>,
        conn: Conn,
    ) -> Result<Response<Body>, Error> {
        let policy = &policy;
        let conn = &conn;
        let (parts, body) = req.into_parts();
        let max = MAX_REQUEST_BYTES as u64;
        let bytes = perfgate_http::body::read_bounded(body, &parts.headers, max, self.body_timeout)
            .await
            .map_err(|e| Error::body_read(e, max))?;
        let budget = Arc::new(Budget::new(policy.batch.max_response_bytes.get()));
        let items = parse(&bytes, policy.batch.max_requests)?;
        let mut shared = HeaderMap::new();
        for name in [HOST, AUTHORIZATION, COOKIE] {
            for v in parts.headers.get_all(&name) {
                shared.append(name.clone(), v.clone());
            }
        }
        let answers: Vec<Answer> = items
            .into_iter()
            .map(|item| {
                let gw = self.clone();
                let policy = policy.clone();
                let conn = conn.clone();
                let budget = budget.clone();
                let mut headers = shared.clone();
                for (k, v) in &item.headers {
                    headers.insert(k.clone(), v.clone());
                }
                // The bodies go into JSON: ask for them unencoded.
                headers.remove(ACCEPT_ENCODING);
                let mut sub = Request::new(Body::Empty);
                *sub.method_mut() = item.method;
                *sub.uri_mut() = item.uri;
                *sub.headers_mut() = headers;
                *sub.version_mut() = parts.version;
                let fut: Answer = Box::pin(async move {
                    let rsp = gw
                        .handle_with(policy, sub, conn, perfgate_observe::RequestKind::BatchItem)
                        .await;
                    render(rsp, &budget).await
                });
                fut
            })
            .collect();
        let results: Vec<Vec<u8>> = futures_util::stream::iter(answers)
            .buffered(policy.batch.concurrency.max(1))
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.iter().map(|r| r.len() + 1).sum::<usize>() + 1);
        out.push(b'[');
        for (i, item) in results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.push(b']');
        drop(results);
        let mut rsp = Response::new(Body::full(out));
        rsp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        rsp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        Ok(rsp)
    }
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::BadRequest, message)
}

/// Parses and checks the list; the error names the entry at fault.
fn parse(bytes: &Bytes, max: usize) -> Result<Vec<Item>, Error> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("the batch body is not JSON: {e}")))?;
    let Value::Array(list) = v else {
        return Err(bad(
            "the batch body must be a JSON array of {\"method\", \"path\"} objects".into(),
        ));
    };
    if list.is_empty() {
        return Err(bad("the batch is empty".into()));
    }
    if list.len() > max {
        return Err(bad(format!(
            "{} requests in one batch; at most {max} (batch.max_requests)",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(o) = entry else {
                return Err(bad(format!("[{i}]: expected an object")));
            };
            for k in o.keys() {
                if !matches!(k.as_str(), "method" | "path" | "headers") {
                    return Err(bad(format!(
                        "[{i}].{k}: unknown field (expected method, path, headers)"
                    )));
                }
            }
            let method = match o.get("method") {
                None => Method::GET,
                Some(Value::String(m)) if m == "GET" => Method::GET,
                Some(Value::String(m)) if m == "HEAD" => Method::HEAD,
                Some(_) => {
                    return Err(bad(format!(
                        "[{i}].method: only GET and HEAD requests can be batched"
                    )));
                }
            };
            let path = match o.get("path") {
                Some(Value::String(p)) if p.starts_with('/') => p,
                _ => {
                    return Err(bad(format!("[{i}].path: expected a path starting with /")));
                }
            };
            let uri: Uri = path
                .parse()
                .map_err(|_| bad(format!("[{i}].path: {path:?} is not a valid path")))?;
            if uri.scheme().is_some() {
                return Err(bad(format!("[{i}].path: expected a path, not a URL")));
            }
            let mut headers = HeaderMap::new();
            match o.get("headers") {
                None => {}
                Some(Value::Object(h)) => {
                    for (k, v) in h {
                        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            bad(format!("[{i}].headers.{k}: not a valid header name"))
                        })?;
                        let value = v
                            .as_str()
                            .and_then(|s| HeaderValue::from_str(s).ok())
                            .ok_or_else(|| {
                                bad(format!("[{i}].headers.{k}: expected a header value string"))
                            })?;
                        headers.insert(name, value);
                    }
                }
                Some(_) => {
                    return Err(bad(format!("[{i}].headers: expected an object")));
                }
            }
            Ok(Item {
                method,
                uri,
                headers,
            })
        })
        .collect()
}

/// The bytes of sub-responses one batch may still hold
/// (`batch.max_response_bytes`), shared by its items.
struct Budget(AtomicU64);

impl Budget {
    fn new(bytes: u64) -> Self {
        Budget(AtomicU64::new(bytes))
    }

    /// Takes `n` bytes, or nothing when fewer are left.
    fn take(&self, n: usize) -> bool {
        let n = n as u64;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::AcqRel);
    }
}

/// An item whose answer did not fit in the batch's budget.
fn over_budget() -> Vec<u8> {
    let e = Error::new(
        ErrorKind::BatchTooLarge,
        "the batch's answers exceed batch.max_response_bytes; request this item on its own",
    );
    json!({
        "status": e.kind.status().as_u16(),
        "headers": {},
        "body": e.envelope(),
    })
    .to_string()
    .into_bytes()
}

/// Reads a sub-response body, taking each frame's bytes from the budget;
/// `None` when the budget (or the item limit) runs out, or the body breaks.
async fn read_within(mut body: Body, budget: &Budget) -> Result<Bytes, bool> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            budget.give_back(buf.len());
            return Err(false);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > MAX_ITEM_BYTES {
            budget.give_back(buf.len());
            return Err(false);
        }
        if !budget.take(data.len()) {
            budget.give_back(buf.len());
            return Err(true);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// One sub-response as JSON bytes, charged to the batch's budget: the body
/// while it is read, then the rendered item instead.
async fn render(rsp: Response<Body>, budget: &Budget) -> Vec<u8> {
    let (parts, body) = rsp.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    let bytes = match read_within(body, budget).await {
        Ok(b) => b,
        Err(true) => return over_budget(),
        Err(false) => {
            let e = Error::new(
                ErrorKind::BatchItemFailed,
                "the response body could not be read (or exceeds 8 MiB)",
            );
            return json!({
                "status": e.kind.status().as_u16(),
                "headers": {},
                "body": e.envelope(),
            })
            .to_string()
            .into_bytes();
        }
    };
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim();
            ct == "application/json" || ct.ends_with("+json")
        });
    let body = if bytes.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    };
    let item = json!({ "status": parts.status.as_u16(), "headers": headers, "body": body })
        .to_string()
        .into_bytes();
    // The rendered item replaces the raw body in the budget (JSON escaping
    // can make it several times larger).
    budget.give_back(bytes.len());
    drop(bytes);
    if !budget.take(item.len()) {
        return over_budget();
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_every_entry() {
        let ok = parse(
            &Bytes::from_static(br#"[{"method":"GET","path":"/events/1"},{"path":"/b?x=1","headers":{"accept":"application/json"}}]"#),
            10,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].uri.query(), Some("x=1"));
        let err = |body: &'static str, max: usize| {
            parse(&Bytes::from_static(body.as_bytes()), max)
                .err()
                .unwrap()
                .message
        };
        assert!(err(r#"[{"method":"POST","path":"/a"}]"#, 10).contains("[0].method"));
        assert!(err(r#"[{"path":"/a"},{"path":"a"}]"#, 10).contains("[1].path"));
        assert!(err(r#"[{"path":"/a"},{"path":"/b"}]"#, 1).contains("at most 1"));
        assert!(err(r#"{"path":"/a"}"#, 10).contains("array"));
        assert!(err(r#"[{"path":"/a","x":1}]"#, 10).contains("[0].x"));
        assert!(err(r#"[]"#, 10).contains("empty"));
    }
}
