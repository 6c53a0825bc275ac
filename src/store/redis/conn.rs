//! One command connection over any deployment: a standalone server
//! (`ConnectionManager`, which reconnects by itself), a Cluster (which
//! follows the slot map by itself) or a master found through Redis Sentinel
//! (asked again after a failure, so a failover is followed). All are cheap
//! to clone and multiplexed.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::SentinelClient;
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// Keys per SCAN round trip: big enough that a resync takes few trips.
const SCAN_COUNT: usize = 1000;

#[derive(Clone)]
pub(super) enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// The master a group of Sentinels names, and the connection to it.
pub(super) struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    master: RwLock<ConnectionManager>,
    timeout: Duration,
}

impl SentinelConn {
    /// Connects to the master `sentinel` names.
    pub(super) async fn connect(
        sentinel: SentinelClient,
        timeout: Duration,
    ) -> RedisResult<Arc<Self>> {
        let sentinel = tokio::sync::Mutex::new(sentinel);
        let client = {
            let mut guard = sentinel.lock().await;
            guard.async_get_client().await?
        };
        let master = RwLock::new(manager(client, timeout).await?);
        Ok(Arc::new(Self {
            sentinel,
            master,
            timeout,
        }))
    }

    /// A client of the master the Sentinels name now.
    pub(super) async fn master_client(&self) -> RedisResult<Client> {
        let mut sentinel = self.sentinel.lock().await;
        tokio::time::timeout(self.timeout, sentinel.async_get_client())
            .await
            .unwrap_or_else(|_| Err(timed_out("asking the sentinels for the master")))
    }

    /// Asks the Sentinels again and connects to the master they name, for
    /// the commands after a failed one.
    async fn follow(&self) {
        let found = async { manager(self.master_client().await?, self.timeout).await };
        match found.await {
            Ok(manager) => {
                *self.master.write().unwrap_or_else(|e| e.into_inner()) = manager;
            }
            Err(e) => tracing::debug!(error = %e, "redis sentinel: master not found yet"),
        }
    }

    fn current(&self) -> ConnectionManager {
        self.master
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// A reconnecting connection to one server. Reconnection is quick and
/// bounded, so once Redis returns the next command finds it, and while it is
/// away each command fails within `timeout`.
async fn manager(client: Client, timeout: Duration) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

/// Whether a command's failure may mean the master moved: the connection is
/// gone, or the server became a replica (`READONLY`) after a failover.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.code() == Some("READONLY")
}

impl Conn {
    /// Connects to one server.
    pub(super) async fn standalone(client: Client, timeout: Duration) -> RedisResult<Self> {
        Ok(Self::Standalone(manager(client, timeout).await?))
    }

    /// Connects to a Cluster through its seed nodes.
    pub(super) async fn cluster(
        urls: &[String],
        timeout: Duration,
        tls: Option<&redis::TlsCertificates>,
    ) -> RedisResult<Self> {
        let mut builder = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        if let Some(certs) = tls {
            builder = builder.certs(certs.clone());
        }
        Ok(Self::Cluster(
            builder.build()?.get_async_connection().await?,
        ))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Every key matching `pattern`; in a Cluster, on every master.
    pub(super) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        match self {
            Self::Standalone(_) | Self::Sentinel(_) => {
                scan_node(pattern, |cmd| {
                    let mut conn = self.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .await
            }
            Self::Cluster(cluster) => {
                let mut keys = Vec::new();
                for slot in master_slots(cluster).await? {
                    // Routing by a slot the master owns keeps every SCAN
                    // round trip of one cursor on that master.
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        Route::new(slot, SlotAddr::Master),
                    ));
                    keys.extend(
                        scan_node(pattern, |cmd| {
                            let mut conn = cluster.clone();
                            let route = route.clone();
                            async move { conn.route_command(cmd, route).await }
                        })
                        .await?,
                    );
                }
                Ok(keys)
            }
        }
    }
}

/// Runs a SCAN loop to completion through `send`, which must send every
/// round trip to the same node.
async fn scan_node<F, Fut>(pattern: &str, send: F) -> RedisResult<Vec<String>>
where
    F: Fn(Cmd) -> Fut,
    Fut: std::future::Future<Output = RedisResult<Value>>,
{
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(send(cmd).await?)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// One slot per master, read from `CLUSTER SLOTS`:
/// `[[start, end, [host, port, id…], replicas…], …]`.
async fn master_slots(cluster: &ClusterConnection) -> RedisResult<Vec<u16>> {
    let mut conn = cluster.clone();
    let reply: Vec<Vec<Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let mut seen = HashSet::new();
    let mut slots = Vec::new();
    for range in reply {
        let (Some(start), Some(Value::Array(master))) = (range.first(), range.get(2)) else {
            return Err(unexpected("CLUSTER SLOTS entry"));
        };
        let start: u16 = redis::from_redis_value_ref(start)?;
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            return Err(unexpected("CLUSTER SLOTS master"));
        };
        let node: (String, u16) = (
            redis::from_redis_value_ref(host)?,
            redis::from_redis_value_ref(port)?,
        );
        if seen.insert(node) {
            slots.push(start);
        }
    }
    Ok(slots)
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_owned(),
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(sentinel) => Box::pin(async move {
                let mut conn = sentinel.current();
                let result = conn.req_packed_command(cmd).await;
                // Never retried here (the caller decides, and a transition is
                // checked against its version anyway): the next command goes
                // to the master the Sentinels name now.
                if let Err(e) = &result
                    && master_may_have_moved(e)
                {
                    sentinel.follow().await;
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(sentinel) => Box::pin(async move {
                let mut conn = sentinel.current();
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &result
                    && master_may_have_moved(e)
                {
                    sentinel.follow().await;
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(sentinel) => sentinel.current().get_db(),
        }
    }
}
