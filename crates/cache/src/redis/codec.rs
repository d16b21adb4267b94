//! The binary form of one cached variant in Redis.
//!
//! Layout (all integers big-endian; `bytes` is a `u32` length then the
//! bytes):
//!
//! ```text
//! u8  format version (VERSION)
//! u16 status
//! u64 unix millis when encoded
//! u64 unix millis when the store may drop it (0: no limit)
//! u64 age at encode time, millis
//! u64 lifetime, stale-while-revalidate, stale-if-error, millis
//! u8  flags (FLAG_*)
//! u32 header count, then name `bytes`, value `bytes` each
//! u32 vary count, then name `bytes`, u8 present, value `bytes` each
//! u32 tag count, then `bytes` (UTF-8) each
//! u8  compressed variant count, then u8 encoding index, body `bytes` each
//! bytes body
//! ```
//!
//! The version byte comes first so a future layout (or a foreign value
//! under our key) is recognized and skipped instead of misread. Decoding
//! validates everything and never panics: the bytes come from the network.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::compress::Encoding;
use crate::entry::{Entry, EntryParts};
use crate::policy::Freshness;
use crate::vary::VaryKey;

/// The format version written by [`encode`]; [`decode`] rejects others.
pub const VERSION: u8 = 1;

const FLAG_UPSTREAM_ENCODED: u8 = 1;
const FLAG_COMPRESSIBLE: u8 = 1 << 1;
const FLAG_MUST_REVALIDATE: u8 = 1 << 2;
const FLAG_NO_CACHE: u8 = 1 << 3;
const FLAG_HEURISTIC: u8 = 1 << 4;
const FLAG_AUTH_REUSABLE: u8 = 1 << 5;
const KNOWN_FLAGS: u8 = (1 << 6) - 1;

/// The value is not a variant this version can read (foreign, truncated,
/// or written by another format version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// The wall clock as unix milliseconds (0 if the clock is before 1970).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Encodes `entry` as it is at `now` (monotonic) / `now_unix_ms` (wall
/// clock). `expires_at_unix_ms` is when readers should ignore it even if
/// Redis still holds it (0: never): variants share one hash whose TTL is the
/// longest of theirs.
pub fn encode(entry: &Entry, now: Instant, now_unix_ms: u64, expires_at_unix_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.body.len() + 256);
    out.push(VERSION);
    out.extend_from_slice(&entry.status.as_u16().to_be_bytes());
    out.extend_from_slice(&now_unix_ms.to_be_bytes());
    out.extend_from_slice(&expires_at_unix_ms.to_be_bytes());
    out.extend_from_slice(&millis(entry.age(now)).to_be_bytes());
    let f = &entry.freshness;
    for d in [f.lifetime, f.stale_while_revalidate, f.stale_if_error] {
        out.extend_from_slice(&millis(d).to_be_bytes());
    }
    let mut flags = 0;
    for (on, bit) in [
        (entry.upstream_encoded, FLAG_UPSTREAM_ENCODED),
        (entry.compressible, FLAG_COMPRESSIBLE),
        (f.must_revalidate, FLAG_MUST_REVALIDATE),
        (f.no_cache, FLAG_NO_CACHE),
        (f.heuristic, FLAG_HEURISTIC),
        (entry.auth_reusable, FLAG_AUTH_REUSABLE),
    ] {
        if on {
            flags |= bit;
        }
    }
    out.push(flags);

    put_len(&mut out, entry.headers.len());
    for (name, value) in &entry.headers {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    let vary = entry.vary.entries();
    put_len(&mut out, vary.len());
    for (name, value) in vary {
        put_bytes(&mut out, name.as_str().as_bytes());
        out.push(u8::from(value.is_some()));
        put_bytes(&mut out, value.as_ref().map_or(&[][..], |v| v.as_bytes()));
    }
    put_len(&mut out, entry.tags.len());
    for tag in &entry.tags {
        put_bytes(&mut out, tag.as_bytes());
    }
    let variants = entry.variants();
    // At most three compressed encodings exist, so a byte is plenty.
    out.push(u8::try_from(variants.len()).unwrap_or(0));
    for (enc, body) in variants.iter().take(usize::from(u8::MAX)) {
        out.push(enc.index() as u8);
        put_bytes(&mut out, body);
    }
    put_bytes(&mut out, &entry.body);
    out
}

/// A variant read back, not yet turned into an [`Entry`].
pub struct Decoded {
    /// Everything but the validators (re-derived from the headers).
    pub parts: EntryParts,
    /// Compressed bodies produced before it was written.
    pub variants: Vec<(Encoding, Bytes)>,
    /// Its age when it was written.
    pub age_at_encode: Duration,
    /// Wall clock (unix millis) when it was written.
    pub encoded_at_unix_ms: u64,
    /// Wall clock (unix millis) past which it must be ignored; 0: never.
    pub expires_at_unix_ms: u64,
}

