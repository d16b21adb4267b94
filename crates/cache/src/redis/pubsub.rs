//! The invalidation subscription: a dedicated connection with its own
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

use super::{InvalidationMsg, L2Event, MAX_BACKOFF, MIN_BACKOFF};

/// Events buffered for a slow consumer; beyond it the reader waits.
const CAPACITY: usize = 1024;

/// How often an idle subscription checks its connection, so a silently
/// dead one (no FIN, e.g. a network partition) is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);

/// Starts the subscription task and returns its events.
pub(super) fn spawn(
    targets: Vec<::redis::Client>,
    channel: String,
    deadline: Duration,
) -> mpsc::Receiver<L2Event> {
    let (tx, rx) = mpsc::channel(CAPACITY);
    tokio::spawn(run(targets, channel, deadline, tx));
    rx
}

async fn run(
    targets: Vec<::redis::Client>,
    channel: String,
    deadline: Duration,
    tx: mpsc::Sender<L2Event>,
) {
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
                        "invalidation channel re-subscribed; messages may have been missed"
                    );
                    if tx.send(L2Event::Resynced).await.is_err() {
                        return;
                    }
                }
                subscribed_before = true;
                if !listen(conn, pushes, deadline, &tx).await {
                    return;
                }
                tracing::warn!("invalidation channel disconnected; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "invalidation channel: subscribe failed"),
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
async fn listen(
    mut conn: MultiplexedConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    deadline: Duration,
    tx: &mpsc::Sender<L2Event>,
) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return true };
                match push.kind {
                    PushKind::Disconnection => return true,
                    PushKind::Message => {
                        if let Some(event) = Msg::from_push_info(push).and_then(|m| parse(m.get_payload_bytes()))
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
