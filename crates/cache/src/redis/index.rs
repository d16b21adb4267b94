//! The variant index of one key in Redis: which variants exist, in the
//! order they were written, and by which request fields each is selected,
//! so that a reader fetches only the variant its request selects.
//!
//! Value of the hash field `i`:
//!
//! ```text
//! u8  format version (VERSION)
//! lines separated by '\n', oldest written first, each:
//!     16 lowercase hex digits of the variant's VaryKey digest
//!     ' '
//!     the names of its Vary fields, lowercase, separated by ','
//! ```
//!
//! Text after the version byte so that the write script (Lua) can edit it;
//! field names cannot contain ',', ' ' or '\n'. The version byte is not the
//! variant codec's: an older perfgate that reads every field of the hash
//! skips the index as a foreign value instead of deleting it. An index of
//! another version is never parsed (a reader misses; a writer starts a new
//! index).

use std::sync::LazyLock;

use ::redis::Script;
use http::{HeaderMap, HeaderName};

use crate::vary::VaryKey;

/// The hash field holding the index.
pub const FIELD: &str = "i";

/// Format version of the index (first byte of its value).
pub const VERSION: u8 = 0x81;

/// The hash field holding the variant with this digest.
pub fn value_field(digest: u64) -> String {
    format!("v:{digest:016x}")
}

/// Records a variant and stores it, atomically on the one hash:
/// KEYS[1] the hash; ARGV: digest (16 hex digits), variant bytes, field
/// names, most variants kept, TTL in milliseconds, index version byte.
/// Beyond the cap the least recently written variants are deleted. The
/// hash's TTL is only ever extended (NX on a new hash, GT otherwise).
const PUT_LUA: &str = r"
local key, digest = KEYS[1], ARGV[1]
local cap = tonumber(ARGV[4])
local idx = redis.call('HGET', key, 'i')
local kept = {}
if idx and string.sub(idx, 1, 1) == ARGV[6] then
  for line in string.gmatch(string.sub(idx, 2), '[^\n]+') do
    if string.sub(line, 1, 16) ~= digest then
      kept[#kept + 1] = line
    end
  end
end
while #kept >= cap do
  local old = table.remove(kept, 1)
  redis.call('HDEL', key, 'v:' .. string.sub(old, 1, 16))
end
kept[#kept + 1] = digest .. ' ' .. ARGV[3]
redis.call('HSET', key, 'v:' .. digest, ARGV[2], 'i', ARGV[6] .. table.concat(kept, '\n'))
redis.call('PEXPIRE', key, ARGV[5], 'NX')
redis.call('PEXPIRE', key, ARGV[5], 'GT')
return #kept
";

/// The write script (see `PUT_LUA`).
pub static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_LUA));

/// The arguments of [`PUT`] for a variant selected by `vary`.
pub fn put_args(vary: &VaryKey, value: Vec<u8>, max_variants: usize, ttl_ms: u64) -> Vec<Vec<u8>> {
    vec![
        format!("{:016x}", vary.digest()).into_bytes(),
        value,
        names_line(vary).into_bytes(),
        max_variants.to_string().into_bytes(),
        ttl_ms.to_string().into_bytes(),
        vec![VERSION],
    ]
}

fn names_line(vary: &VaryKey) -> String {
    let names: Vec<&str> = vary.entries().iter().map(|(n, _)| n.as_str()).collect();
    names.join(",")
}

/// The digest of the variant `req` selects: the newest written whose Vary
/// values, taken from `req`, give its digest. `None` when the index is of
/// another version, unreadable, or lists no variant for this request.
pub fn select(index: &[u8], req: &HeaderMap) -> Option<u64> {
    let (&version, lines) = index.split_first()?;
    if version != VERSION {
        return None;
    }
    lines.split(|&b| b == b'\n').rev().find_map(|line| {
        let hex = line.get(..16)?;
        let digest = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        let names = line.get(17..).unwrap_or_default();
        let fields = names
            .split(|&b| b == b',')
            .filter(|n| !n.is_empty())
            .map(HeaderName::from_bytes)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        (VaryKey::capture(&fields, req, &[]).digest() == digest).then_some(digest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn index(vary: &[&VaryKey]) -> Vec<u8> {
        let mut out = vec![VERSION];
        let lines: Vec<String> = vary
            .iter()
            .map(|v| format!("{:016x} {}", v.digest(), names_line(v)))
            .collect();
        out.extend_from_slice(lines.join("\n").as_bytes());
        out
    }

    fn req(lang: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(l) = lang {
            h.insert("accept-language", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn lang(l: Option<&str>) -> VaryKey {
        VaryKey::capture(&[HeaderName::from_static("accept-language")], &req(l), &[])
    }

    #[test]
    fn selects_the_variant_the_request_presents() {
        let (en, de, none) = (lang(Some("en")), lang(Some("de")), lang(None));
        let plain = VaryKey::default();
        let idx = index(&[&en, &de, &none]);
        assert_eq!(select(&idx, &req(Some("de"))), Some(de.digest()));
        assert_eq!(select(&idx, &req(Some("en"))), Some(en.digest()));
        assert_eq!(select(&idx, &req(None)), Some(none.digest()));
        assert_eq!(select(&idx, &req(Some("fr"))), None);
        // A resource without Vary: every request selects it.
        let idx = index(&[&plain]);
        assert_eq!(select(&idx, &req(Some("fr"))), Some(plain.digest()));
        // The newest written wins when the Vary fields changed.
        let idx = index(&[&plain, &en]);
        assert_eq!(select(&idx, &req(Some("en"))), Some(en.digest()));
        assert_eq!(select(&idx, &req(Some("de"))), Some(plain.digest()));
    }

    #[test]
    fn other_versions_and_garbage_select_nothing() {
        let en = lang(Some("en"));
        let mut idx = index(&[&en]);
        idx[0] = 1;
        assert_eq!(select(&idx, &req(Some("en"))), None);
        for junk in [
            &b""[..],
            &[VERSION],
            &[VERSION, b'z', b' '],
            b"\x81zzzzzzzzzzzzzzzz a",
        ] {
            assert_eq!(select(junk, &req(Some("en"))), None);
        }
    }
}
