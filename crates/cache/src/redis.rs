//! The shared L2 tier on Redis, and the invalidation fan-out between
//! instances. This is the only module that talks to Redis.
//!
//! Every call has a deadline (`redis.timeout` on the request path, ten
//! times that, at least two seconds, on the admin path). A failed call opens
//! a breaker: for `redis.retry_after` calls return [`L2Error::Skipped`] at
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
mod conn;
mod gcra;
pub mod index;
mod pubsub;

use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{Cmd, RedisResult, Value, cmd};
use bytes::Bytes;
use http::HeaderMap;
use perfgate_config::RedisConfig;

use crate::entry::Entry;
use crate::key::url_hash;
use crate::vary::VaryKey;
use conn::{Breaker, Conn, is_outage};
pub use gcra::RateReply;

/// Why an L2 call returned nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum L2Error {
    /// The call did not finish within its deadline.
    #[error("redis call timed out")]
    Timeout,
    /// Redis is not connected yet or answered with an error.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Not attempted: a call failed less than `retry_after` ago.
    #[error("L2 skipped after a recent failure")]
    Skipped,
    /// The stored value is not a variant this version can read.
    #[error("corrupt or foreign L2 entry")]
    Corrupt,
}

/// The L2's state, for the admin health endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct L2Health {
    /// `"up"`, `"degraded"` (the last call failed) or `"connecting"` (never
    /// connected yet).
    pub state: &'static str,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
    /// `"standalone"` or `"cluster"`.
    pub mode: &'static str,
}

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

/// Fixed settings derived from the configuration.
struct Settings {
    timeout: Duration,
    admin_timeout: Duration,
    prefix: String,
    max_object_bytes: u64,
    max_variants: usize,
    mode: &'static str,
}

struct Inner {
    settings: Settings,
    /// Set once by the background connect task.
    conn: OnceLock<Conn>,
    breaker: Breaker,
    /// Where the subscription connects (the server, or each cluster seed).
    pubsub_targets: Vec<::redis::Client>,
}

/// Handle to the Redis L2; cheap to clone.
#[derive(Clone)]
pub struct L2 {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2")
            .field("prefix", &self.inner.settings.prefix)
            .field("health", &self.health())
            .finish()
    }
}

/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// SCAN batch size: large enough for few round trips, small enough that
/// one SCAN never blocks Redis noticeably.
const SCAN_COUNT: u64 = 1000;

/// What the background task connects: a lazy manager, or the cluster client
/// (boxed: it is large and only used once).
enum Target {
    Standalone(ConnectionManager),
    Cluster(Box<ClusterClient>),
}

