//! A read-side framing check in front of hyper's HTTP/1 parser.
//!
//! hyper resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding` as RFC 9112 §6.1 permits (the chunked coding wins,
//! `Content-Length` is dropped, the connection closes afterwards), so the
//! handler never sees the conflict. perfgate answers such requests with a
//! 400 instead: they are either broken clients or request-smuggling
//! attempts. This wrapper holds each request head until it is complete,
//! and when it finds the conflict it hands hyper a replacement head that
//! carries a per-process secret marker; `guard::check` turns that into the
//! 400 and the connection is closed.
//!
//! To find the next head on a keep-alive connection the wrapper follows
//! `Content-Length` bodies. After a chunked request (or anything it does not
//! understand, or an HTTP/2 preface) it steps aside for the rest of the
//! connection and hyper's own handling applies.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue};
use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Header carrying the marker of a replaced head.
pub const CONFLICT_HEADER: HeaderName = HeaderName::from_static("x-perfgate-framing");

/// The per-process secret a replaced head carries (clients cannot forge it).
pub fn conflict_marker() -> &'static HeaderValue {
    static MARKER: OnceLock<HeaderValue> = OnceLock::new();
    MARKER.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let v = format!("{:016x}{:016x}", h.finish(), std::process::id());
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("conflict"))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Passing this many body bytes.
    Body(u64),
    /// Stepped aside: bytes pass untouched.
    Off,
}

pin_project_lite::pin_project! {
    /// An HTTP/1 server connection's I/O with the framing check on reads.
    pub struct Framed<I> {
        #[pin]
        io: I,
        state: State,
        // A head split across reads, held back until it is complete.
        pending: BytesMut,
        // Bytes waiting for hyper (a completed held-back head, or a replacement).
        ready: BytesMut,
        // Read buffer for the held-back path, allocated on first use.
        scratch: Option<Box<[u8]>>,
        max_head: usize,
        // Deadline for the head being waited on: armed from the connection's
        // start until its first head, and while a partial head is held back
        // (hyper's own timer starts only once it has seen bytes of a head,
        // which leaves silent or trickling connections open forever).
        deadline: Option<Pin<Box<Sleep>>>,
        head_timeout: Duration,
    }
}

impl<I> Framed<I> {
    /// Wraps a connection; heads longer than `max_head` are passed on
    /// unchecked (hyper rejects them with 431).
    pub fn new(io: I, max_head: usize, head_timeout: Duration) -> Self {
        Self {
            io,
            state: State::Head,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            scratch: None,
            max_head,
            deadline: Some(Box::pin(tokio::time::sleep(head_timeout))),
            head_timeout,
        }
    }
}

/// Where a scan of received bytes stopped.
enum Stop {
    /// Every byte was classified.
    End,
    /// A head starts at the offset but is not complete yet.
    Incomplete(usize),
    /// The head at the offset has conflicting framing.
    Conflict(usize),
}

/// Walks `b` from `state`: skips bodies, classifies complete heads.
fn scan(state: &mut State, b: &[u8]) -> Stop {
    let mut pos = 0;
    while pos < b.len() {
        match *state {
            State::Off => return Stop::End,
            State::Body(n) => {
                let take = usize::try_from(n).map_or(b.len() - pos, |n| n.min(b.len() - pos));
                pos += take;
                *state = next_after_body(n - take as u64);
            }
            State::Head => {
                // Blank lines between requests are allowed (RFC 9112 §2.2).
                while pos < b.len() && (b[pos] == b'\r' || b[pos] == b'\n') {
                    pos += 1;
                }
                if pos == b.len() {
                    break;
                }
                if is_h2_preface(&b[pos..]) {
                    *state = State::Off;
                    return Stop::End;
                }
                let Some(len) = head_end(&b[pos..]) else {
                    return Stop::Incomplete(pos);
                };
                match classify(&b[pos..pos + len]) {
                    Class::Conflict => {
                        *state = State::Off;
                        return Stop::Conflict(pos);
                    }
                    Class::Next(next) => *state = next,
                }
                pos += len;
            }
        }
    }
    Stop::End
}

/// The head hyper gets instead of one with conflicting framing.
fn replacement() -> Vec<u8> {
    let mut r = Vec::with_capacity(128);
    r.extend_from_slice(b"GET / HTTP/1.1\r\nHost: perfgate\r\nConnection: close\r\n");
    r.extend_from_slice(CONFLICT_HEADER.as_str().as_bytes());
    r.extend_from_slice(b": ");
    r.extend_from_slice(conflict_marker().as_bytes());
    r.extend_from_slice(b"\r\n\r\n");
    r
}

