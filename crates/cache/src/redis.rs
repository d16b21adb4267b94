//! The shared L2 tier on Redis, and the invalidation fan-out between
//! instances, on the [`perfgate_redis::Redis`] connection (which owns the
//! deadlines, the breaker and the health).
//!
//! Request-path calls run under `redis.timeout`, admin calls under ten
//! times that, at least two seconds. A failed call opens the connection's
//! breaker: for `redis.retry_after` calls return [`L2Error::Skipped`] at
//! once, so an outage costs requests nothing, then one call probes again.
//!
//! Keys (`{p}` is `redis.key_prefix`):
//! - `{p}:e:{primary key}`: a hash of the variants stored under the key:
//!   field `v:{d}` = [`codec`] bytes of the variant whose
//!   [`VaryKey::digest`](crate::vary::VaryKey::digest) is `d` (16 hex
//!   digits), and field `i` = the variant index (see [`index`]): for each
//!   variant, oldest written first, its digest and the names of the request
//!   fields it was selected by. A miss reads the index and the one variant
//!   the request selects (`HMGET i v:{digest of no Vary}`, then `HGET` only
//!   when the resource varies), never every body; a write keeps at most
//!   `redis.max_variants`, dropping the least recently written;
//! - `{p}:h:{url hash}`: the primary key, for purges by URL hash;
//! - `{p}:t:{tag}`: a set of primary keys carrying the tag;
//! - channel `{p}:invalidate`: JSON [`InvalidationMsg`]s.
//!
//! Every command touches one key, so everything works on Redis Cluster.
//! Primary keys may contain `{`/`}`, which Cluster reads as hash tags; that
//! only changes which slot a key lands on, which is harmless precisely
//! because no command spans two keys.

pub mod codec;
pub mod index;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ::redis::{Cmd, Value, cmd};
use bytes::Bytes;
use http::HeaderMap;
use perfgate_config::RedisConfig;
use perfgate_redis::{Push, Redis, glob_escape};

use crate::entry::Entry;
use crate::key::url_hash;
use crate::vary::VaryKey;

/// Why an L2 call returned nothing: the connection's error.
pub use perfgate_redis::Error as L2Error;
/// The L2's state, for the admin health endpoint: the connection's.
pub use perfgate_redis::Health as L2Health;

/// An invalidation broadcast to every instance on `{prefix}:invalidate`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct InvalidationMsg {
    /// The sending instance, so it can ignore its own messages.
    pub from: String,
    /// Primary keys to drop.
    pub keys: Vec<String>,
    /// Primary-key prefixes to drop.
    pub prefixes: Vec<String>,
    /// Tags whose entries to drop.
    pub tags: Vec<String>,
    /// Mark stale instead of dropping.
    pub soft: bool,
    /// Drop everything.
    pub flush: bool,
}

/// What the subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum L2Event {
    /// Another instance (or this one) asks for an invalidation.
    Invalidate(InvalidationMsg),
    /// (Re)subscribed after a gap: messages may have been missed.
    Resynced,
}

struct Inner {
    redis: Redis,
    max_object_bytes: u64,
    max_variants: usize,
}

/// Handle to the Redis L2; cheap to clone.
#[derive(Clone)]
pub struct L2 {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2")
            .field("redis", &self.inner.redis)
            .finish()
    }
}

impl L2 {
    /// Connects to Redis in the background ([`Redis::start`]) and puts the
    /// L2 on it; never blocks on Redis. Err only for an invalid URL/node
    /// list, or when called outside a Tokio runtime.
    pub fn start(cfg: &RedisConfig) -> Result<L2, String> {
        Ok(L2::new(Redis::start(cfg)?, cfg))
    }

    /// The L2 on an existing connection (shared with the job queue and the
    /// rate limits); `cfg` gives its object and variant limits.
    pub fn new(redis: Redis, cfg: &RedisConfig) -> L2 {
        L2 {
            inner: Arc::new(Inner {
                redis,
                max_object_bytes: cfg.max_object_bytes.0,
                max_variants: cfg.max_variants.max(1),
            }),
        }
    }

