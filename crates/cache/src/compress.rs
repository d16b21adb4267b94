//! Response compression: `Accept-Encoding` negotiation (RFC 9110 §12.5.3),
//! the compressible-type check, one-shot compression of cached bodies and a
//! streaming encoder for bodies that pass through uncached.
//!
//! Cached objects are compressed once per encoding and the variants are kept
//! with the entry, so negotiation sits on the hot path of every hit while
//! compression runs once per object: [`Compressor::negotiate`] therefore
//! works on the raw header bytes and never allocates.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use perfgate_config::CompressionConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A content coding perfgate can produce.
///
/// The discriminants are stable so the value can index per-encoding arrays
/// (the variants kept by a cache entry, per-encoding counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// No transformation.
    Identity = 0,
    /// gzip (RFC 1952).
    Gzip = 1,
    /// brotli (RFC 7932).
    Brotli = 2,
    /// Zstandard (RFC 8878).
    Zstd = 3,
}

impl Encoding {
    /// Every encoding that actually compresses, in discriminant order.
    pub const COMPRESSED: [Encoding; 3] = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

    /// Number of encodings, identity included; the length of arrays indexed
    /// by [`Encoding::index`].
    pub const COUNT: usize = 4;

    /// The coding token as it appears in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Parses a coding token, case-insensitively; `x-gzip` is the legacy
    /// alias of `gzip` (RFC 9110 §8.4.1.3).
    pub fn from_token(t: &str) -> Option<Self> {
        Self::from_token_bytes(t.trim().as_bytes())
    }

    fn from_token_bytes(t: &[u8]) -> Option<Self> {
        const TOKENS: [(&[u8], Encoding); 5] = [
            (b"gzip", Encoding::Gzip),
            (b"x-gzip", Encoding::Gzip),
            (b"br", Encoding::Brotli),
            (b"zstd", Encoding::Zstd),
            (b"identity", Encoding::Identity),
        ];
        TOKENS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map(|&(_, enc)| enc)
    }

    /// The `Content-Encoding` header value; static, so no allocation.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Position of this encoding in arrays of [`Encoding::COUNT`] elements.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A weight from `Accept-Encoding`, in thousandths (`q=0.5` → 500).
type Weight = u16;

/// What the client said about each encoding; `None` means "not mentioned".
#[derive(Default)]
struct Accepted {
    explicit: [Option<Weight>; Encoding::COUNT],
    star: Option<Weight>,
}

impl Accepted {
    /// Parses an `Accept-Encoding` value. Malformed members are skipped
    /// rather than failing the whole header: a client that sends garbage
    /// gets whatever its well-formed members allow.
    fn parse(value: &[u8]) -> Self {
        let mut acc = Accepted::default();
        for member in value.split(|&b| b == b',') {
            let mut parts = member.split(|&b| b == b';');
            let coding = trim(parts.next().unwrap_or_default());
            if coding.is_empty() {
                continue;
            }
            let Some(weight) = parse_weight(parts) else {
                continue;
            };
            if coding == b"*" {
                acc.star = Some(acc.star.map_or(weight, |w| w.min(weight)));
            } else if let Some(enc) = Encoding::from_token_bytes(coding) {
                // A coding listed twice keeps its lowest weight: if either
                // listing refuses it, sending it would be wrong.
                let slot = &mut acc.explicit[enc.index()];
                *slot = Some(slot.map_or(weight, |w| w.min(weight)));
            }
        }
        acc
    }