impl Decoded {
    /// True when the writer's retention for it has ended.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.expires_at_unix_ms != 0 && now_unix_ms >= self.expires_at_unix_ms
    }

    /// The entry as if stored at `now`: its initial age is the age it had
    /// when written plus the wall-clock time it spent in Redis (a writer
    /// clock ahead of ours counts as no time spent).
    pub fn into_entry(mut self, now: Instant, now_unix_ms: u64) -> Entry {
        let in_redis = Duration::from_millis(now_unix_ms.saturating_sub(self.encoded_at_unix_ms));
        self.parts.freshness.initial_age = self.age_at_encode.saturating_add(in_redis);
        Entry::restore(self.parts, self.variants, now)
    }
}

/// Decodes a value written by [`encode`]. `buf` is shared, so the bodies
/// are slices of it rather than copies.
pub fn decode(buf: &Bytes) -> Result<Decoded, Corrupt> {
    let mut r = Reader { buf, pos: 0 };
    if r.u8()? != VERSION {
        return Err(Corrupt);
    }
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| Corrupt)?;
    let encoded_at_unix_ms = r.u64()?;
    let expires_at_unix_ms = r.u64()?;
    let age_at_encode = Duration::from_millis(r.u64()?);
    let lifetime = Duration::from_millis(r.u64()?);
    let stale_while_revalidate = Duration::from_millis(r.u64()?);
    let stale_if_error = Duration::from_millis(r.u64()?);
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Corrupt);
    }
    let flag = |bit: u8| flags & bit != 0;

    let mut headers = HeaderMap::new();
    for _ in 0..r.count()? {
        let name = HeaderName::from_bytes(&r.bytes()?).map_err(|_| Corrupt)?;
        let value = HeaderValue::from_maybe_shared(r.bytes()?).map_err(|_| Corrupt)?;
        headers.append(name, value);
    }
    let mut vary = Vec::new();
    for _ in 0..r.count()? {
        let name = HeaderName::from_bytes(&r.bytes()?).map_err(|_| Corrupt)?;
        let present = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Corrupt),
        };
        let value = r.bytes()?;
        let value = if present {
            Some(HeaderValue::from_maybe_shared(value).map_err(|_| Corrupt)?)
        } else if value.is_empty() {
            None
        } else {
            return Err(Corrupt);
        };
        vary.push((name, value));
    }
    let mut tags: Vec<Arc<str>> = Vec::new();
    for _ in 0..r.count()? {
        let tag = std::str::from_utf8(&r.bytes()?)
            .map_err(|_| Corrupt)?
            .into();
        tags.push(tag);
    }
    let mut variants: Vec<(Encoding, Bytes)> = Vec::new();
    for _ in 0..r.u8()? {
        let index = usize::from(r.u8()?);
        let enc = Encoding::COMPRESSED
            .into_iter()
            .find(|e| e.index() == index)
            .ok_or(Corrupt)?;
        if variants.iter().any(|(e, _)| *e == enc) {
            return Err(Corrupt);
        }
        variants.push((enc, r.bytes()?));
    }
    let body = r.bytes()?;
    if r.pos != buf.len() {
        return Err(Corrupt);
    }

    let freshness = Freshness {
        lifetime,
        initial_age: age_at_encode,
        stale_while_revalidate,
        stale_if_error,
        must_revalidate: flag(FLAG_MUST_REVALIDATE),
        no_cache: flag(FLAG_NO_CACHE),
        heuristic: flag(FLAG_HEURISTIC),
    };
    Ok(Decoded {
        parts: EntryParts {
            status,
            headers,
            body,
            upstream_encoded: flag(FLAG_UPSTREAM_ENCODED),
            compressible: flag(FLAG_COMPRESSIBLE),
            vary: VaryKey::from_entries(vary),
            freshness,
            auth_reusable: flag(FLAG_AUTH_REUSABLE),
            tags,
        },
        variants,
        age_at_encode,
        encoded_at_unix_ms,
        expires_at_unix_ms,
    })
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Lengths come from in-memory entries, far below 4 GiB; saturating
    // makes an impossible overflow a decode error instead of a panic.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Corrupt> {
        let end = self.pos.checked_add(n).ok_or(Corrupt)?;
        let s = self.buf.get(self.pos..end).ok_or(Corrupt)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// An element count. Every element takes at least 4 bytes, so a count
    /// the rest of the buffer cannot hold is rejected before looping.
    fn count(&mut self) -> Result<usize, Corrupt> {
        let n = usize::try_from(self.u32()?).map_err(|_| Corrupt)?;
        if n > (self.buf.len() - self.pos) / 4 {
            return Err(Corrupt);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Bytes, Corrupt> {
        let n = usize::try_from(self.u32()?).map_err(|_| Corrupt)?;
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = HeaderName> {
        "[a-z][a-z0-9-]{0,15}"
            .prop_filter_map("valid name", |s| HeaderName::from_bytes(s.as_bytes()).ok())
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        "[ -~]{0,40}".prop_filter_map("valid value", |s| HeaderValue::from_str(&s).ok())
    }

    fn ms() -> impl Strategy<Value = Duration> {
        (0u64..10_000_000).prop_map(Duration::from_millis)
    }

    prop_compose! {
        fn entry()(
            status in 200u16..600,
            headers in proptest::collection::vec((header_name(), header_value()), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            upstream_encoded in any::<bool>(),
            compressible in any::<bool>(),
            vary in proptest::collection::vec((header_name(), proptest::option::of(header_value())), 0..4),
            (lifetime, swr, sie, initial_age) in (ms(), ms(), ms(), ms()),
            (must_revalidate, no_cache, heuristic, auth_reusable) in any::<(bool, bool, bool, bool)>(),
            tags in proptest::collection::vec("[a-zA-Z0-9:/_-]{1,20}", 0..5),
            variants in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 3),
            variant_mask in 0u8..8,
        ) -> Entry {
            let mut map = HeaderMap::new();
            for (n, v) in headers {
                map.append(n, v);
            }
            let parts = EntryParts {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                headers: map,
                body: Bytes::from(body),
                upstream_encoded,
                compressible,
                vary: VaryKey::from_entries(vary),
                freshness: Freshness {
                    lifetime,
                    initial_age,
                    stale_while_revalidate: swr,
                    stale_if_error: sie,
                    must_revalidate,
                    no_cache,
                    heuristic,
                },
                auth_reusable,
                tags: tags.into_iter().map(Arc::from).collect(),
            };
            let variants = Encoding::COMPRESSED
                .into_iter()
                .zip(variants)
                .enumerate()
                .filter(|(i, _)| variant_mask & (1 << i) != 0)
                .map(|(_, (e, b))| (e, Bytes::from(b)))
                .collect();
            Entry::restore(parts, variants, Instant::now())
        }
    }

    proptest! {
        #[test]
        fn round_trip_preserves_everything_observable(e in entry(), in_redis in 0u64..100_000) {
            let now = Instant::now();
            let written = 1_700_000_000_000;
            let buf = Bytes::from(encode(&e, now, written, written + 5_000));
            let d = decode(&buf).map_err(|_| TestCaseError::fail("decode failed"))?;
            prop_assert_eq!(d.expires_at_unix_ms, written + 5_000);
            prop_assert!(!d.expired(written + 4_999) && d.expired(written + 5_000));
            let later = now + Duration::from_secs(1);
            let back = d.into_entry(later, written + in_redis);
            prop_assert_eq!(back.status, e.status);
            prop_assert_eq!(&back.headers, &e.headers);
            prop_assert_eq!(&back.body, &e.body);
            prop_assert_eq!(back.upstream_encoded, e.upstream_encoded);
            prop_assert_eq!(back.compressible, e.compressible);
            prop_assert_eq!(&back.vary, &e.vary);
            prop_assert_eq!(back.auth_reusable, e.auth_reusable);
            prop_assert_eq!(&back.tags, &e.tags);
            prop_assert_eq!(back.variants(), e.variants());
            prop_assert_eq!(&back.etag, &e.etag);
            prop_assert_eq!(&back.last_modified, &e.last_modified);
            let (f, g) = (back.freshness, e.freshness);
            prop_assert_eq!(f.lifetime, g.lifetime);
            prop_assert_eq!(f.stale_while_revalidate, g.stale_while_revalidate);
            prop_assert_eq!(f.stale_if_error, g.stale_if_error);
            prop_assert_eq!(
                (f.must_revalidate, f.no_cache, f.heuristic),
                (g.must_revalidate, g.no_cache, g.heuristic)
            );
            // The age it had when written plus the time spent in Redis.
            let written_age = Duration::from_millis(millis(e.age(now)));
            prop_assert_eq!(back.age(later), written_age + Duration::from_millis(in_redis));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&Bytes::from(bytes));
        }

        #[test]
        fn decode_survives_mutations(e in entry(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut buf = encode(&e, Instant::now(), 1, 0);
            let i = pos % buf.len();
            buf[i] = byte;
            buf.truncate(cut % (buf.len() + 1));
            let _ = decode(&Bytes::from(buf));
        }
    }

    #[test]
    fn wrong_version_is_rejected() {
        let e = Entry::new(
            EntryParts {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"hello"),
                upstream_encoded: false,
                compressible: true,
                vary: VaryKey::default(),
                freshness: Freshness::for_tests(Duration::from_secs(60)),
                auth_reusable: false,
                tags: Vec::new(),
            },
            Instant::now(),
        );
        let mut buf = encode(&e, Instant::now(), 1, 0);
        assert!(decode(&Bytes::from(buf.clone())).is_ok());
        for v in [0, 2, 255] {
            buf[0] = v;
            assert_eq!(decode(&Bytes::from(buf.clone())).err(), Some(Corrupt));
        }
        assert_eq!(decode(&Bytes::new()).err(), Some(Corrupt));
    }
}
