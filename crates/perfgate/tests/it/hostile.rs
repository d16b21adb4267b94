//! The hostile-input suite (issue #11, "What must be shown"): request
//! smuggling and malformed framing sent through perfgate, over HTTP/1.1
//! (raw bytes) and HTTP/2 (h2c prior knowledge), to a raw upstream that
//! records and strictly parses every byte it receives
//! ([`RawUpstream`]). For every case, on a cached route and on a
//! pass-through route: either the upstream sees exactly the requests
//! perfgate meant to send, each framed consistently (declared length ==
//! bytes received, nothing left over that starts another request), or the
//! client gets a 4xx and the connection closes. A property test then sends
//! random heads and bodies over one keep-alive connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use perfgate_config::{RouteCachePolicy, RouteConfig};
use perfgate_test_support::{RawUpstream, Seen};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Gateway, RunningGateway};

/// A request smuggled inside a body: the upstream must never see it as a
/// request of its own.
const SMUGGLED: &str = "GET /c/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// How long a case waits for its answers (a case that stalls is one whose
/// body never completes: perfgate's upstream deadline answers it first).
const CASE_WAIT: Duration = Duration::from_secs(6);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    /// `/c/…`: the default route, cached.
    Cached,
    /// `/p/…`: `bypass = true`, streamed through.
    Pass,
}

