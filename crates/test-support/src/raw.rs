//! Raw TCP exchanges, for requests no HTTP client would send.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Writes `bytes` to `addr` and returns what comes back: everything until
/// the server closes, or the first complete response (head plus a
/// `Content-Length` or chunked body), whichever comes first; at most 10 s.
pub async fn raw(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> String {
    raw_timeout(addr, bytes, Duration::from_secs(10)).await
}

/// [`raw`] with a custom limit.
pub async fn raw_timeout(addr: SocketAddr, bytes: impl AsRef<[u8]>, limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(bytes.as_ref()).await;
    let _ = s.flush().await;
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if complete(&buf) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Whether `buf` holds at least one complete HTTP/1.1 response.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.windows(5).any(|w| w == b"0\r\n\r\n");
        }
    }
    // No framing: 1xx/204/304 have no body, otherwise read until close.
    let status = head.split_whitespace().nth(1).unwrap_or("");
    status.starts_with('1') || status == "204" || status == "304"
}