impl L2 {
    /// Validates the config and starts connecting in the background; never
    /// blocks on Redis. Err only for an invalid URL/node list, or when called
    /// outside a Tokio runtime.
    pub fn start(cfg: &RedisConfig) -> Result<L2, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the Redis L2 must be started inside a Tokio runtime".into());
        }
        // Reconnection inside redis-rs is bounded by these; our own deadline
        // bounds every call anyway, so they only need to be short enough that
        // a restarted Redis is found again quickly.
        let timeout = cfg.timeout.get();
        let connect_timeout =
            (timeout * 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let (target, pubsub_targets, mode) = if !cfg.cluster.is_empty() {
            let nodes: Vec<String> = cfg.cluster.iter().map(|n| node_url(n)).collect();
            let client = ClusterClient::builder(nodes.clone())
                .connection_timeout(connect_timeout)
                .response_timeout(connect_timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(|e| format!("redis.cluster: {e}"))?;
            let seeds = nodes
                .iter()
                .map(|n| pubsub_client(n).map_err(|e| format!("redis.cluster: {n}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            (Target::Cluster(Box::new(client)), seeds, "cluster")
        } else {
            let client =
                ::redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(connect_timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(500));
            let manager = ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| format!("redis.url: {e}"))?;
            let sub = pubsub_client(&cfg.url).map_err(|e| format!("redis.url: {e}"))?;
            (Target::Standalone(manager), vec![sub], "standalone")
        };
        let inner = Arc::new(Inner {
            settings: Settings {
                timeout,
                admin_timeout: (timeout * 10).max(Duration::from_secs(2)),
                prefix: cfg.key_prefix.clone(),
                max_object_bytes: cfg.max_object_bytes.0,
                max_variants: cfg.max_variants.max(1),
                mode,
            },
            conn: OnceLock::new(),
            breaker: Breaker::new(cfg.retry_after.get()),
            pubsub_targets,
        });
        tokio::spawn(connect(Arc::downgrade(&inner), target, connect_timeout));
        Ok(L2 { inner })
    }

    /// Runs one command for another subsystem (the job queue), under
    /// `deadline` and the same breaker as the cache's calls. The caller
    /// builds keys with [`key`](Self::key) and keeps every command to one
    /// key (or one hash slot), so it works on Redis Cluster.
    pub async fn command<T: ::redis::FromRedisValue + Send + 'static>(
        &self,
        c: &::redis::Cmd,
        deadline: Duration,
    ) -> Result<T, L2Error> {
        let c = c.clone();
        self.call(deadline, |conn| async move { conn.query(&c).await })
            .await
    }

    /// Runs a Lua script (EVALSHA, EVAL on NOSCRIPT) on `keys`, which must
    /// share one hash slot, under `deadline` and the breaker.
    pub async fn script<T: ::redis::FromRedisValue + Send + 'static>(
        &self,
        script: &::redis::Script,
        keys: &[String],
        args: &[Vec<u8>],
        deadline: Duration,
    ) -> Result<T, L2Error> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(a.as_slice());
        }
        self.call(deadline, |conn| async move {
            match conn {
                Conn::Standalone(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        })
        .await
    }

    /// `{redis.key_prefix}:{suffix}`: the namespace of this deployment.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.settings.prefix)
    }

    /// The current state, for health reporting.
    pub fn health(&self) -> L2Health {
        let i = &self.inner;
        let state = if i.conn.get().is_none() {
            "connecting"
        } else if i.breaker.degraded() {
            "degraded"
        } else {
            "up"
        };
        L2Health {
            state,
            last_error: i.breaker.last_error(),
            mode: i.settings.mode,
        }
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
        let timeout = self.inner.settings.timeout;
        let ekey = self.entry_key(key);
        let plain = VaryKey::default().digest();
        let c = cmd("HMGET")
            .arg(&ekey)
            .arg(index::FIELD)
            .arg(index::value_field(plain))
            .clone();
        let (idx, plain_value): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .call(timeout, |conn| async move { conn.query(&c).await })
            .await?;
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
                self.call(timeout, |conn| async move { conn.query(&c).await })
                    .await?
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
                    let this = self.clone();
                    let c = cmd("HDEL")
                        .arg(&ekey)
                        .arg(index::value_field(digest))
                        .clone();
                    tokio::spawn(async move {
                        let _ = this
                            .call(this.inner.settings.timeout, |conn| async move {
                                conn.query::<Value>(&c).await
                            })
                            .await;
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
        let s = &self.inner.settings;
        if retention.is_zero() || entry.body.len() as u64 > s.max_object_bytes {
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
        let args = index::put_args(&entry.vary, value, s.max_variants, ttl_ms);
        self.script::<Value>(&index::PUT, std::slice::from_ref(&ekey), &args, s.timeout)
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
        self.call(s.timeout, |conn| async move { conn.groups(groups).await })
            .await
            .map(drop)
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
        let replies = self
            .call(self.inner.settings.admin_timeout, |conn| async move {
                conn.groups(groups).await
            })
            .await?;
        Ok(replies.iter().flatten().map(int).sum())
    }

    /// The primary key with this URL hash, if one was stored and not expired.
    pub async fn key_for_hash(&self, url_hash: &str) -> Result<Option<String>, L2Error> {
        let c = cmd("GET").arg(self.hash_key(url_hash)).clone();
        self.call(self.inner.settings.admin_timeout, |conn| async move {
            conn.query(&c).await
        })
        .await
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
        let replies = self
            .call(self.inner.settings.admin_timeout, |conn| async move {
                conn.groups(groups).await
            })
            .await?;
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
        let deadline = self.inner.settings.admin_timeout;
        let mut softened = 0;
        for key in keys {
            let ekey = self.entry_key(key);
            let c = cmd("HGETALL").arg(&ekey).clone();
            let fields: Vec<(Vec<u8>, Vec<u8>)> = self
                .call(deadline, |conn| async move { conn.query(&c).await })
                .await?;
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
            self.call(
                deadline,
                |conn| async move { conn.query::<Value>(&hset).await },
            )
            .await?;
            softened += n;
        }
        Ok(softened)
    }

    /// Broadcasts an invalidation to every subscribed instance (this one
    /// included).
    pub async fn publish(&self, msg: &InvalidationMsg) -> Result<(), L2Error> {
        let json = serde_json::to_vec(msg).map_err(|e| L2Error::Unavailable(e.to_string()))?;
        let c = cmd("PUBLISH").arg(self.channel()).arg(json).clone();
        self.call(self.inner.settings.admin_timeout, |conn| async move {
            conn.query::<Value>(&c).await
        })
        .await
        .map(drop)
    }

    /// Subscribes to the invalidation channel on a dedicated connection with
    /// its own reconnect loop (exponential backoff, capped at 1 s). Emits
    /// [`L2Event::Resynced`] after every successful re-subscribe that
    /// followed a disconnect (not after the first subscribe), so the caller
    /// can flush its L1. The task ends when the receiver is dropped.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<L2Event> {
        pubsub::spawn(
            self.inner.pubsub_targets.clone(),
            self.channel(),
            self.inner.settings.admin_timeout,
        )
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}:e:{key}", self.inner.settings.prefix)
    }

    fn hash_key(&self, url_hash: &str) -> String {
        format!("{}:h:{url_hash}", self.inner.settings.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.inner.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.inner.settings.prefix)
    }

    /// Runs `f` on the connection under `deadline`, through the breaker.
    async fn call<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, L2Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let i = &self.inner;
        let conn = i
            .conn
            .get()
            .ok_or_else(|| L2Error::Unavailable("connecting".into()))?
            .clone();
        if !i.breaker.admit() {
            return Err(L2Error::Skipped);
        }
        match tokio::time::timeout(deadline, f(conn)).await {
            Ok(Ok(v)) => {
                i.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                if is_outage(&e) {
                    i.breaker.failure(e.to_string());
                } else {
                    // Redis answered: it is reachable, only this call failed.
                    i.breaker.success();
                }
                Err(L2Error::Unavailable(e.to_string()))
            }
            Err(_) => {
                i.breaker.failure("timed out".into());
                Err(L2Error::Timeout)
            }
        }
    }

    /// SCANs `pattern` (on every master in a cluster) and returns the primary
    /// keys that satisfy `pred`, sorted.
    async fn scan(
        &self,
        pattern: &str,
        pred: impl Fn(&str) -> bool + Send,
    ) -> Result<Vec<String>, L2Error> {
        let deadline = self.inner.settings.admin_timeout;
        let strip = self.entry_key("");
        // `None` routes to the one standalone server.
        let nodes: Vec<Option<(String, u16)>> = if self.inner.settings.mode == "cluster" {
            self.call(deadline, |conn| async move { masters(&conn).await })
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let c = cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .clone();
                let node = node.clone();
                let (next, batch): (u64, Vec<Vec<u8>>) = self
                    .call(deadline, |conn| async move {
                        match (&conn, node) {
                            (Conn::Cluster(cc), Some((host, port))) => {
                                let routing =
                                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                        host,
                                        port,
                                    });
                                let v = cc.clone().route_command(c, routing).await?;
                                Ok(::redis::from_redis_value(v)?)
                            }
                            _ => conn.query(&c).await,
                        }
                    })
                    .await?;
                for raw in batch {
                    // Keys we wrote are UTF-8; anything else is foreign.
                    if let Ok(k) = String::from_utf8(raw)
                        && let Some(k) = k.strip_prefix(&strip)
                        && pred(k)
                    {
                        keys.push(k.to_string());
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
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

/// Escapes the glob metacharacters of Redis MATCH patterns.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A cluster node as a URL (the config lists `host:port`).
fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_string()
    } else {
        format!("redis://{node}")
    }
}

