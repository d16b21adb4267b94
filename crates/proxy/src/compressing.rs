//! On-the-fly compression of streamed (uncached) responses. Cached
//! responses never come here: their compressed variants are kept in the
//! entry and produced once.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use perfgate_cache::cache_control::CacheControl;
use perfgate_cache::compress::{Compressor, Encoding, StreamEncoder};

use perfgate_http::body::{Body, BoxError};

/// Decides whether a streamed response should be compressed for this
/// client, and if so rewrites its headers and returns the encoder.
pub(crate) fn prepare(
    compressor: &Compressor,
    enc: Encoding,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Option<StreamEncoder> {
    // A 206 is a byte range of the identity representation: compressing it
    // would make its Content-Range lie (RFC 9110 §14.4).
    if enc == Encoding::Identity
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
        || headers.contains_key(CONTENT_ENCODING)
    {
        return None;
    }
    // An unknown length counts as large enough: it is streamed and may be big.
    let len = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    if !compressor.is_compressible(headers.get(CONTENT_TYPE), len)
        || CacheControl::from_headers(headers).no_transform
    {
        return None;
    }
    let encoder = StreamEncoder::new(enc, compressor).ok()?;
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_ENCODING, enc.header_value());
    add_vary_accept_encoding(headers);
    weaken_etag(headers);
    Some(encoder)
}

/// Adds `Vary: Accept-Encoding` unless already listed (or `Vary: *`).
pub(crate) fn add_vary_accept_encoding(h: &mut HeaderMap) {
    let present = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !present {
        h.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A compressed representation is not byte-identical to the original, so
/// a strong validator becomes weak (as nginx does when it compresses).
pub(crate) fn weaken_etag(h: &mut HeaderMap) {
    if let Some(v) = h.get(ETAG)
        && v.as_bytes().first() == Some(&b'"')
    {
        let mut weak = Vec::with_capacity(v.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(v.as_bytes());
        if let Ok(w) = HeaderValue::from_bytes(&weak) {
            h.insert(ETAG, w);
        }
    }
}

/// A body compressed chunk by chunk (each chunk flushed, so streaming
/// responses such as server-sent events keep flowing).
pub(crate) struct Compressing {
    inner: Body,
    encoder: Option<StreamEncoder>,
}

impl Compressing {
    pub(crate) fn new(inner: Body, encoder: StreamEncoder) -> Self {
        Self {
            inner,
            encoder: Some(encoder),
        }
    }
}

impl HttpBody for Compressing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match encoder.encode_chunk(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                    },
                    // Trailers are dropped: the encoding is finished first.
                    Err(_trailers) => continue,
                },
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    return match encoder.finish() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