impl Route {
    fn prefix(self) -> &'static str {
        match self {
            Route::Cached => "/c/",
            Route::Pass => "/p/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// The client gets a 4xx and the connection closes; the upstream sees
    /// nothing of it.
    Refused,
    /// Every request (`n` of them) reaches the upstream once, with `body`
    /// (GET/HEAD on the cached route: none, a cache fill sends no body).
    Forwarded { n: usize, body: &'static [u8] },
    /// Either, as hyper and perfgate see fit; whatever reaches the upstream
    /// is framed consistently and carries `body`.
    Either { body: &'static [u8] },
}

struct Case {
    name: String,
    /// The bytes sent; `{T}` is the target, `{U}` a second target.
    bytes: Vec<u8>,
    method: &'static str,
    expect: Expect,
    /// The first answer is to a HEAD (no body follows its head).
    head: bool,
}

/// `METHOD {T} HTTP/1.1`, `Host: x`, the given fields, then `tail` as is.
fn h1(method: &'static str, fields: &[&str], tail: &[u8]) -> Vec<u8> {
    let mut s = format!("{method} {{T}} HTTP/1.1\r\nHost: x\r\n");
    for f in fields {
        s.push_str(f);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    let mut v = s.into_bytes();
    v.extend_from_slice(tail);
    v
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v.extend_from_slice(b"\r\n0\r\n\r\n");
    v
}

/// The HTTP/1.1 cases.
fn h1_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, method: &'static str, bytes: Vec<u8>, expect: Expect| {
        cases.push(Case {
            name,
            head: method == "HEAD",
            method,
            bytes,
            expect,
        });
    };
    let ok1 = |body| Expect::Forwarded { n: 1, body };
    let hello: &'static [u8] = b"hello";
    let smuggled: &'static [u8] = SMUGGLED.as_bytes();
    let cl_s = format!("Content-Length: {}", SMUGGLED.len());
    let cl_s: &'static str = Box::leak(cl_s.into_boxed_str());

    // Baseline.
    for m in ["GET", "HEAD", "DELETE", "OPTIONS"] {
        add(format!("baseline {m}"), m, h1(m, &[], b""), ok1(b""));
    }
    for m in ["POST", "PUT", "PATCH"] {
        add(
            format!("baseline {m} with Content-Length"),
            m,
            h1(m, &["Content-Length: 5"], hello),
            ok1(hello),
        );
        add(
            format!("baseline {m} chunked"),
            m,
            h1(m, &["Transfer-Encoding: chunked"], &chunked(hello)),
            ok1(hello),
        );
        add(
            format!("baseline {m} empty"),
            m,
            h1(m, &["Content-Length: 0"], b""),
            ok1(b""),
        );
    }

    // 0.CL: a body on a method whose body a cache fill drops; the smuggled
    // request inside it must stay a body.
    for m in ["GET", "HEAD", "DELETE", "OPTIONS", "POST"] {
        add(
            format!("0.CL {m} with a smuggled request as its body"),
            m,
            h1(m, &[cl_s], smuggled),
            ok1(smuggled),
        );
        add(
            format!("0.CL {m} chunked body"),
            m,
            h1(m, &["Transfer-Encoding: chunked"], &chunked(smuggled)),
            ok1(smuggled),
        );
    }
    add(
        "0.CL GET with Content-Length: 25 and 25 bytes".into(),
        "GET",
        h1("GET", &["Content-Length: 25"], b"0123456789012345678901234"),
        ok1(b"0123456789012345678901234"),
    );

    // CL.0: a body where the upstream might expect none, then a real second
    // request: both are requests of the client's, framed by perfgate.
    for m in ["GET", "POST"] {
        let mut b = h1(m, &["Content-Length: 0"], b"");
        b.extend_from_slice(b"GET {U} HTTP/1.1\r\nHost: x\r\n\r\n");
        add(
            format!("CL.0 {m} then a pipelined GET"),
            m,
            b,
            Expect::Forwarded { n: 2, body: b"" },
        );
    }

    // CL.TE and TE.CL in every order and spelling: refused.
    let te_values = [
        "chunked",
        "Chunked",
        "CHUNKED",
        "xchunked",
        "chunked, identity",
        "identity, chunked",
        "\tchunked",
        "chunked\t",
        "gzip, chunked",
        "\"chunked\"",
    ];
    for te in te_values {
        for (order, fields) in [
            (
                "CL.TE",
                [cl_s.to_string(), format!("Transfer-Encoding: {te}")],
            ),
            (
                "TE.CL",
                [format!("Transfer-Encoding: {te}"), cl_s.to_string()],
            ),
        ] {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let mut body = b"0\r\n\r\n".to_vec();
            body.extend_from_slice(SMUGGLED.as_bytes());
            let body = &body[..SMUGGLED.len()];
            add(
                format!("{order} POST, Transfer-Encoding {te:?}"),
                "POST",
                h1("POST", &fields, body),
                Expect::Refused,
            );
        }
    }
    add(
        "CL.TE with Content-Length: 0".into(),
        "POST",
        h1(
            "POST",
            &["Content-Length: 0", "Transfer-Encoding: chunked"],
            &chunked(smuggled),
        ),
        Expect::Refused,
    );
    add(
        "TE.CL GET".into(),
        "GET",
        h1(
            "GET",
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
            &chunked(hello),
        ),
        Expect::Refused,
    );

    // Obfuscated Transfer-Encoding alone.
    for (te, expect) in [
        ("xchunked", Expect::Refused),
        ("chunked, identity", Expect::Refused),
        ("identity", Expect::Refused),
        ("gzip", Expect::Refused),
        ("\"chunked\"", Expect::Refused),
        ("chunked;q=1", Expect::Refused),
        ("chunked, chunked", Expect::Refused),
        ("CHUNKED", ok1(hello)),
        ("Chunked", ok1(hello)),
        ("\tchunked", ok1(hello)),
        ("identity, chunked", Expect::Refused),
        ("gzip, chunked", Expect::Refused),
    ] {
        add(
            format!("obfuscated Transfer-Encoding {te:?}"),
            "POST",
            h1(
                "POST",
                &[&format!("Transfer-Encoding: {te}")],
                &chunked(hello),
            ),
            expect,
        );
    }
    add(
        "two Transfer-Encoding fields: chunked, chunked".into(),
        "POST",
        h1(
            "POST",
            &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
            &chunked(hello),
        ),
        Expect::Refused,
    );
    add(
        "two Transfer-Encoding fields: chunked, identity".into(),
        "POST",
        h1(
            "POST",
            &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
            &chunked(hello),
        ),
        Expect::Refused,
    );
    add(
        "Transfer-Encoding with a space before the colon".into(),
        "POST",
        h1("POST", &["Transfer-Encoding : chunked"], &chunked(hello)),
        Expect::Refused,
    );
    add(
        "Transfer_Encoding (underscore)".into(),
        "POST",
        h1(
            "POST",
            &["Content-Length: 5", "Transfer_Encoding: chunked"],
            hello,
        ),
        ok1(hello),
    );
    add(
        "Content_Length (underscore) on a GET".into(),
        "GET",
        h1("GET", &["Content_Length: 5"], b""),
        ok1(b""),
    );
    add(
        "Transfer-Encoding on HTTP/1.0".into(),
        "POST",
        b"POST {T} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        Expect::Refused,
    );

    // Duplicate and comma-joined Content-Length.
    for (name, fields, expect) in [
        (
            "two equal Content-Length fields",
            vec!["Content-Length: 5", "Content-Length: 5"],
            Expect::Either { body: b"hello" },
        ),
        (
            "two different Content-Length fields",
            vec!["Content-Length: 5", "Content-Length: 6"],
            Expect::Refused,
        ),
        (
            "two different Content-Length fields, larger first",
            vec!["Content-Length: 6", "Content-Length: 5"],
            Expect::Refused,
        ),
        (
            "comma-joined equal Content-Length",
            vec!["Content-Length: 5, 5"],
            Expect::Either { body: b"hello" },
        ),
        (
            "comma-joined different Content-Length",
            vec!["Content-Length: 5, 6"],
            Expect::Refused,
        ),
        (
            "comma-joined Content-Length without a space",
            vec!["Content-Length: 5,6"],
            Expect::Refused,
        ),
        (
            "negative Content-Length",
            vec!["Content-Length: -5"],
            Expect::Refused,
        ),
        (
            "plus-signed Content-Length",
            vec!["Content-Length: +5"],
            Expect::Refused,
        ),
        (
            "hex Content-Length",
            vec!["Content-Length: 0x5"],
            Expect::Refused,
        ),
        (
            "Content-Length with a space inside",
            vec!["Content-Length: 5 5"],
            Expect::Refused,
        ),
        (
            "Content-Length with a trailing letter",
            vec!["Content-Length: 5a"],
            Expect::Refused,
        ),
        (
            "empty Content-Length",
            vec!["Content-Length: "],
            Expect::Refused,
        ),
        (
            "overflowing Content-Length",
            vec!["Content-Length: 99999999999999999999999"],
            Expect::Refused,
        ),
        (
            "Content-Length over max_body_bytes",
            vec!["Content-Length: 100000000000"],
            Expect::Refused,
        ),
        (
            "Content-Length with leading zeros",
            vec!["Content-Length: 005"],
            Expect::Either { body: b"hello" },
        ),
        (
            "Content-Length with a tab",
            vec!["Content-Length:\t5"],
            ok1(hello),
        ),
        (
            "Content-Length with a space before the colon",
            vec!["Content-Length : 5"],
            Expect::Refused,
        ),
    ] {
        add(name.to_string(), "POST", h1("POST", &fields, hello), expect);
    }

    // Chunk sizes and extensions.
    for (name, body, expect) in [
        (
            "oversized chunk size",
            b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "chunk size above max_body_bytes",
            b"ffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Either { body: b"hello" },
        ),
        (
            "negative chunk size",
            b"-5\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "hex-prefixed chunk size",
            b"0x5\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "chunk size with leading space",
            b" 5\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "chunk extension",
            b"5;name=value\r\nhello\r\n0\r\n\r\n".to_vec(),
            ok1(hello),
        ),
        (
            "chunk extension with a quoted string",
            b"5;a=\"b;c\"\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Either { body: b"hello" },
        ),
        (
            "chunk extension with a bare LF",
            b"5;a\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "chunk data longer than its size",
            b"3\r\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
        (
            "chunk with a smuggled request after the last chunk",
            {
                let mut v = b"5\r\nhello\r\n0\r\n\r\n".to_vec();
                v.extend_from_slice(b"GET {U} HTTP/1.1\r\nHost: x\r\n\r\n");
                v
            },
            Expect::Forwarded {
                n: 2,
                body: b"hello",
            },
        ),
        (
            "trailer fields",
            b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec(),
            ok1(hello),
        ),
        (
            "many small chunks",
            b"1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n".to_vec(),
            ok1(hello),
        ),
        (
            "bare LF after the chunk size",
            b"5\nhello\r\n0\r\n\r\n".to_vec(),
            Expect::Refused,
        ),
    ] {
        add(
            name.to_string(),
            "POST",
            h1("POST", &["Transfer-Encoding: chunked"], &body),
            expect,
        );
    }

    // obs-fold, bare LF, NUL and other control bytes.
    for (name, fields) in [
        ("obs-fold in a value", vec!["X-A: a", " b"]),
        ("obs-fold with a tab", vec!["X-A: a", "\tb"]),
        (
            "obs-fold on Transfer-Encoding",
            vec!["Transfer-Encoding:", " chunked"],
        ),
        ("obs-fold on Content-Length", vec!["Content-Length:", " 5"]),
        ("NUL in a value", vec!["X-A: a\0b"]),
        ("NUL in a name", vec!["X\0A: b"]),
        ("CR in a value", vec!["X-A: a\rb"]),
        ("SOH in a value", vec!["X-A: a\x01b"]),
        ("DEL in a value", vec!["X-A: a\x7fb"]),
        ("ESC in a name", vec!["X-\x1bA: b"]),
        ("space in a name", vec!["X A: b"]),
        ("empty name", vec![": b"]),
        ("colon-less line", vec!["X-A"]),
        ("two Hosts", vec!["Host: y"]),
    ] {
        add(
            name.to_string(),
            "GET",
            h1("GET", &fields, b""),
            Expect::Refused,
        );
    }
    add(
        "obs-text (0x80-0xff) in a value".into(),
        "GET",
        h1("GET", &["X-A: caf\u{e9}"], b""),
        ok1(b""),
    );
    add(
        "bare LF line ends".into(),
        "GET",
        b"GET {T} HTTP/1.1\nHost: x\nX-A: b\n\n".to_vec(),
        Expect::Either { body: b"" },
    );
    add(
        "bare LF line ends with a body".into(),
        "POST",
        b"POST {T} HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello".to_vec(),
        Expect::Either { body: b"hello" },
    );
    add(
        "bare CR line ends".into(),
        "GET",
        b"GET {T} HTTP/1.1\rHost: x\r\r".to_vec(),
        Expect::Refused,
    );
    add(
        "NUL in the target".into(),
        "GET",
        b"GET {T}\0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "tab in the target".into(),
        "GET",
        b"GET {T}\tx HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "two spaces in the request line".into(),
        "GET",
        b"GET  {T} HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "HTTP/1.2".into(),
        "GET",
        b"GET {T} HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Refused,
    );
    add(
        "HTTP/2.0 in an HTTP/1 request line".into(),
        "GET",
        b"GET {T} HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Refused,
    );

    // Targets: absolute-form with another host, `@`, `\`.
    for (name, line, expect) in [
        (
            "absolute-form with another host",
            "GET http://evil.example{T} HTTP/1.1",
            Expect::Either { body: b"" },
        ),
        (
            "absolute-form https with another host",
            "GET https://evil.example{T} HTTP/1.1",
            Expect::Either { body: b"" },
        ),
        (
            "absolute-form with userinfo",
            "GET http://x@evil.example{T} HTTP/1.1",
            Expect::Either { body: b"" },
        ),
        (
            "`@` in the path",
            "GET {T}@evil.example HTTP/1.1",
            Expect::Either { body: b"" },
        ),
        (
            "target starting with `@`",
            "GET @evil.example{T} HTTP/1.1",
            Expect::Refused,
        ),
        (
            "`\\` in the path",
            "GET {T}\\..\\admin HTTP/1.1",
            Expect::Either { body: b"" },
        ),
        (
            "target starting with `\\\\`",
            "GET \\\\evil.example{T} HTTP/1.1",
            Expect::Refused,
        ),
        (
            "authority-form on GET",
            "GET evil.example:80 HTTP/1.1",
            Expect::Refused,
        ),
        ("asterisk-form on GET", "GET * HTTP/1.1", Expect::Refused),
        (
            "asterisk-form on OPTIONS",
            "OPTIONS * HTTP/1.1",
            Expect::Refused,
        ),
        (
            "CONNECT",
            "CONNECT evil.example:443 HTTP/1.1",
            Expect::Refused,
        ),
        ("TRACE", "TRACE {T} HTTP/1.1", Expect::Refused),
    ] {
        let method = match name {
            "CONNECT" => "CONNECT",
            "TRACE" => "TRACE",
            "asterisk-form on OPTIONS" => "OPTIONS",
            _ => "GET",
        };
        add(
            name.to_string(),
            method,
            format!("{line}\r\nHost: x\r\n\r\n").into_bytes(),
            expect,
        );
    }

    // Pipelined requests.
    let second = b"GET {U} HTTP/1.1\r\nHost: x\r\n\r\n";
    for (name, first, n, body) in [
        ("two GETs", h1("GET", &[], b""), 2, &b""[..]),
        (
            "POST with Content-Length, then a GET",
            h1("POST", &["Content-Length: 5"], hello),
            2,
            &b"hello"[..],
        ),
        (
            "chunked POST, then a GET",
            h1("POST", &["Transfer-Encoding: chunked"], &chunked(hello)),
            2,
            &b"hello"[..],
        ),
    ] {
        let mut b = first;
        b.extend_from_slice(second);
        let method = if name.starts_with("two") {
            "GET"
        } else {
            "POST"
        };
        add(
            format!("pipelined: {name}"),
            method,
            b,
            Expect::Forwarded { n, body },
        );
    }
    {
        let mut b = h1("GET", &[], b"");
        b.extend_from_slice(second);
        b.extend_from_slice(b"GET {U}&third HTTP/1.1\r\nHost: x\r\n\r\n");
        add(
            "pipelined: three GETs".into(),
            "GET",
            b,
            Expect::Forwarded { n: 3, body: b"" },
        );
    }
    for (name, first) in [
        (
            "CL.TE, then a GET",
            h1(
                "POST",
                &["Content-Length: 5", "Transfer-Encoding: chunked"],
                b"0\r\n\r\n",
            ),
        ),
        ("obs-fold, then a GET", h1("GET", &["X-A: a", " b"], b"")),
        (
            "two Content-Lengths, then a GET",
            h1("POST", &["Content-Length: 1", "Content-Length: 5"], hello),
        ),
    ] {
        let mut b = first;
        b.extend_from_slice(second);
        let method = if name.starts_with("obs") {
            "GET"
        } else {
            "POST"
        };
        add(format!("pipelined: {name}"), method, b, Expect::Refused);
    }

    // Expect: 100-continue.
    for (name, fields, body, expect) in [
        (
            "100-continue with the body sent at once",
            vec!["Expect: 100-continue", "Content-Length: 5"],
            &b"hello"[..],
            ok1(hello),
        ),
        (
            "100-Continue (case)",
            vec!["Expect: 100-Continue", "Content-Length: 5"],
            &b"hello"[..],
            Expect::Either { body: b"hello" },
        ),
        (
            "100-continue on a chunked body",
            vec!["Expect: 100-continue", "Transfer-Encoding: chunked"],
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
            ok1(hello),
        ),
        (
            "100-continue without a body",
            vec!["Expect: 100-continue", "Content-Length: 0"],
            &b""[..],
            ok1(b""),
        ),
        (
            "unknown expectation",
            vec!["Expect: 200-ok", "Content-Length: 5"],
            &b"hello"[..],
            Expect::Either { body: b"hello" },
        ),
        (
            "two expectations",
            vec![
                "Expect: 100-continue",
                "Expect: 100-continue",
                "Content-Length: 5",
            ],
            &b"hello"[..],
            Expect::Either { body: b"hello" },
        ),
    ] {
        add(
            format!("Expect: {name}"),
            "POST",
            h1("POST", &fields, body),
            expect,
        );
    }

    // Upgrade tricks: never forwarded (hop-by-hop), never switched.
    for (name, fields) in [
        (
            "websocket",
            vec![
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
        ),
        (
            "h2c",
            vec![
                "Connection: Upgrade, HTTP2-Settings",
                "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            ],
        ),
        ("Upgrade without Connection", vec!["Upgrade: websocket"]),
        (
            "Connection naming Content-Length",
            vec!["Connection: Content-Length", "Upgrade: websocket"],
        ),
    ] {
        add(
            format!("Upgrade: {name}"),
            "GET",
            h1("GET", &fields, b""),
            ok1(b""),
        );
        let mut b = h1("GET", &fields, b"");
        b.extend_from_slice(second);
        add(
            format!("Upgrade: {name}, then a pipelined GET"),
            "GET",
            b,
            Expect::Either { body: b"" },
        );
    }
    add(
        "Upgrade on a POST with a body".into(),
        "POST",
        h1(
            "POST",
            &[
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Content-Length: 5",
            ],
            hello,
        ),
        ok1(hello),
    );
    cases
}

/// What the client saw on its connection.
#[derive(Debug)]
struct Answers {
    statuses: Vec<u16>,
    /// The gateway closed the connection.
    closed: bool,
}

/// The end of the first complete response in `buf`, and its status.
fn one_response(buf: &[u8], head_only: bool) -> Option<(usize, u16)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((end, status));
    }
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            let n: usize = v.trim().parse().ok()?;
            return (buf.len() >= end + n).then_some((end + n, status));
        }
        if line.starts_with("transfer-encoding:") {
            let at = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
            return Some((end + at + 5, status));
        }
    }
    None
}

/// Sends `bytes` on a new connection and reads the answers: until the
/// gateway closes, or `want` final answers none of which is a 4xx, or
/// [`CASE_WAIT`].
async fn exchange(addr: SocketAddr, bytes: &[u8], want: usize, head: bool) -> Answers {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let deadline = tokio::time::Instant::now() + CASE_WAIT;
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    loop {
        while let Some((used, status)) = one_response(&buf, head && statuses.is_empty()) {
            buf.drain(..used);
            if status >= 200 {
                statuses.push(status);
            }
        }
        if statuses.len() >= want && !statuses.iter().any(|s| (400..500).contains(s)) {
            break;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Answers { statuses, closed }
}

async fn setup() -> (RawUpstream, RunningGateway) {
    let upstream = RawUpstream::start().await;
    let gw = Gateway::builder()
        .upstream(upstream.addr())
        .route(RouteConfig {
            path: Some("/p/".into()),
            cache: RouteCachePolicy {
                bypass: true,
                ..RouteCachePolicy::default()
            },
            ..RouteConfig::default()
        })
        .config(|c| {
            // A desynchronized upstream connection shows as a request that
            // never completes: fail it quickly.
            c.upstream.response_timeout = perfgate_config::Duration::from_secs(3);
            c.server.max_body_bytes = perfgate_config::ByteSize(1024 * 1024);
            // A head that never ends (bare CR line ends) is closed.
            c.server.header_read_timeout = perfgate_config::Duration::from_secs(2);
        })
        .spawn()
        .await;
    (upstream, gw)
}

/// Checks what the upstream saw for one case; the failure text, if any.
fn judge(
    name: &str,
    route: Route,
    method: &str,
    expect: &Expect,
    answers: &Answers,
    seen: &[Seen],
) -> Option<String> {
    let mut fail = String::new();
    let refused = answers.statuses.iter().any(|s| (400..500).contains(s))
        || (answers.statuses.is_empty() && answers.closed && seen.is_empty());
    let forwarded_ok = answers.statuses.iter().filter(|s| **s == 200).count();
    // A GET or HEAD on the cached route is a cache fill: no body.
    let fill = route == Route::Cached && (method == "GET" || method == "HEAD");
    let body_of = |b: &'static [u8]| if fill { &b""[..] } else { b };
    for s in seen {
        if s.target.contains("smuggled") {
            let _ = write!(fail, "the smuggled request reached the upstream; ");
        }
        if ["upgrade", "content_length", "transfer_encoding"]
            .iter()
            .any(|n| !s.header(n).is_empty())
        {
            let _ = write!(fail, "a hop-by-hop or framing look-alike passed: {s:?}; ");
        }
    }
    match expect {
        Expect::Refused => {
            if !refused {
                let _ = write!(fail, "not refused: {answers:?}; ");
            }
            if !seen.is_empty() {
                let _ = write!(fail, "the upstream saw {} request(s); ", seen.len());
            }
        }
        Expect::Forwarded { n, body } => {
            if answers.statuses != vec![200; *n] || seen.len() != *n {
                let _ = write!(
                    fail,
                    "expected {n} forwarded: client {answers:?}, upstream saw {}; ",
                    seen.len()
                );
            }
            if let Some(first) = seen.first()
                && first.body != body_of(body)
            {
                let _ = write!(
                    fail,
                    "upstream body {:?}, expected {:?}; ",
                    String::from_utf8_lossy(&first.body),
                    String::from_utf8_lossy(body_of(body))
                );
            }
        }
        Expect::Either { body } => {
            if refused {
                if !seen.is_empty() {
                    let _ = write!(fail, "refused, yet the upstream saw {}; ", seen.len());
                }
            } else if seen.len() != forwarded_ok {
                let _ = write!(fail, "client {answers:?}, upstream saw {}; ", seen.len());
            } else if let Some(first) = seen.first()
                && first.body != body_of(body)
            {
                let _ = write!(
                    fail,
                    "upstream body {:?}, expected {:?}; ",
                    String::from_utf8_lossy(&first.body),
                    String::from_utf8_lossy(body_of(body))
                );
            }
        }
    }
    if refused && !answers.closed {
        let _ = write!(
            fail,
            "refused but the connection stayed open: {answers:?}; "
        );
    }
    (!fail.is_empty()).then(|| format!("{name} [{route:?}]: {fail}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http1_inputs_are_framed_or_refused() {
    let (upstream, gw) = setup().await;
    let cases = h1_cases();
    let runs: Vec<(usize, Route)> = (0..cases.len())
        .flat_map(|i| [(i, Route::Cached), (i, Route::Pass)])
        .collect();
    let total = runs.len();
    let addr = gw.addr();
    let cases_ref = &cases;
    let results: Vec<(usize, Route, Answers)> = futures_util::stream::iter(runs)
        .map(|(i, route)| async move {
            let case = &cases_ref[i];
            let marker = format!("m={i}{}.", if route == Route::Cached { "c" } else { "p" });
            let t = format!("{}x?{marker}", route.prefix());
            let u = format!("{}y?{marker}", route.prefix());
            let text = case
                .bytes
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .replace("{T}", &t)
                .replace("{U}", &u);
            let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
            // Answers to wait for: one per request sent.
            let want = 1 + case.bytes.windows(3).filter(|w| w == b"{U}").count();
            (i, route, exchange(addr, &bytes, want, case.head).await)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Let the last requests land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut failures = Vec::new();
    let mut table = String::new();
    for (i, route, answers) in &results {
        let case = &cases[*i];
        let marker = format!("m={i}{}.", if *route == Route::Cached { "c" } else { "p" });
        let seen = upstream.seen_with(&marker);
        let _ = writeln!(
            table,
            "{:<70} {:?}\t{:?} closed={} upstream={:?}",
            case.name,
            route,
            answers.statuses,
            answers.closed,
            seen.iter()
                .map(|s| (&s.framing, s.body.len()))
                .collect::<Vec<_>>()
        );
        if let Some(f) = judge(
            &case.name,
            *route,
            case.method,
            &case.expect,
            answers,
            &seen,
        ) {
            failures.push(f);
        }
    }
    if std::env::var_os("HOSTILE_TABLE").is_some() {
        eprintln!("{table}");
    }
    let violations = upstream.violations();
    assert!(
        total >= 150,
        "the suite has {total} HTTP/1.1 runs, fewer than 150"
    );
    assert!(
        violations.is_empty() && failures.is_empty(),
        "{} of {total} runs failed:\n{}\nupstream framing violations:\n{}",
        failures.len(),
        failures.join("\n"),
        violations.join("\n")
    );
    // Nothing of a smuggled request ever arrived.
    assert!(upstream.seen_with("smuggled").is_empty());
}

/// One HTTP/2 case: a request the hyper client lets through.
struct H2Case {
    name: &'static str,
    method: Method,
    headers: Vec<(&'static str, &'static [u8])>,
    body: Option<&'static [u8]>,
    /// Send the body as a stream with no known length.
    streamed: bool,
    expect: Expect,
}

fn h2_cases() -> Vec<H2Case> {
    let hello: &'static [u8] = b"hello";
    let smuggled: &'static [u8] = SMUGGLED.as_bytes();
    let ok1 = |body| Expect::Forwarded { n: 1, body };
    let c = |name, method, headers, body, streamed, expect| H2Case {
        name,
        method,
        headers,
        body,
        streamed,
        expect,
    };
    vec![
        c("GET", Method::GET, vec![], None, false, ok1(b"")),
        c(
            "GET with a body (0.CL)",
            Method::GET,
            vec![],
            Some(smuggled),
            false,
            ok1(smuggled),
        ),
        c(
            "GET with a streamed body",
            Method::GET,
            vec![],
            Some(smuggled),
            true,
            ok1(smuggled),
        ),
        c(
            "GET declaring content-length: 25 with no body",
            Method::GET,
            vec![("content-length", b"25")],
            None,
            false,
            Expect::Either { body: b"" },
        ),
        c(
            "GET declaring content-length: 25 with 25 bytes",
            Method::GET,
            vec![("content-length", b"25")],
            Some(b"0123456789012345678901234"),
            false,
            ok1(b"0123456789012345678901234"),
        ),
        c(
            "POST declaring more than it sends",
            Method::POST,
            vec![("content-length", b"25")],
            Some(hello),
            true,
            Expect::Either { body: b"hello" },
        ),
        c(
            "POST declaring less than it sends",
            Method::POST,
            vec![("content-length", b"2")],
            Some(hello),
            true,
            Expect::Either { body: b"he" },
        ),
        c(
            "POST declaring content-length: 0 with a body",
            Method::POST,
            vec![("content-length", b"0")],
            Some(hello),
            true,
            Expect::Either { body: b"" },
        ),
        c(
            "POST with a streamed body",
            Method::POST,
            vec![],
            Some(hello),
            true,
            ok1(hello),
        ),
        c(
            "POST with an empty body",
            Method::POST,
            vec![],
            None,
            false,
            ok1(b""),
        ),
        c(
            "transfer-encoding: chunked",
            Method::POST,
            vec![("transfer-encoding", b"chunked")],
            Some(hello),
            false,
            Expect::Either { body: b"hello" },
        ),
        c(
            "content_length look-alike",
            Method::POST,
            vec![("content_length", b"25")],
            Some(hello),
            false,
            ok1(hello),
        ),
        c(
            "transfer_encoding look-alike",
            Method::POST,
            vec![("transfer_encoding", b"chunked")],
            Some(hello),
            false,
            ok1(hello),
        ),
        c(
            "obs-text in a value",
            Method::GET,
            vec![("x-a", b"caf\xe9")],
            None,
            false,
            ok1(b""),
        ),
        c(
            "host differing from :authority",
            Method::GET,
            vec![("host", b"evil.example")],
            None,
            false,
            Expect::Either { body: b"" },
        ),
        c(
            "expect: 100-continue",
            Method::POST,
            vec![("expect", b"100-continue")],
            Some(hello),
            false,
            ok1(hello),
        ),
        c("TRACE", Method::TRACE, vec![], None, false, Expect::Refused),
        c(
            "two content-length fields that differ",
            Method::POST,
            vec![("content-length", b"5"), ("content-length", b"6")],
            Some(hello),
            false,
            Expect::Either { body: b"hello" },
        ),
    ]
}

/// Sends one HTTP/2 request on a new h2c connection: the status, or None
/// when the stream or connection was reset.
async fn h2_send(addr: SocketAddr, case: &H2Case, target: &str) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let body: http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible> =
        match (case.body, case.streamed) {
            (None, _) => Full::new(Bytes::new()).boxed(),
            (Some(b), false) => Full::new(Bytes::from_static(b)).boxed(),
            (Some(b), true) => {
                BodyExt::boxed(StreamBody::new(futures_util::stream::iter(vec![Ok(
                    hyper::body::Frame::data(Bytes::from_static(b)),
                )])))
            }
        };
    let mut req = Request::builder()
        .method(case.method.clone())
        .version(Version::HTTP_2)
        .uri(format!("http://{addr}{target}"));
    for (n, v) in &case.headers {
        req = req.header(*n, http::HeaderValue::from_bytes(v).expect("value"));
    }
    let req = req.body(body).expect("request");
    let rsp = tokio::time::timeout(CASE_WAIT, sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = rsp.status().as_u16();
    let _ = rsp.into_body().collect().await;
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http2_inputs_are_framed_or_refused() {
    let (upstream, gw) = setup().await;
    let cases = h2_cases();
    let mut failures = Vec::new();
    let mut table = String::new();
    let addr = gw.addr();
    let runs: Vec<(usize, Route)> = (0..cases.len())
        .flat_map(|i| [(i, Route::Cached), (i, Route::Pass)])
        .collect();
    let cases_ref = &cases;
    let results: Vec<(usize, Route, Option<u16>)> = futures_util::stream::iter(runs)
        .map(|(i, route)| async move {
            let marker = format!(
                "m=h2-{i}{}.",
                if route == Route::Cached { "c" } else { "p" }
            );
            let target = format!("{}x?{marker}", route.prefix());
            (i, route, h2_send(addr, &cases_ref[i], &target).await)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, route, status) in &results {
        let case = &cases[*i];
        let marker = format!(
            "m=h2-{i}{}.",
            if *route == Route::Cached { "c" } else { "p" }
        );
        let seen = upstream.seen_with(&marker);
        // A reset stream is HTTP/2's refusal; the connection is not reused.
        let answers = Answers {
            statuses: status.iter().copied().collect(),
            closed: status.is_none_or(|s| (400..500).contains(&s)),
        };
        let _ = writeln!(
            table,
            "h2 {:<60} {:?}\t{:?} upstream={:?}",
            case.name,
            route,
            status,
            seen.iter()
                .map(|s| (&s.framing, s.body.len()))
                .collect::<Vec<_>>()
        );
        if let Some(f) = judge(
            case.name,
            *route,
            case.method.as_str(),
            &case.expect,
            &answers,
            &seen,
        ) {
            failures.push(f);
        }
    }
    if std::env::var_os("HOSTILE_TABLE").is_some() {
        eprintln!("{table}");
    }
    let violations = upstream.violations();
    assert!(
        violations.is_empty() && failures.is_empty(),
        "{} HTTP/2 runs failed:\n{}\nupstream framing violations:\n{}",
        failures.len(),
        failures.join("\n"),
        violations.join("\n")
    );
}

/// One request of the property test.
#[derive(Debug, Clone)]
struct Random {
    method: &'static str,
    route: Route,
    /// 0: none (no body), 1: Content-Length, 2: chunked, 3: both (refused),
    /// 4: two different Content-Lengths (refused).
    framing: u8,
    body: Vec<u8>,
    extra: Vec<&'static str>,
}

/// Fields a hostile client adds; none may change the framing upstream.
const EXTRA: [&str; 10] = [
    "Content_Length: 3",
    "Transfer_Encoding: chunked",
    "X_User_Id: mallory",
    "Forwarded: host=evil.example",
    "X-Forwarded-Host: evil.example",
    "Expect: 100-continue",
    "Connection: x-forwarded-for, via",
    "Upgrade: websocket",
    "Connection: content-length",
    "X-A: \u{e9}t\u{e9}",
];

fn random_request() -> impl proptest::strategy::Strategy<Value = Random> {
    use proptest::prelude::*;
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        any::<bool>(),
        prop_oneof![4 => Just(1u8), 3 => Just(2u8), 2 => Just(0u8), 1 => Just(3u8), 1 => Just(4u8)],
        prop::collection::vec(any::<u8>(), 0..48),
        prop::collection::vec(prop::sample::select(EXTRA.to_vec()), 0..3),
    )
        .prop_map(|(method, cached, framing, body, extra)| Random {
            method,
            route: if cached { Route::Cached } else { Route::Pass },
            framing,
            body: if framing == 0 { Vec::new() } else { body },
            extra,
        })
}

impl Random {
    fn bytes(&self, target: &str) -> Vec<u8> {
        let mut head = format!("{} {target} HTTP/1.1\r\nHost: x\r\n", self.method);
        for e in &self.extra {
            head.push_str(e);
            head.push_str("\r\n");
        }
        let n = self.body.len();
        match self.framing {
            1 => head.push_str(&format!("Content-Length: {n}\r\n")),
            2 => head.push_str("Transfer-Encoding: chunked\r\n"),
            3 => head.push_str(&format!(
                "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"
            )),
            4 => head.push_str(&format!(
                "Content-Length: {n}\r\nContent-Length: {}\r\n",
                n + 1
            )),
            _ => {}
        }
        head.push_str("\r\n");
        let mut v = head.into_bytes();
        match self.framing {
            2 | 3 => {
                if !self.body.is_empty() {
                    v.extend_from_slice(format!("{:x}\r\n", n).as_bytes());
                    v.extend_from_slice(&self.body);
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(b"0\r\n\r\n");
            }
            _ => v.extend_from_slice(&self.body),
        }
        v
    }
}

/// Sends `reqs` pipelined on one keep-alive connection; the final
/// statuses in order (fewer when the gateway closed the connection).
async fn pipeline(addr: SocketAddr, reqs: &[Random], targets: &[String]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut all = Vec::new();
    for (r, t) in reqs.iter().zip(targets) {
        all.extend_from_slice(&r.bytes(t));
    }
    let _ = s.write_all(&all).await;
    let deadline = tokio::time::Instant::now() + CASE_WAIT;
    let (mut buf, mut statuses, mut chunk) = (Vec::new(), Vec::new(), [0u8; 8192]);
    loop {
        while let Some((used, status)) = one_response(
            &buf,
            reqs.get(statuses.len()).is_some_and(|r| r.method == "HEAD"),
        ) {
            buf.drain(..used);
            if status >= 200 {
                statuses.push(status);
            }
        }
        if statuses.len() >= reqs.len() {
            break;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    statuses
}

#[test]
fn random_pipelines_reach_the_upstream_as_accepted() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (upstream, gw) = rt.block_on(setup());
    let addr = gw.addr();
    let run = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(random_request(), 1..6);
    let result = runner.run(&strategy, |reqs| {
        let n = run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let targets: Vec<String> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}x?m=prop{n}-{i}.", r.route.prefix()))
            .collect();
        let statuses = rt.block_on(async {
            let s = pipeline(addr, &reqs, &targets).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            s
        });
        let accepted = statuses.iter().filter(|s| !(400..500).contains(*s)).count();
        let seen: usize = targets
            .iter()
            .map(|t| upstream.seen_with(&t[5..]).len())
            .sum();
        proptest::prop_assert_eq!(
            accepted,
            seen,
            "answers {:?}, the upstream saw {}",
            statuses,
            seen
        );
        for (i, status) in statuses.iter().enumerate() {
            let got = upstream.seen_with(&targets[i][5..]);
            let r = &reqs[i];
            if *status != 200 {
                continue;
            }
            // A cache fill sends no body; `Upgrade` makes a request
            // ineligible for the cache (passed through with its body).
            let fill = r.route == Route::Cached
                && (r.method == "GET" || r.method == "HEAD")
                && !r.extra.iter().any(|e| e.starts_with("Upgrade"));
            let want: &[u8] = if fill { b"" } else { &r.body };
            proptest::prop_assert_eq!(got.len(), 1);
            proptest::prop_assert_eq!(got[0].body.as_slice(), want, "request {}", i);
        }
        let violations = upstream.violations();
        if !violations.is_empty() {
            return Err(TestCaseError::fail(violations.join("\n")));
        }
        Ok(())
    });
    drop(gw);
    if let Err(e) = result {
        panic!("{e}");
    }
}
