//! The change subscription: a background task on a dedicated pub/sub
//! connection that turns published records into [`StoreEvent::Changed`].
//!
//! When the link drops it reconnects with a capped backoff (in a Cluster, to
//! the next seed node: classic pub/sub reaches every node) and then sends
//! [`StoreEvent::Resync`], because changes published meanwhile are lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Client, Msg, RedisError, Value};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::{Shared, is_outage};
use crate::store::{StoreError, StoreEvent, StoredRecord};

/// First delay between reconnection attempts; doubles up to the cap.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest delay between reconnection attempts, which bounds how long a
/// replica stays deaf after Redis returns.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether the last command succeeded and the subscription is connected.
#[derive(Debug)]
pub(super) struct Health {
    commands: AtomicBool,
    link: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            commands: AtomicBool::new(true),
            link: AtomicBool::new(false),
        }
    }
}

impl Health {
    pub(super) fn set_commands(&self, ok: bool) {
        self.commands.store(ok, Ordering::Relaxed);
    }

    fn set_link(&self, up: bool) {
        self.link.store(up, Ordering::Relaxed);
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.commands.load(Ordering::Relaxed) && self.link.load(Ordering::Relaxed)
    }
}

/// Stops the subscription task when the store is dropped.
pub(super) struct SubscriberGuard(AbortHandle);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live subscription.
struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Where the subscription may be made.
pub(in crate::store) enum Nodes {
    /// These servers, tried in turn: the one server, or a Cluster's seeds
    /// (a change published on one node reaches every node's subscribers).
    Fixed(Vec<Client>),
    /// The master the Sentinels name at each attempt.
    Sentinel(Arc<super::conn::SentinelConn>),
}

impl Nodes {
    async fn clients(&self) -> Result<Vec<Client>, RedisError> {
        match self {
            Self::Fixed(clients) => Ok(clients.clone()),
            Self::Sentinel(sentinel) => Ok(vec![sentinel.master_client().await?]),
        }
    }
}

/// Subscribes once (so `connect` fails when Redis is down and no change
/// written after it returns is missed), then keeps the subscription alive in
/// a background task.
pub(super) async fn start(
    shared: Arc<Shared>,
    nodes: Nodes,
    channel: String,
) -> Result<SubscriberGuard, StoreError> {
    let timeout = shared.options.command_timeout;
    let (index, link) = match subscribe_any(&nodes, 0, &channel, timeout).await {
        Ok(found) => found,
        Err(e) if is_outage(&e) => return Err(StoreError::Unavailable(e.to_string())),
        Err(e) => return Err(StoreError::Redis(e)),
    };
    shared.health.set_link(true);
    let task = tokio::spawn(run(shared, nodes, channel, index, link));
    Ok(SubscriberGuard(task.abort_handle()))
}

async fn run(shared: Arc<Shared>, nodes: Nodes, channel: String, mut index: usize, mut link: Link) {
    let timeout = shared.options.command_timeout;
    loop {
        pump(&shared, &mut link).await;
        shared.health.set_link(false);
        warn!(channel = %channel, "redis change subscription lost, reconnecting");
        let mut backoff = BACKOFF_MIN;
        // Start with the next seed, so a dead Cluster node is skipped.
        (index, link) = loop {
            match subscribe_any(&nodes, index + 1, &channel, timeout).await {
                Ok(found) => break found,
                Err(e) => {
                    debug!(error = %e, "redis change subscription attempt failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        shared.health.set_link(true);
        shared.check_commands().await;
        info!(channel = %channel, "redis change subscription restored, resyncing");
        // No receivers is fine: nobody is watching yet.
        let _ = shared.events.send(StoreEvent::Resync);
    }
}

/// Forwards messages until the link is lost: the stream ends (the server
/// closed the connection) or a keepalive PING goes unanswered.
async fn pump(shared: &Shared, link: &mut Link) {
    let mut keepalive = tokio::time::interval(shared.options.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = link.stream.next() => match msg {
                Some(msg) => forward(shared, &msg),
                None => return,
            },
            _ = keepalive.tick() => {
                let timeout = shared.options.command_timeout;
                let ping = tokio::time::timeout(timeout, link.sink.ping::<Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
                shared.check_commands().await;
            }
        }
    }
}

fn forward(shared: &Shared, msg: &Msg) {
    match serde_json::from_slice::<StoredRecord>(msg.get_payload_bytes()) {
        Ok(record) => {
            // No receivers is fine: nobody is watching yet.
            let _ = shared.events.send(StoreEvent::Changed(record));
        }
        Err(e) => warn!(
            channel = %msg.get_channel_name(),
            error = %e,
            "ignoring an unreadable change event"
        ),
    }
}

/// Tries each client once, starting at `first` (modulo their number), and
/// returns the index of the one that answered with its link.
async fn subscribe_any(
    nodes: &Nodes,
    first: usize,
    channel: &str,
    timeout: Duration,
) -> Result<(usize, Link), RedisError> {
    let clients = nodes.clients().await?;
    let mut last_error = None;
    for offset in 0..clients.len() {
        let index = (first + offset) % clients.len();
        match subscribe(&clients[index], channel, timeout).await {
            Ok(link) => return Ok((index, link)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| RedisError::from((redis::ErrorKind::Client, "no redis URL"))))
}

async fn subscribe(client: &Client, channel: &str, timeout: Duration) -> Result<Link, RedisError> {
    let connect = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok(Link { sink, stream })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis subscribe timed out",
            )))
        })
}