    /// The connection this L2 uses.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// The connection's state, for health reporting.
    pub fn health(&self) -> L2Health {
        self.inner.redis.health()
    }

    /// The variant stored under the primary key that `req` selects (by its
    /// `Vary` values; the newest written when several could), decoded as an
    /// entry stored "now" (`stored_at = Instant::now()`,
    /// `freshness.initial_age` = the age it had when written plus the
    /// wall-clock time spent in Redis). `None` when there is none, it is past
    /// its retention, or unreadable. One round trip (HMGET of the index and
    /// the variant without `Vary`), a second (HGET) only for a resource that
    /// varies; each under `redis.timeout`. The caller still confirms the
    /// match with [`VaryKey::matches`]: digests are not collision resistant.
    pub async fn get(&self, key: &str, req: &HeaderMap) -> Result<Option<Entry>, L2Error> {
        let redis = &self.inner.redis;
        let timeout = redis.timeout();
        let ekey = self.entry_key(key);
        let plain = VaryKey::default().digest();
        let c = cmd("HMGET")
            .arg(&ekey)
            .arg(index::FIELD)
            .arg(index::value_field(plain))
            .clone();
        let (idx, plain_value): (Option<Vec<u8>>, Option<Vec<u8>>) =
            redis.command(&c, timeout).await?;
        let Some(digest) = idx.as_deref().and_then(|i| index::select(i, req)) else {
            return Ok(None);
        };
        let value = match plain_value {
            Some(v) if digest == plain => Some(v),
            _ => {
                let c = cmd("HGET")
                    .arg(&ekey)
                    .arg(index::value_field(digest))
                    .clone();
                redis.command(&c, timeout).await?
            }
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let value = Bytes::from(value);
        let now = Instant::now();
        let now_unix = codec::unix_millis(SystemTime::now());
        match codec::decode(&value) {
            Ok(d) if d.expired(now_unix) => Ok(None),
            Ok(d) => Ok(Some(d.into_entry(now, now_unix))),
            Err(codec::Corrupt) => {
                tracing::debug!(key = %ekey, "skipping unreadable L2 variant");
                // Another format version may be running side by side
                // (rolling upgrade), so only our own broken values are
                // deleted.
                if value.first() == Some(&codec::VERSION) {
                    let redis = redis.clone();
                    let c = cmd("HDEL")
                        .arg(&ekey)
                        .arg(index::value_field(digest))
                        .clone();
                    tokio::spawn(async move {
                        let _ = redis.command::<Value>(&c, redis.timeout()).await;
                    });
                }
                Ok(None)
            }
        }
    }

    /// Writes one variant under the primary key and records it in the
    /// key's index, dropping the least recently written variants beyond
    /// `redis.max_variants` (one Lua script on the one hash: atomic, and
    /// Cluster-safe). Then `{prefix}:h:{url_hash}` → key, and each tag set
    /// `{prefix}:t:{tag}` (SADD key), with expirations = `retention`
    /// (extended, never shortened: a hash, mapping or tag set shared with
    /// longer-lived entries keeps the longer TTL, and each variant carries
    /// its own expiry for readers). Bodies over `redis.max_object_bytes` are
    /// not written (Ok). Under the hot-path deadline.
    pub async fn put(&self, key: &str, entry: &Entry, retention: Duration) -> Result<(), L2Error> {
        let i = &self.inner;
        if retention.is_zero() || entry.body.len() as u64 > i.max_object_bytes {
            return Ok(());
        }
        let ttl_ms = u64::try_from(retention.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let now_unix = codec::unix_millis(SystemTime::now());
        let value = codec::encode(
            entry,
            Instant::now(),
            now_unix,
            now_unix.saturating_add(ttl_ms),
        );
        let ekey = self.entry_key(key);
        let args = index::put_args(&entry.vary, value, i.max_variants, ttl_ms);
        i.redis
            .script::<Value>(
                &index::PUT,
                std::slice::from_ref(&ekey),
                &args,
                i.redis.timeout(),
            )
            .await?;
        let mut groups = vec![{
            let hkey = self.hash_key(&url_hash(key));
            // KEEPTTL: overwriting must not drop the TTL that the
            // extend-only PEXPIREs below rely on.
            with_ttl(
                cmd("SET").arg(&hkey).arg(key).arg("KEEPTTL").clone(),
                &hkey,
                ttl_ms,
            )
        }];
        for tag in &entry.tags {
            let tkey = self.tag_key(tag);
            groups.push(with_ttl(
                cmd("SADD").arg(&tkey).arg(key).clone(),
                &tkey,
                ttl_ms,
            ));
        }
        i.redis.groups(groups, i.redis.timeout()).await.map(drop)
    }

    /// Deletes the variants of each primary key; returns how many keys held
    /// variants.
    pub async fn remove(&self, keys: &[String]) -> Result<u64, L2Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let groups = keys
            .iter()
            .map(|k| vec![cmd("DEL").arg(self.entry_key(k)).clone()])
            .collect();
        let redis = &self.inner.redis;
        let replies = redis.groups(groups, redis.admin_timeout()).await?;
        Ok(replies.iter().flatten().map(int).sum())
    }

    /// The primary key with this URL hash, if one was stored and not expired.
    pub async fn key_for_hash(&self, url_hash: &str) -> Result<Option<String>, L2Error> {
        let c = cmd("GET").arg(self.hash_key(url_hash)).clone();
        let redis = &self.inner.redis;
        redis.command(&c, redis.admin_timeout()).await
    }

    /// Primary keys starting with `prefix` (SCAN with an escaped MATCH
    /// pattern, over every master in cluster mode; each round trip under the
    /// admin deadline).
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, L2Error> {
        let pattern = format!("{}*", glob_escape(&self.entry_key(prefix)));
        self.scan(&pattern, |_| true).await
    }

    /// Primary keys for which `pred` holds (SCAN over all entry keys; for
    /// path-only URL/prefix purges across hosts).
    pub async fn keys_matching(
        &self,
        pred: impl Fn(&str) -> bool + Send,
    ) -> Result<Vec<String>, L2Error> {
        let pattern = format!("{}*", glob_escape(&self.entry_key("")));
        self.scan(&pattern, pred).await
    }

    /// Keys tagged with any of `tags` (SMEMBERS), deduplicated; the tag sets
    /// are deleted.
    pub async fn take_tagged(&self, tags: &[String]) -> Result<Vec<String>, L2Error> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let groups = tags
            .iter()
            .map(|t| {
                let tkey = self.tag_key(t);
                vec![
                    cmd("SMEMBERS").arg(&tkey).clone(),
                    cmd("DEL").arg(&tkey).clone(),
                ]
            })
            .collect();
        let redis = &self.inner.redis;
        let replies = redis.groups(groups, redis.admin_timeout()).await?;
        let mut keys = Vec::new();
        for members in replies.into_iter().filter_map(|g| g.into_iter().next()) {
            let members: Vec<String> = ::redis::from_redis_value(members)
                .map_err(|e| L2Error::Unavailable(e.to_string()))?;
            keys.extend(members);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Soft purge: rewrites each stored variant as stale
    /// ([`Entry::softened`]), keeping the key's TTL. Returns how many
    /// variants were softened. Not atomic: a variant written concurrently
    /// may be overwritten with the softened older copy, which only costs a
    /// revalidation.
    pub async fn soften(&self, keys: &[String]) -> Result<u64, L2Error> {
        let redis = &self.inner.redis;
        let deadline = redis.admin_timeout();
        let mut softened = 0;
        for key in keys {
            let ekey = self.entry_key(key);
            let c = cmd("HGETALL").arg(&ekey).clone();
            let fields: Vec<(Vec<u8>, Vec<u8>)> = redis.command(&c, deadline).await?;
            let now = Instant::now();
            let now_unix = codec::unix_millis(SystemTime::now());
            let mut hset = cmd("HSET");
            hset.arg(&ekey);
            let mut n = 0;
            for (field, value) in fields {
                let Ok(d) = codec::decode(&Bytes::from(value)) else {
                    continue;
                };
                let expires = d.expires_at_unix_ms;
                let stale = d.into_entry(now, now_unix).softened(now);
                hset.arg(field)
                    .arg(codec::encode(&stale, now, now_unix, expires));
                n += 1;
            }
            if n == 0 {
                continue;
            }
            // HSET leaves the hash's TTL as it is.
            redis.command::<Value>(&hset, deadline).await?;
            softened += n;
        }
        Ok(softened)
    }

    /// Broadcasts an invalidation to every subscribed instance (this one
    /// included).
    pub async fn publish(&self, msg: &InvalidationMsg) -> Result<(), L2Error> {
        let json = serde_json::to_vec(msg).map_err(|e| L2Error::Unavailable(e.to_string()))?;
        let c = cmd("PUBLISH").arg(self.channel()).arg(json).clone();
        let redis = &self.inner.redis;
        redis
            .command::<Value>(&c, redis.admin_timeout())
            .await
            .map(drop)
    }

    /// Subscribes to the invalidation channel on a dedicated connection with
    /// its own reconnect loop (exponential backoff, capped at 1 s). Emits
    /// [`L2Event::Resynced`] after every successful re-subscribe that
    /// followed a disconnect (not after the first subscribe), so the caller
    /// can flush its L1. The task ends when the receiver is dropped.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<L2Event> {
        self.inner
            .redis
            .subscribe(self.channel(), |push| match push {
                Push::Resynced => Some(L2Event::Resynced),
                Push::Message(payload) => parse(payload),
            })
    }

    fn entry_key(&self, key: &str) -> String {
        let mut k = self.inner.redis.key("e:");
        k.push_str(key);
        k
    }

    fn hash_key(&self, url_hash: &str) -> String {
        let mut k = self.inner.redis.key("h:");
        k.push_str(url_hash);
        k
    }

    fn tag_key(&self, tag: &str) -> String {
        let mut k = self.inner.redis.key("t:");
        k.push_str(tag);
        k
    }

    fn channel(&self) -> String {
        self.inner.redis.key("invalidate")
    }

    /// SCANs `pattern` (on every master in a cluster) and returns the primary
    /// keys that satisfy `pred`, sorted.
    async fn scan(
        &self,
        pattern: &str,
        pred: impl Fn(&str) -> bool + Send,
    ) -> Result<Vec<String>, L2Error> {
        let redis = &self.inner.redis;
        let strip = self.entry_key("");
        let mut keys = Vec::new();
        let found = &mut keys;
        redis
            .scan(pattern, redis.admin_timeout(), move |raw| {
                // Keys we wrote are UTF-8; anything else is foreign.
                if let Ok(k) = String::from_utf8(raw)
                    && let Some(k) = k.strip_prefix(&strip)
                    && pred(k)
                {
                    found.push(k.to_string());
                }
            })
            .await?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }
}

/// One key's command followed by extend-only expirations: NX sets a TTL on
/// a key that has none (just created), GT only ever lengthens an existing
/// one (Redis 7.0+).
fn with_ttl(first: Cmd, key: &str, ttl_ms: u64) -> Vec<Cmd> {
    vec![
        first,
        cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("NX").clone(),
        cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("GT").clone(),
    ]
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// A message as an event; malformed ones are logged and dropped.
fn parse(payload: &[u8]) -> Option<L2Event> {
    match serde_json::from_slice::<InvalidationMsg>(payload) {
        Ok(msg) => Some(L2Event::Invalidate(msg)),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring malformed invalidation message");
            None
        }
    }
}