/// A client for the subscription connection: RESP3, so that messages and
/// disconnects arrive as pushes on a Tokio channel.
fn pubsub_client(url: &str) -> RedisResult<::redis::Client> {
    use ::redis::IntoConnectionInfo;
    let info = node_url(url).as_str().into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(::redis::ProtocolVersion::RESP3);
    ::redis::Client::open(info.set_redis_settings(settings))
}

/// The masters of a cluster, from `CLUSTER SLOTS` (each slot range's first
/// node is its master).
async fn masters(conn: &Conn) -> RedisResult<Vec<(String, u16)>> {
    let slots: Vec<Value> = conn.query(&cmd("CLUSTER").arg("SLOTS").clone()).await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in slots {
        let Value::Array(items) = range else { continue };
        let Some(Value::Array(master)) = items.get(2) else {
            continue;
        };
        let host: Option<String> = master
            .first()
            .and_then(|v| ::redis::from_redis_value_ref(v).ok());
        let port: Option<u16> = master
            .get(1)
            .and_then(|v| ::redis::from_redis_value_ref(v).ok());
        if let (Some(host), Some(port)) = (host, port)
            && !out.iter().any(|(h, p)| *h == host && *p == port)
        {
            out.push((host, port));
        }
    }
    Ok(out)
}

/// Connects in the background until it succeeds, then publishes the
/// connection; from then on redis-rs reconnects by itself. Ends early when
/// the L2 is dropped.
async fn connect(inner: Weak<Inner>, target: Target, attempt_timeout: Duration) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let result = match &target {
            Target::Standalone(m) => {
                let mut m = m.clone();
                let ping = cmd("PING");
                match tokio::time::timeout(attempt_timeout, ping.query_async::<Value>(&mut m)).await
                {
                    Ok(Ok(_)) => Ok(Conn::Standalone(m)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("connect timed out".to_string()),
                }
            }
            Target::Cluster(client) => {
                match tokio::time::timeout(attempt_timeout, client.get_async_connection()).await {
                    Ok(Ok(c)) => Ok(Conn::Cluster(c)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("connect timed out".to_string()),
                }
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match result {
            Ok(conn) => {
                tracing::info!(mode = inner.settings.mode, "redis L2 connected");
                let _ = inner.conn.set(conn);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis L2 not reachable yet");
                inner.breaker.set_last_error(e);
            }
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
