//! A raw HTTP/1.1 upstream that records the exact bytes it receives and
//! parses them itself, strictly, so a test can check how perfgate framed
//! what it sent: every request must have a well-formed head and at most one
//! framing (`Content-Length` or chunked), the declared length must be what
//! arrives, and nothing may follow that does not start another well-formed
//! request. Each request is answered with a small fixed response on the
//! same keep-alive connection; anything malformed is recorded as a
//! violation and the connection is closed without an answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How a request's body was framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// No `Content-Length` or `Transfer-Encoding`: no body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// One request as the upstream parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request method.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// The header fields in order, names lowercased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Its framing.
    pub framing: Framing,
    /// Which upstream connection it came on (0, 1, …).
    pub conn: usize,
}

impl Seen {
    /// The values of the header `name` (lowercase).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    violations: Vec<String>,
    /// Connections that ended in the middle of a request (the sender gave
    /// up on it; nothing after it can be misread).
    aborted: usize,
    conns: usize,
}

/// The running upstream; stops when dropped.
pub struct RawUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Starts one on 127.0.0.1:0 whose answer is storable
    /// (`cache-control: max-age=60`), so a cached route stores it.
    pub async fn start() -> Self {
        Self::start_with("cache-control: max-age=60").await
    }

    /// Starts one whose answer (`200`, body `ok`) carries `fields`
    /// (header lines separated by CRLF, e.g. caching and validators).
    pub async fn start_with(fields: &str) -> Self {
        // The head; a HEAD gets it alone, anything else the body too.
        let head = Arc::new(
            format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{fields}\r\n\r\n").into_bytes(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let id = {
                    let mut st = st.lock().expect("state");
                    st.conns += 1;
                    st.conns - 1
                };
                tokio::spawn(serve(s, id, st.clone(), head.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every complete request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// The requests whose target contains `needle`.
    pub fn seen_with(&self, needle: &str) -> Vec<Seen> {
        self.state
            .lock()
            .expect("state")
            .seen
            .iter()
            .filter(|s| s.target.contains(needle))
            .cloned()
            .collect()
    }

    /// Everything that was not well framed (empty when all was).
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().expect("state").violations.clone()
    }

    /// Connections that ended in the middle of a request.
    pub fn aborted(&self) -> usize {
        self.state.lock().expect("state").aborted
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.state.lock().expect("state").conns
    }
}

/// Why a buffer is not (yet) a request.
enum Parse {
    /// More bytes are needed.
    Partial,
    /// Not a well-framed request.
    Bad(String),
    /// A request of `used` bytes.
    Done(Box<Seen>, usize),
}

async fn serve(mut s: TcpStream, id: usize, state: Arc<Mutex<State>>, head: Arc<Vec<u8>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse(&buf, id) {
            Parse::Done(seen, used) => {
                buf.drain(..used);
                let is_head = seen.method == "HEAD";
                state.lock().expect("state").seen.push(*seen);
                let mut answer = head.as_slice().to_vec();
                if !is_head {
                    answer.extend_from_slice(b"ok");
                }
                if s.write_all(&answer).await.is_err() {
                    return;
                }
                continue;
            }
            Parse::Bad(why) => {
                let shown = String::from_utf8_lossy(&buf[..buf.len().min(300)]).into_owned();
                state
                    .lock()
                    .expect("state")
                    .violations
                    .push(format!("conn {id}: {why}: {shown:?}"));
                return;
            }
            Parse::Partial => {}
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    state.lock().expect("state").aborted += 1;
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses one request at the start of `buf`, strictly (RFC 9112, with no
/// leniency: CRLF only, no obs-fold, no whitespace before the colon, one
/// framing, digits-only lengths).
fn parse(buf: &[u8], conn: usize) -> Parse {
    if buf.is_empty() {
        return Parse::Partial;
    }
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // A bare LF or a stray byte shows before the head is complete.
        if let Some(i) = buf.iter().position(|&b| b == b'\n')
            && (i == 0 || buf[i - 1] != b'\r')
        {
            return Parse::Bad("bare LF in the head".into());
        }
        if buf.len() > 64 * 1024 {
            return Parse::Bad("head larger than 64 KiB".into());
        }
        return Parse::Partial;
    };
    // Every line with its CRLF: the last split piece is empty.
    let head = &buf[..head_end + 2];
    let n_lines = head.split(|&b| b == b'\n').count() - 1;
    let mut lines = head
        .split(|&b| b == b'\n')
        .take(n_lines)
        .map(|l| l.strip_suffix(b"\r").ok_or("bare LF in the head"));
    let request_line = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Parse::Bad(e.into()),
        None => return Parse::Bad("empty head".into()),
    };
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Parse::Bad("request line is not METHOD SP target SP version".into());
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Parse::Bad("bad method".into());
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Parse::Bad("bad request target".into());
    }
    if *version != b"HTTP/1.1" {
        return Parse::Bad("version is not HTTP/1.1".into());
    }
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for line in lines {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Parse::Bad(e.into()),
        };
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Parse::Bad("obs-fold".into());
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parse::Bad("header line without a colon".into());
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parse::Bad("bad header name".into());
        }
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Parse::Bad("control byte in a header value".into());
        }
        let value = value.trim_ascii().to_vec();
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
    }
    let cls: Vec<&Vec<u8>> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v)
        .collect();
    let tes: Vec<&Vec<u8>> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v)
        .collect();
    let body_start = head_end + 4;
    let rest = &buf[body_start..];
    let (framing, body, used) = match (cls.as_slice(), tes.as_slice()) {
        ([], []) => (Framing::None, Vec::new(), 0),
        ([cl], []) => {
            if cl.is_empty() || !cl.iter().all(u8::is_ascii_digit) || cl.len() > 15 {
                return Parse::Bad(format!("Content-Length {:?}", String::from_utf8_lossy(cl)));
            }
            let n: u64 = String::from_utf8_lossy(cl).parse().unwrap_or(u64::MAX);
            let Ok(n_usize) = usize::try_from(n) else {
                return Parse::Bad("Content-Length too large".into());
            };
            if rest.len() < n_usize {
                return Parse::Partial;
            }
            (Framing::Length(n), rest[..n_usize].to_vec(), n_usize)
        }
        ([], [te]) => {
            if !te.eq_ignore_ascii_case(b"chunked") {
                return Parse::Bad(format!(
                    "Transfer-Encoding {:?}",
                    String::from_utf8_lossy(te)
                ));
            }
            match dechunk(rest) {
                Ok(Some((body, used))) => (Framing::Chunked, body, used),
                Ok(None) => return Parse::Partial,
                Err(e) => return Parse::Bad(e),
            }
        }
        _ => {
            return Parse::Bad(format!(
                "{} Content-Length and {} Transfer-Encoding fields",
                cls.len(),
                tes.len()
            ));
        }
    };
    Parse::Done(
        Box::new(Seen {
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            headers,
            body,
            framing,
            conn,
        }),
        body_start + used,
    )
}