    /// The weight of `enc`: its own listing, else `*`, else not acceptable.
    /// Identity is acceptable unless refused explicitly or through `*;q=0`
    /// (RFC 9110 §12.5.3).
    fn weight(&self, enc: Encoding) -> Weight {
        match (self.explicit[enc.index()], self.star, enc) {
            (Some(w), _, _) => w,
            (None, Some(w), _) => w,
            (None, None, Encoding::Identity) => 1,
            (None, None, _) => 0,
        }
    }
}

/// Parses the parameters after a coding; `Some(1000)` when no `q` is given,
/// `None` when a `q` is malformed (the member is then ignored). Other
/// parameters are ignored as the RFC defines none for codings.
fn parse_weight<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<Weight> {
    let mut weight = 1000;
    for param in params {
        let param = trim(param);
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (trim(&param[..eq]), trim(&param[eq + 1..]));
        if name.eq_ignore_ascii_case(b"q") {
            weight = parse_qvalue(value)?;
        }
    }
    Some(weight)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(v: &[u8]) -> Option<Weight> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for i in 0..3 {
        let digit = frac.get(i).map_or(0, |d| Weight::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A content-type pattern from the config: `*` splits it into a prefix and
/// a suffix (`text/*`, `application/*+json`); without `*` it is exact.
#[derive(Debug, Clone)]
struct TypePattern {
    prefix: Box<[u8]>,
    suffix: Option<Box<[u8]>>,
}

impl TypePattern {
    fn new(pattern: &str) -> Self {
        let pattern = pattern.trim().as_bytes();
        match pattern.iter().position(|&b| b == b'*') {
            Some(star) => Self {
                prefix: pattern[..star].into(),
                suffix: Some(pattern[star + 1..].into()),
            },
            None => Self {
                prefix: pattern.into(),
                suffix: None,
            },
        }
    }

    fn matches(&self, ct: &[u8]) -> bool {
        let Some(suffix) = &self.suffix else {
            return ct.eq_ignore_ascii_case(&self.prefix);
        };
        // The length check keeps prefix and suffix from overlapping, so
        // `application/*+json` does not match `application+json`.
        ct.len() >= self.prefix.len() + suffix.len()
            && ct[..self.prefix.len()].eq_ignore_ascii_case(&self.prefix)
            && ct[ct.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    }
}

/// Negotiates and performs response compression as configured.
///
/// Built once from the config (and rebuilt on reload), then shared.
#[derive(Debug, Clone)]
pub struct Compressor {
    /// Offered encodings in preference order; empty when disabled. A fixed
    /// array keeps negotiation free of allocation and indirection.
    order: [Encoding; 3],
    offered: usize,
    min_bytes: usize,
    gzip_level: u32,
    brotli_level: u32,
    zstd_level: i32,
    content_types: Vec<TypePattern>,
    /// Compressions of stored bodies running at once (on the blocking pool).
    blocking: Arc<Semaphore>,
    /// Streamed encoders alive at once (each holds a bounded window).
    streams: Arc<Semaphore>,
}

/// Every compression slot is taken: the caller sends the identity body
/// rather than wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Compressor {
    /// Builds a compressor; with compression disabled, [`Compressor::negotiate`]
    /// always answers [`Encoding::Identity`]. Unknown algorithm names are
    /// ignored here because config validation reports them.
    pub fn new(cfg: &CompressionConfig) -> Self {
        let mut order = [Encoding::Identity; 3];
        let mut offered = 0;
        if cfg.enabled {
            for name in &cfg.algorithms {
                match Encoding::from_token(name) {
                    Some(Encoding::Identity) | None => {}
                    Some(enc) if order[..offered].contains(&enc) => {}
                    Some(enc) => {
                        if let Some(slot) = order.get_mut(offered) {
                            *slot = enc;
                            offered += 1;
                        }
                    }
                }
            }
        }
        Self {
            order,
            offered,
            min_bytes: usize::try_from(cfg.min_bytes.get()).unwrap_or(usize::MAX),
            gzip_level: cfg.gzip_level.clamp(1, 9),
            brotli_level: cfg.brotli_level.min(11),
            zstd_level: cfg.zstd_level.clamp(1, 22),
            content_types: cfg
                .content_types
                .iter()
                .map(|p| TypePattern::new(p))
                .collect(),
            blocking: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            streams: Arc::new(Semaphore::new(cfg.max_streams.max(1))),
        }
    }

    /// Takes one of the `max_concurrent` slots (tests of the busy path);
    /// `None` when every slot is taken.
    #[cfg(test)]
    pub(crate) fn hold_compression_slot_for_tests(&self) -> Option<OwnedSemaphorePermit> {
        self.blocking.clone().try_acquire_owned().ok()
    }

    /// Compresses a stored body on tokio's blocking pool, never on the
    /// calling (request-serving) thread, when one of the
    /// `compression.max_concurrent` slots is free. `Ok(None)` when the
    /// result is not smaller than the body (or compression failed): the
    /// identity body is the variant. `Err(Busy)` when every slot is taken:
    /// the caller serves identity at once instead of queueing.
    pub async fn compress_off_thread(
        &self,
        enc: Encoding,
        body: Bytes,
    ) -> Result<Option<Bytes>, Busy> {
        let permit = self
            .blocking
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let this = self.clone();
        let len = body.len();
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.compress(enc, &body)
        })
        .await;
        Ok(match out {
            Ok(Ok(b)) if b.len() < len => Some(b),
            _ => None,
        })
    }

    /// The encodings offered, in the configured order of preference.
    pub fn encodings(&self) -> &[Encoding] {
        &self.order[..self.offered]
    }

    /// Whether any encoding is offered at all.
    pub fn is_enabled(&self) -> bool {
        self.offered > 0
    }

    /// Picks the encoding for a response to a request carrying
    /// `accept_encoding`: the offered coding with the highest weight, ties
    /// broken by the configured order; identity when the client sends no
    /// header, accepts none of the offered codings, or weighs identity
    /// strictly higher. When the client refuses identity too (`identity;q=0`
    /// with nothing else acceptable) identity is still returned: sending it
    /// is the usual answer and beats a `406`.
    pub fn negotiate(&self, accept_encoding: Option<&HeaderValue>) -> Encoding {
        let Some(value) = accept_encoding else {
            return Encoding::Identity;
        };
        if self.offered == 0 {
            return Encoding::Identity;
        }
        let accepted = Accepted::parse(value.as_bytes());
        let mut best = Encoding::Identity;
        let mut best_weight: Weight = 0;
        for &enc in self.encodings() {
            let w = accepted.weight(enc);
            // Strictly greater, so an earlier (preferred) coding wins ties.
            if w > best_weight {
                best = enc;
                best_weight = w;
            }
        }
        if best != Encoding::Identity && accepted.weight(Encoding::Identity) > best_weight {
            return Encoding::Identity;
        }
        best
    }

    /// Whether a body of `len` bytes with this `Content-Type` is worth
    /// compressing: large enough and of a configured type (parameters such
    /// as `charset` are ignored, the comparison is case-insensitive).
    pub fn is_compressible(&self, content_type: Option<&HeaderValue>, len: usize) -> bool {
        if self.offered == 0 || len < self.min_bytes {
            return false;
        }
        let Some(ct) = content_type else {
            return false;
        };
        let bytes = ct.as_bytes();
        let essence = trim(bytes.split(|&b| b == b';').next().unwrap_or_default());
        !essence.is_empty() && self.content_types.iter().any(|p| p.matches(essence))
    }

    /// Compresses a whole body; identity returns a copy.
    pub fn compress(&self, enc: Encoding, data: &[u8]) -> io::Result<Bytes> {
        // JSON typically shrinks to a fifth or less; starting there avoids
        // most reallocations without reserving the full input size.
        let capacity = data.len() / 4 + 64;
        let out = match enc {
            Encoding::Identity => return Ok(Bytes::copy_from_slice(data)),
            Encoding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(
                    Vec::with_capacity(capacity),
                    flate2::Compression::new(self.gzip_level),
                );
                w.write_all(data)?;
                w.finish()?
            }
            Encoding::Brotli => {
                let mut w = self.brotli_writer(Vec::with_capacity(capacity));
                w.write_all(data)?;
                // `into_inner` finishes the stream; writing into a Vec
                // cannot fail, so the error it swallows cannot occur.
                w.into_inner()
            }
            Encoding::Zstd => zstd::bulk::compress(data, self.zstd_level)?,
        };
        Ok(Bytes::from(out))
    }

    fn brotli_writer(&self, out: Vec<u8>) -> brotli::CompressorWriter<Vec<u8>> {
        brotli::CompressorWriter::new(out, BROTLI_BUFFER, self.brotli_level, BROTLI_LGWIN)
    }
}

/// Internal buffer of the brotli writer.
const BROTLI_BUFFER: usize = 4096;
/// brotli window (log2) for whole stored bodies; 22 (4 MiB) is the
/// library's and the CLI's default. Its memory lives only while one of the
/// `max_concurrent` compressions runs.
const BROTLI_LGWIN: u32 = 22;
/// brotli window (log2) of a streamed response's encoder: 256 KiB, since an
/// encoder lives as long as its (possibly endless) response.
pub const STREAM_BROTLI_LGWIN: u32 = 18;
/// zstd window (log2) of a streamed response's encoder: 256 KiB (level 3
/// alone would pick 2 MiB).
pub const STREAM_ZSTD_WINDOW_LOG: u32 = 18;

/// Compresses a body as it streams, for responses that are not cached.
///
/// Each chunk is flushed through the encoder so the client receives data as
/// the upstream produces it (server-sent events, slow generators) instead of
/// when the compressor's window fills.
pub struct StreamEncoder {
    inner: StreamInner,
    /// One of `compression.max_streams`, held while the encoder lives.
    _slot: Option<OwnedSemaphorePermit>,
}

enum StreamInner {
    Identity,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    // Boxed: the brotli state is large and would bloat every variant.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl StreamEncoder {
    /// Starts a stream in `enc` with the compressor's levels and the
    /// bounded stream windows. Fails (the caller sends identity) when
    /// `compression.max_streams` encoders are already alive.
    pub fn new(enc: Encoding, compressor: &Compressor) -> io::Result<Self> {
        let slot = match enc {
            Encoding::Identity => None,
            _ => Some(
                compressor
                    .streams
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| io::Error::other("every stream encoder is in use"))?,
            ),
        };
        let inner = match enc {
            Encoding::Identity => StreamInner::Identity,
            Encoding::Gzip => StreamInner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(compressor.gzip_level),
            )),
            Encoding::Brotli => StreamInner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                compressor.brotli_level,
                STREAM_BROTLI_LGWIN,
            ))),
            Encoding::Zstd => {
                let mut w = zstd::stream::write::Encoder::new(Vec::new(), compressor.zstd_level)?;
                w.window_log(STREAM_ZSTD_WINDOW_LOG)?;
                StreamInner::Zstd(w)
            }
        };
        Ok(Self { inner, _slot: slot })
    }

    /// Compresses `chunk` and returns everything the encoder produced so
    /// far, flushed so that it decodes on its own.
    pub fn encode_chunk(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        if chunk.is_empty() {
            // A flush without input would only add sync markers.
            return Ok(Bytes::new());
        }
        match &mut self.inner {
            StreamInner::Identity => Ok(Bytes::copy_from_slice(chunk)),
            StreamInner::Gzip(w) => drain(w, chunk),
            StreamInner::Brotli(w) => drain(&mut **w, chunk),
            StreamInner::Zstd(w) => drain(w, chunk),
        }
    }

    /// Ends the stream and returns its last bytes (trailer, checksums).
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self.inner {
            StreamInner::Identity => Vec::new(),
            StreamInner::Gzip(w) => w.finish()?,
            StreamInner::Brotli(w) => w.into_inner(),
            StreamInner::Zstd(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// A writer that owns a `Vec<u8>` we can empty between chunks.
trait Drainable: Write {
    fn buffer(&mut self) -> &mut Vec<u8>;
}

impl Drainable for flate2::write::GzEncoder<Vec<u8>> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl Drainable for brotli::CompressorWriter<Vec<u8>> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

impl Drainable for zstd::stream::write::Encoder<'static, Vec<u8>> {
    fn buffer(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
}

fn drain<W: Drainable>(w: &mut W, chunk: &[u8]) -> io::Result<Bytes> {
    w.write_all(chunk)?;
    w.flush()?;
    // The encoders only append to their output, so taking the bytes
    // written so far leaves them a valid (empty) buffer to continue in.
    Ok(Bytes::from(std::mem::take(w.buffer())))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn default_compressor() -> Compressor {
        Compressor::new(&CompressionConfig::default())
    }

    #[test]
    fn negotiation_table() {
        use Encoding::*;
        // Default order: br, zstd, gzip.
        let c = default_compressor();
        let cases: &[(&str, Encoding)] = &[
            ("gzip", Gzip),
            ("br", Brotli),
            ("zstd", Zstd),
            ("gzip, br", Brotli),
            ("br, gzip", Brotli),
            ("gzip, deflate, br, zstd", Brotli),
            ("gzip;q=1.0, br;q=0.5", Gzip),
            ("gzip;q=0.8, br;q=0.9, zstd;q=0.85", Brotli),
            ("br;q=0, gzip", Gzip),
            ("br;q=0, zstd;q=0, gzip;q=0", Identity),
            ("*", Brotli),
            ("*;q=0.5, gzip", Gzip),
            ("*;q=0", Identity),
            ("gzip;q=0, *", Brotli),
            ("identity", Identity),
            ("identity;q=0", Identity),
            ("identity;q=0, gzip", Gzip),
            ("gzip;q=0.5, identity", Identity),
            ("gzip;q=0.5, identity;q=0.5", Gzip),
            ("GZIP", Gzip),
            ("Br", Brotli),
            ("x-gzip", Gzip),
            ("  gzip ;  q=0.7 ,\tbr;q=0.6 ", Gzip),
            ("gzip;Q=0.2, br;q=0.1", Gzip),
            ("", Identity),
            (",,,", Identity),
            ("deflate, compress", Identity),
            ("garbage;;;==, gzip", Gzip),
            ("br;q=2, gzip", Gzip),
            ("br;q=0.5000, gzip;q=0.1", Gzip),
            ("br;q=abc, gzip;q=0.1", Gzip),
            ("br;q=1.001, gzip;q=0.1", Gzip),
            ("br;q=, gzip;q=0.1", Gzip),
            ("br;level=5, gzip", Brotli),
            ("gzip, gzip;q=0", Identity),
        ];
        for &(header, want) in cases {
            assert_eq!(
                c.negotiate(Some(&hv(header))),
                want,
                "Accept-Encoding: {header:?}"
            );
        }
        assert_eq!(c.negotiate(None), Identity);
    }

    #[test]
    fn negotiation_follows_configured_order_and_disabled() {
        let cfg = CompressionConfig {
            algorithms: vec!["gzip".into(), "br".into(), "bogus".into(), "gzip".into()],
            ..CompressionConfig::default()
        };
        let c = Compressor::new(&cfg);
        assert_eq!(c.encodings(), &[Encoding::Gzip, Encoding::Brotli]);
        assert_eq!(c.negotiate(Some(&hv("br, gzip, zstd"))), Encoding::Gzip);
        assert_eq!(c.negotiate(Some(&hv("zstd"))), Encoding::Identity);

        let off = Compressor::new(&CompressionConfig {
            enabled: false,
            ..CompressionConfig::default()
        });
        assert!(!off.is_enabled());
        assert_eq!(off.negotiate(Some(&hv("br, gzip"))), Encoding::Identity);
        assert!(!off.is_compressible(Some(&hv("application/json")), 10_000));
    }

    #[test]
    fn obs_text_header_does_not_panic() {
        let c = default_compressor();
        let v = HeaderValue::from_bytes(b"gz\xffip, br;q=0.\xff, gzip").ok();
        assert_eq!(c.negotiate(v.as_ref()), Encoding::Gzip);
    }

    #[test]
    fn compressible_types() {
        let c = default_compressor();
        let yes = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "text/html",
            "text/plain ; charset=us-ascii",
            "application/problem+json",
            "application/vnd.api+json",
            "application/atom+xml",
            "image/svg+xml",
        ];
        for ct in yes {
            assert!(c.is_compressible(Some(&hv(ct)), 1000), "{ct}");
        }
        let no = [
            "image/png",
            "application/octet-stream",
            "application/jsonx",
            "application+json",
            "",
            ";",
        ];
        for ct in no {
            assert!(!c.is_compressible(Some(&hv(ct)), 1000), "{ct}");
        }
        assert!(!c.is_compressible(None, 1000));
        assert!(!c.is_compressible(Some(&hv("application/json")), 499));
        assert!(c.is_compressible(Some(&hv("application/json")), 500));
    }

    #[test]
    fn encoding_tokens() {
        for enc in Encoding::COMPRESSED.into_iter().chain([Encoding::Identity]) {
            assert_eq!(Encoding::from_token(enc.as_str()), Some(enc));
            assert_eq!(enc.header_value(), enc.as_str());
        }
        assert_eq!(Encoding::from_token("X-GZIP"), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_token("deflate"), None);
        assert_eq!(Encoding::Zstd.index(), 3);
    }

    fn decode(enc: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Identity => out.extend_from_slice(data),
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => {
                zstd::stream::read::Decoder::new(data)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    /// About 10 KiB of JSON shaped like an events API response.
    fn sample_json() -> Vec<u8> {
        let mut s = String::from("{\"items\":[");
        let mut i = 0;
        while s.len() < 10 * 1024 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"id\":{i},\"title\":\"Community meetup #{i}\",\"venue\":\"Hall {}\",\
                 \"starts_at\":\"2025-0{}-1{}T18:30:00Z\",\"price_cents\":{},\
                 \"tags\":[\"tech\",\"networking\",\"city-{}\"],\"available\":{}}}",
                i % 7,
                1 + i % 9,
                i % 10,
                1500 + i * 37 % 900,
                i % 5,
                i % 3 == 0
            ));
            i += 1;
        }
        s.push_str("],\"total\":");
        s.push_str(&i.to_string());
        s.push('}');
        s.into_bytes()
    }

    #[test]
    fn round_trip_and_ratio_on_json() {
        let c = default_compressor();
        let json = sample_json();
        for enc in Encoding::COMPRESSED.into_iter().chain([Encoding::Identity]) {
            let packed = c.compress(enc, &json).unwrap();
            assert_eq!(decode(enc, &packed), json, "{enc:?}");
            if enc != Encoding::Identity {
                let saving = 1.0 - packed.len() as f64 / json.len() as f64;
                assert!(saving >= 0.70, "{enc:?} saved only {:.1}%", saving * 100.0);
            }
        }
        assert!(c.compress(Encoding::Gzip, b"").is_ok());
    }

    #[test]
    fn stream_encoder_decodes_to_concatenated_input() {
        let c = default_compressor();
        let json = sample_json();
        for enc in Encoding::COMPRESSED.into_iter().chain([Encoding::Identity]) {
            let mut s = StreamEncoder::new(enc, &c).unwrap();
            let mut wire = Vec::new();
            for (n, chunk) in json.chunks(1500).enumerate() {
                let out = s.encode_chunk(chunk).unwrap();
                // Flushing means every chunk yields bytes right away.
                assert!(!out.is_empty(), "{enc:?} chunk {n} produced nothing");
                wire.extend_from_slice(&out);
            }
            assert!(s.encode_chunk(b"").unwrap().is_empty());
            wire.extend_from_slice(&s.finish().unwrap());
            assert_eq!(decode(enc, &wire), json, "{enc:?}");
        }
    }

    #[test]
    fn stream_prefix_decodes_before_finish() {
        // What was flushed must be decodable without the trailer, which is
        // what lets a client render a streamed response as it arrives.
        let c = default_compressor();
        let mut s = StreamEncoder::new(Encoding::Gzip, &c).unwrap();
        let wire = s.encode_chunk(b"data: hello\n\n").unwrap();
        let mut out = Vec::new();
        let mut d = flate2::write::GzDecoder::new(&mut out);
        d.write_all(&wire).unwrap();
        d.flush().unwrap();
        drop(d);
        assert_eq!(out, b"data: hello\n\n");
    }

    /// A streamed encoder's window is bounded: brotli's stream header says
    /// 2^18 (RFC 7932 §9.1, WBITS), zstd's frame header at most 256 KiB
    /// (RFC 8878 §3.1.1.1.2, Window_Descriptor).
    #[test]
    fn stream_encoders_have_small_windows() {
        let c = default_compressor();
        let data = sample_json();

        let mut br = StreamEncoder::new(Encoding::Brotli, &c).unwrap();
        let out = br.encode_chunk(&data).unwrap();
        let b0 = out[0];
        assert_eq!(b0 & 1, 1, "not the 16-bit window");
        let n = (b0 >> 1) & 7;
        assert_ne!(n, 0);
        assert_eq!(17 + u32::from(n), STREAM_BROTLI_LGWIN);
        assert_eq!(STREAM_BROTLI_LGWIN, 18);

        let mut zs = StreamEncoder::new(Encoding::Zstd, &c).unwrap();
        let out = zs.encode_chunk(&data).unwrap();
        assert_eq!(&out[..4], &[0x28, 0xB5, 0x2F, 0xFD], "zstd magic");
        let fhd = out[4];
        assert_eq!(fhd & 0x20, 0, "a streamed frame has a window descriptor");
        let wd = out[5];
        let base = 1u64 << (10 + u32::from(wd >> 3));
        let window = base + base / 8 * u64::from(wd & 7);
        assert!(window <= 256 * 1024, "zstd window {window}");
        // Both still decode.
        let mut all = out.to_vec();
        all.extend_from_slice(&zs.finish().unwrap());
        assert_eq!(decode(Encoding::Zstd, &all), data);
    }

    /// Past `max_streams` live encoders, a new one is refused (the caller
    /// sends identity); one that ends frees its place.
    #[test]
    fn stream_encoders_are_bounded() {
        let c = Compressor::new(&CompressionConfig {
            max_streams: 1,
            ..CompressionConfig::default()
        });
        let first = StreamEncoder::new(Encoding::Gzip, &c).unwrap();
        assert!(StreamEncoder::new(Encoding::Brotli, &c).is_err());
        assert!(StreamEncoder::new(Encoding::Identity, &c).is_ok());
        drop(first);
        assert!(StreamEncoder::new(Encoding::Brotli, &c).is_ok());
    }
}