impl<I: AsyncRead> AsyncRead for Framed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if *this.state == State::Off && this.pending.is_empty() {
                return this.io.poll_read(cx, buf);
            }
            if this.pending.is_empty() {
                // Fast path: read straight into hyper's buffer and look at
                // the new bytes in place.
                let before = buf.filled().len();
                match this.io.as_mut().poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Pending => return expired(this.deadline, cx),
                    other => return other,
                }
                if buf.filled().len() == before {
                    return Poll::Ready(Ok(())); // end of stream
                }
                let cut = match scan(this.state, &buf.filled()[before..]) {
                    Stop::End => {
                        *this.deadline = None;
                        return Poll::Ready(Ok(()));
                    }
                    Stop::Incomplete(at) => {
                        this.pending.extend_from_slice(&buf.filled()[before + at..]);
                        if at > 0 || this.deadline.is_none() {
                            *this.deadline = Some(Box::pin(tokio::time::sleep(*this.head_timeout)));
                        }
                        before + at
                    }
                    Stop::Conflict(at) => {
                        *this.deadline = None;
                        this.ready.extend_from_slice(&replacement());
                        before + at
                    }
                };
                buf.set_filled(cut);
                if cut > before {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Held-back path: a head is split across reads.
            let scratch = this
                .scratch
                .get_or_insert_with(|| vec![0u8; 4096].into_boxed_slice());
            let mut rb = ReadBuf::new(scratch);
            match this.io.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => return expired(this.deadline, cx),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // End of stream: hand over what is left, unchecked.
                    *this.state = State::Off;
                    let rest = this.pending.split();
                    this.ready.unsplit(rest);
                    continue;
                }
                Poll::Ready(Ok(())) => this.pending.extend_from_slice(rb.filled()),
            }
            match scan(this.state, this.pending) {
                Stop::End => {
                    *this.deadline = None;
                    let all = this.pending.split();
                    this.ready.unsplit(all);
                }
                Stop::Incomplete(at) => {
                    if at > 0 {
                        // A head completed and the next one started.
                        *this.deadline = Some(Box::pin(tokio::time::sleep(*this.head_timeout)));
                    }
                    let done = this.pending.split_to(at);
                    this.ready.unsplit(done);
                    if this.pending.len() > *this.max_head {
                        // Too long to be a head we accept: hyper answers 431.
                        *this.state = State::Off;
                    }
                }
                Stop::Conflict(at) => {
                    *this.deadline = None;
                    let done = this.pending.split_to(at);
                    this.ready.unsplit(done);
                    this.ready.extend_from_slice(&replacement());
                    this.pending.clear();
                }
            }
        }
    }
}

/// `Pending`, or a timeout error once the head deadline has passed.
fn expired(deadline: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if let Some(d) = deadline
        && d.as_mut().poll(cx).is_ready()
    {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )));
    }
    Poll::Pending
}

fn next_after_body(left: u64) -> State {
    if left == 0 {
        State::Head
    } else {
        State::Body(left)
    }
}

fn is_h2_preface(b: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let n = b.len().min(PREFACE.len());
    n > 0 && b[..n] == PREFACE[..n]
}

/// Offset just past the blank line ending a head, if it is complete.
fn head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// What a complete head means for the bytes after it.
enum Class {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Conflict,
    /// The state after the head.
    Next(State),
}

fn classify(head: &[u8]) -> Class {
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                // Invalid or disagreeing lengths: hyper rejects those itself.
                _ => return Class::Next(State::Off),
            }
        }
    }
    match (transfer_encoding, content_length) {
        (true, Some(_)) => Class::Conflict,
        // Chunked bodies are not followed: step aside.
        (true, None) => Class::Next(State::Off),
        (false, Some(n)) => Class::Next(next_after_body(n)),
        (false, None) => Class::Next(State::Head),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

impl<I: AsyncWrite> AsyncWrite for Framed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn through(input: &[u8]) -> Vec<u8> {
        through_in(input, 5).await
    }

    async fn through_in(input: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        // Feed in small pieces to exercise heads split across reads.
        let (mut w, r) = tokio::io::duplex(piece + 2);
        let data = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in data.chunks(piece) {
                w.write_all(chunk).await.unwrap();
            }
        });
        let mut f = Framed::new(r, 16 * 1024, Duration::from_secs(30));
        f.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn ordinary_requests_pass_untouched() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\n!!GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(input).await, input.to_vec());
    }

    #[tokio::test]
    async fn conflicting_framing_is_replaced() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        let out = through(input).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("GET / HTTP/1.1\r\n"), "{text}");
        assert!(text.contains(conflict_marker().to_str().unwrap()));
        // The conflict is found in a later request of the connection too.
        let input2 = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        let out = String::from_utf8_lossy(&through(input2).await).to_string();
        assert!(
            out.starts_with("GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn body_bytes_that_look_like_heads_are_not_inspected() {
        let body = b"X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through(&input).await, input);
    }

    #[tokio::test]
    async fn any_split_of_valid_traffic_is_untouched() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyGET /c HTTP/1.1\nHost: x\n\nPOST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for piece in 1..40 {
            assert_eq!(
                through_in(input, piece).await,
                input.to_vec(),
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn h2_preface_steps_aside() {
        let input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00";
        assert_eq!(through(input).await, input.to_vec());
        // In one read, too (the fast path).
        assert_eq!(through_in(input, 64).await, input.to_vec());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_and_trickling_heads_time_out() {
        // A connection that never sends a head.
        let (_w, r) = tokio::io::duplex(64);
        let mut f = Framed::new(r, 16 * 1024, Duration::from_secs(5));
        let mut buf = [0u8; 64];
        let err = f.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // A head that starts and never ends.
        let (mut w, r) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut w, b"GET / HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let mut f = Framed::new(r, 16 * 1024, Duration::from_secs(5));
        let err = f.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn head_end_accepts_bare_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: x\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