/// A chunked body at the start of `buf`: Ok(None) while incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            if buf[at..].contains(&b'\n') {
                return Err("bare LF in a chunk size line".into());
            }
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        let size_part = line.split(|&b| b == b';').next().unwrap_or(line);
        if size_part.is_empty()
            || size_part.len() > 15
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(format!("chunk size {:?}", String::from_utf8_lossy(line)));
        }
        let size = usize::from_str_radix(&String::from_utf8_lossy(size_part), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let line = &buf[at..at + eol];
                at += eol + 2;
                if line.is_empty() {
                    return Ok(Some((body, at)));
                }
                if line.contains(&b'\n') || !line.contains(&b':') {
                    return Err("bad trailer line".into());
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> (Seen, usize) {
        match parse(buf, 0) {
            Parse::Done(s, n) => (*s, n),
            Parse::Partial => panic!("partial"),
            Parse::Bad(e) => panic!("bad: {e}"),
        }
    }

    fn bad(buf: &[u8]) -> bool {
        matches!(parse(buf, 0), Parse::Bad(_))
    }

    #[test]
    fn the_parser_is_strict() {
        let (s, n) = done(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b");
        assert_eq!((s.target.as_str(), n, s.framing), ("/a", 28, Framing::None));
        let (s, _) = done(b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc");
        assert_eq!(s.body, b"abc");
        let (s, _) =
            done(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n");
        assert_eq!(
            (s.body.as_slice(), s.framing),
            (&b"abc"[..], Framing::Chunked)
        );
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab", 0),
            Parse::Partial
        ));
        assert!(bad(b"GET / HTTP/1.1\nhost: x\r\n\r\n"));
        assert!(bad(b"GET / HTTP/1.1\r\nhost: x\r\n y\r\n\r\n"));
        assert!(bad(b"GET / HTTP/1.1\r\nhost : x\r\n\r\n"));
        assert!(bad(
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\na"
        ));
        assert!(bad(
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(bad(b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n"));
        assert!(bad(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n"
        ));
    }
}
