//! The [`Redis`] handle: connecting in the background, and every call under
//! a deadline and through the breaker.

use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{Cmd, FromRedisValue, RedisResult, Script, Value, cmd};
use perfgate_config::RedisConfig;
use tokio::sync::mpsc;

use crate::Error;
use crate::conn::{Breaker, Conn, MAX_BACKOFF, MIN_BACKOFF, is_outage};
use crate::pubsub::{self, Push};

/// The connection's state, for the admin health endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `"up"`, `"degraded"` (the last call failed) or `"connecting"` (never
    /// connected yet).
    pub state: &'static str,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
    /// `"standalone"` or `"cluster"`.
    pub mode: &'static str,
}

/// Fixed settings derived from the configuration.
struct Settings {
    timeout: Duration,
    admin_timeout: Duration,
    prefix: String,
    mode: &'static str,
}

struct Inner {
    settings: Settings,
    /// Set once by the background connect task.
    conn: OnceLock<Conn>,
    breaker: Breaker,
    /// Where subscriptions connect (the server, or each cluster seed).
    pubsub_targets: Vec<::redis::Client>,
}

/// Handle to Redis; cheap to clone (clones share the connection, the
/// breaker and the health).
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.inner.settings.prefix)
            .field("health", &self.health())
            .finish()
    }
}

/// SCAN batch size: large enough for few round trips, small enough that
/// one SCAN never blocks Redis noticeably.
const SCAN_COUNT: u64 = 1000;

/// What the background task connects: a lazy manager, or the cluster client
/// (boxed: it is large and only used once).
enum Target {
    Standalone(ConnectionManager),
    Cluster(Box<ClusterClient>),
}

impl Redis {
    /// Validates the config and starts connecting in the background; never
    /// blocks on Redis. Err only for an invalid URL/node list, or when called
    /// outside a Tokio runtime.
    pub fn start(cfg: &RedisConfig) -> Result<Redis, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("Redis must be started inside a Tokio runtime".into());
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
                mode,
            },
            conn: OnceLock::new(),
            breaker: Breaker::new(cfg.retry_after.get()),
            pubsub_targets,
        });
        tokio::spawn(connect(Arc::downgrade(&inner), target, connect_timeout));
        Ok(Redis { inner })
    }

    /// The request-path deadline (`redis.timeout`).
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }

    /// The admin-path deadline: ten times `redis.timeout`, at least two
    /// seconds.
    pub fn admin_timeout(&self) -> Duration {
        self.inner.settings.admin_timeout
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.settings.mode == "cluster"
    }

    /// `redis.key_prefix`.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.settings.prefix
    }

    /// `{redis.key_prefix}:{suffix}`: the namespace of this deployment.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.settings.prefix)
    }

    /// The current state, for health reporting.
    pub fn health(&self) -> Health {
        let i = &self.inner;
        let state = if i.conn.get().is_none() {
            "connecting"
        } else if i.breaker.degraded() {
            "degraded"
        } else {
            "up"
        };
        Health {
            state,
            last_error: i.breaker.last_error(),
            mode: i.settings.mode,
        }
    }

    /// One `PING` round trip under `deadline` and the breaker (the
    /// monitoring API): how long the answer took.
    pub async fn ping(&self, deadline: Duration) -> Result<Duration, Error> {
        let t0 = std::time::Instant::now();
        let _: String = self.command(&cmd("PING"), deadline).await?;
        Ok(t0.elapsed())
    }

    /// Runs one command under `deadline` and the breaker. The caller keeps
    /// it to one key (or one hash slot), so it works on Redis Cluster.
    pub async fn command<T: FromRedisValue + Send + 'static>(
        &self,
        c: &Cmd,
        deadline: Duration,
    ) -> Result<T, Error> {
        let c = c.clone();
        self.call(deadline, |conn| async move { conn.query(&c).await })
            .await
    }

    /// Runs a Lua script (EVALSHA, EVAL on NOSCRIPT) on `keys`, which must
    /// share one hash slot, under `deadline` and the breaker.
    pub async fn script<T: FromRedisValue + Send + 'static>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
        deadline: Duration,
    ) -> Result<T, Error> {
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

    /// Runs groups of commands, each group touching one key, and returns the
    /// replies per group: one pipeline on a standalone server, one pipeline
    /// per group (sent concurrently) on a cluster. Under one `deadline`.
    pub async fn groups(
        &self,
        groups: Vec<Vec<Cmd>>,
        deadline: Duration,
    ) -> Result<Vec<Vec<Value>>, Error> {
        self.call(deadline, |conn| async move { conn.groups(groups).await })
            .await
    }

    /// SCANs for keys matching `pattern` (a Redis glob; see
    /// [`glob_escape`]) on the server, or on every master of a cluster, and
    /// hands each key found to `each` (a key may come twice). Each round
    /// trip is under `deadline`.
    pub async fn scan(
        &self,
        pattern: &str,
        deadline: Duration,
        mut each: impl FnMut(Vec<u8>) + Send,
    ) -> Result<(), Error> {
        // `None` routes to the one standalone server.
        let nodes: Vec<Option<(String, u16)>> = if self.is_cluster() {
            self.call(deadline, |conn| async move { masters(&conn).await })
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
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
                batch.into_iter().for_each(&mut each);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Subscribes to `channel` on a dedicated connection with its own
    /// reconnect loop (exponential backoff, capped at 1 s). `map` turns each
    /// message, and [`Push::Resynced`] after every successful re-subscribe
    /// that followed a disconnect (not after the first subscribe), into the
    /// caller's events; `None` drops it. The task ends when the receiver is
    /// dropped.
    pub fn subscribe<E: Send + 'static>(
        &self,
        channel: String,
        map: impl Fn(Push<'_>) -> Option<E> + Send + Sync + 'static,
    ) -> mpsc::Receiver<E> {
        pubsub::spawn(
            self.inner.pubsub_targets.clone(),
            channel,
            self.inner.settings.admin_timeout,
            map,
        )
    }

    /// Runs `f` on the connection under `deadline`, through the breaker.
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let i = &self.inner;
        let conn = i
            .conn
            .get()
            .ok_or_else(|| Error::Unavailable("connecting".into()))?
            .clone();
        if !i.breaker.admit() {
            return Err(Error::Skipped);
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
                Err(Error::Unavailable(e.to_string()))
            }
            Err(_) => {
                i.breaker.failure("timed out".into());
                Err(Error::Timeout)
            }
        }
    }
}

/// Escapes the glob metacharacters of Redis MATCH patterns.
pub fn glob_escape(s: &str) -> String {
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
/// every handle is dropped.
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
                tracing::info!(mode = inner.settings.mode, "redis connected");
                let _ = inner.conn.set(conn);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis not reachable yet");
                inner.breaker.set_last_error(e);
            }
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
