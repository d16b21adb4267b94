//! Subscriptions: a dedicated connection per channel with its own
//! reconnect loop.
//!
//! It is a RESP3 multiplexed connection whose pushes (messages, and the
//! `Disconnection` redis-rs injects when the socket closes) arrive on a
//! Tokio channel. That gives the same single-purpose connection as
//! `redis::aio::PubSub` while needing no `futures` `Stream` trait, and it
//! reports disconnects explicitly, which is what `Resynced` is built on.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Msg, PushInfo, PushKind, Value, cmd};
use tokio::sync::mpsc;

use crate::conn::{MAX_BACKOFF, MIN_BACKOFF};

/// What a subscription delivers to its `map` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push<'a> {
    /// The payload of one message on the channel.
    Message(&'a [u8]),
    /// (Re)subscribed after a gap: messages may have been missed.
    Resynced,
}

/// Events buffered for a slow consumer; beyond it the reader waits.
const CAPACITY: usize = 1024;

/// How often an idle subscription checks its connection, so a silently
/// dead one (no FIN, e.g. a network partition) is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);

/// Starts the subscription task and returns its events.
pub(crate) fn spawn<E, F>(
    targets: Vec<::redis::Client>,
    channel: String,
    deadline: Duration,
    map: F,
) -> mpsc::Receiver<E>
where
    E: Send + 'static,
    F: Fn(Push<'_>) -> Option<E> + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(CAPACITY);
    tokio::spawn(run(targets, channel, deadline, map, tx));
    rx
}

async fn run<E, F>(
    targets: Vec<::redis::Client>,
    channel: String,
    deadline: Duration,
    map: F,
    tx: mpsc::Sender<E>,
) where
    F: Fn(Push<'_>) -> Option<E>,
{
    let mut subscribed_before = false;
    let mut backoff = MIN_BACKOFF;
    // In a cluster any reachable seed will do: PUBLISH reaches every node.
    for target in targets.iter().cycle() {
        if tx.is_closed() {
            return;
        }
        match subscribe(target, &channel, deadline).await {
            Ok((conn, pushes)) => {
                backoff = MIN_BACKOFF;
                if subscribed_before {
                    tracing::info!(
                        %channel,
                        "redis channel re-subscribed; messages may have been missed"
                    );
                    if let Some(event) = map(Push::Resynced)
                        && tx.send(event).await.is_err()
                    {
                        return;
                    }
                }
                subscribed_before = true;
                if !listen(conn, pushes, deadline, &map, &tx).await {
                    return;
                }
                tracing::warn!(%channel, "redis channel disconnected; reconnecting");
            }
            Err(e) => tracing::debug!(%channel, error = %e, "redis channel: subscribe failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    target: &::redis::Client,
    channel: &str,
    deadline: Duration,
) -> Result<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>), String> {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(deadline))
        .set_response_timeout(Some(deadline))
        .set_push_sender(push_tx);
    let attempt = async {
        let mut conn = target
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.subscribe(channel).await?;
        Ok::<_, ::redis::RedisError>(conn)
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok(conn)) => Ok((conn, push_rx)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Forwards messages until the connection drops (false: the receiver is
/// gone and the task should end).
async fn listen<E, F>(
    mut conn: MultiplexedConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    deadline: Duration,
    map: &F,
    tx: &mpsc::Sender<E>,
) -> bool
where
    F: Fn(Push<'_>) -> Option<E>,
{
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return true };
                match push.kind {
                    PushKind::Disconnection => return true,
                    PushKind::Message => {
                        if let Some(event) = Msg::from_push_info(push).and_then(|m| map(Push::Message(m.get_payload_bytes())))
                            && tx.send(event).await.is_err()
                        {
                            return false;
                        }
                    }
                    // Subscribe confirmations and the like.
                    _ => {}
                }
            }
            _ = ping.tick() => {
                let alive = tokio::time::timeout(deadline, cmd("PING").query_async::<Value>(&mut conn)).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return true;
                }
            }
            _ = tx.closed() => return false,
        }
    }
}
