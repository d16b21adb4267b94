//! The one body type perfgate sends: a buffer from the cache (no boxing on
//! the hit path) or a stream from the upstream or the client.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::{Instant, Sleep};

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response or request body.
pub enum Body {
    /// No body.
    Empty,
    /// A complete buffer (cache hits, gateway-generated responses).
    Full(Option<Bytes>),
    /// A stream (pass-through traffic).
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(b))
        }
    }

    /// A streamed body.
    pub fn stream<B>(b: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body::Stream(b.map_err(Into::into).boxed_unsync())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(s) => s.size_hint(),
        }
    }
}

/// The upstream body stalled for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream body idle for more than {0:?}")]
pub(crate) struct IdleTimeout(pub Duration);

pin_project_lite::pin_project! {
    /// Wraps a streamed body: fails it when no frame arrives within `idle`,
    /// and reports the bytes that passed through when it ends or is dropped.
    /// The timer is armed only when the body has to wait: a body that is
    /// already there (most small responses) never touches the timer wheel.
    pub struct Watched<B, F: FnOnce(u64)> {
        #[pin]
        inner: B,
        idle: Duration,
        #[pin]
        sleep: Sleep,
        // The sleep's deadline is current: set at the start, or at the
        // first wait after a frame; false from a frame until that wait.
        armed: bool,
        bytes: u64,
        on_done: Option<F>,
    }

    impl<B, F: FnOnce(u64)> PinnedDrop for Watched<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_done.take() {
                f(*this.bytes);
            }
        }
    }
}

impl<B, F: FnOnce(u64)> Watched<B, F> {
    /// Watches `inner` with an idle timeout; `on_done` gets the byte count.
    pub fn new(inner: B, idle: Duration, on_done: F) -> Self {
        Self {
            inner,
            idle,
            sleep: tokio::time::sleep(idle),
            armed: true,
            bytes: 0,
            on_done: Some(on_done),
        }
    }
}

impl<B, F> HttpBody for Watched<B, F>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(u64),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
                *this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !*this.armed {
                    // Measured from now rather than from the last frame: at
                    // most one poll later, and no clock read per frame.
                    let idle = *this.idle;
                    this.sleep.as_mut().reset(Instant::now() + idle);
                    *this.armed = true;
                }
                match this.sleep.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `Content-Length` a head declares, when it is a number.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Why [`read_bounded`] gave no body.
#[derive(Debug)]
pub enum ReadError {
    /// Declared or found larger than the bound.
    TooLarge,
    /// The body broke off (the client went away, or its framing failed).
    Broken(BoxError),
    /// The whole body did not arrive within the deadline.
    TimedOut(Duration),
}

/// Reads a whole request body of at most `max` bytes within `deadline`
/// (`server.request_body_timeout`: a client trickling its body must not
/// hold the request, and the memory read so far, for ever); a declared
/// length over `max` is refused without reading.
pub async fn read_bounded(
    body: Body,
    headers: &http::HeaderMap,
    max: u64,
    deadline: Duration,
) -> Result<Bytes, ReadError> {
    if declared_length(headers).is_some_and(|n| n > max) {
        return Err(ReadError::TooLarge);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        // The client body is itself limited (`server.max_body_bytes`); both
        // limits report the same error type.
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Ok(Err(e)) => Err(ReadError::Broken(e)),
        Err(_) => Err(ReadError::TimedOut(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends one byte and then nothing.
    struct Trickle(bool);

    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_at_the_deadline() {
        let deadline = Duration::from_secs(10);
        let headers = http::HeaderMap::new();
        let read = read_bounded(Body::stream(Trickle(false)), &headers, 1024, deadline);
        match read.await {
            Err(ReadError::TimedOut(d)) => assert_eq!(d, deadline),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_read() {
        let got = read_bounded(
            Body::full("hello"),
            &http::HeaderMap::new(),
            1024,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"hello");
    }
}
