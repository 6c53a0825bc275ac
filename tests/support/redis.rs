//! Real `redis-server` processes for tests: a standalone server and a
//! 3-master Cluster, each on free 127.0.0.1 ports with its own temporary
//! directory, killed on `Drop`.
//!
//! The binaries default to `redis-server` and `redis-cli` on `PATH`; set
//! `WAGATE_TEST_REDIS_SERVER` / `WAGATE_TEST_REDIS_CLI` to use others.
//! Helpers here block (they talk to Redis synchronously): they are meant for
//! test set-up and assertions, not for code under test.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// How long a server may take to answer PING, or a Cluster to reach
/// `cluster_state:ok`.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// The default Redis port: a shared server may listen there, never use it.
const SHARED_PORT: u16 = 6379;

fn server_binary() -> OsString {
    std::env::var_os("WAGATE_TEST_REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
}

fn cli_binary() -> OsString {
    std::env::var_os("WAGATE_TEST_REDIS_CLI").unwrap_or_else(|| "redis-cli".into())
}

/// A free 127.0.0.1 port; with `bus`, port + 10000 (the Cluster bus) is free
/// too. Free when checked: another process may still take it, which
/// [`RedisServer`] handles by retrying on a new port.
fn free_port(bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if port == SHARED_PORT || port == SHARED_PORT + 10000 {
            continue;
        }
        if !bus {
            return port;
        }
        let Some(bus_port) = port.checked_add(10000) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus_port)).is_ok() {
            return port;
        }
    }
}

/// A `redis-server` child process. Killed (SIGKILL) on `Drop`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    extra_args: Vec<OsString>,
}

impl RedisServer {
    /// Starts a standalone server with no persistence on a free port and
    /// waits until it answers PING. Panics, with the server log, if it does
    /// not within 10 seconds.
    pub fn start() -> Self {
        Self::start_with_args(false, |_| Vec::new())
    }

    /// Starts a server with extra arguments, computed from its directory.
    /// `cluster_bus` picks a port whose port + 10000 is free as well.
    pub fn start_with_args(cluster_bus: bool, extra: impl Fn(&Path) -> Vec<OsString>) -> Self {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let extra_args = extra(dir.path());
            let mut server = Self {
                child: None,
                port: free_port(cluster_bus),
                dir,
                extra_args,
            };
            // Another process may grab the port between the check and the
            // bind; the server then exits, and a new port is tried.
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) if attempts < 3 => eprintln!("redis-server did not start, retrying: {e}"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (log, cluster config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Kills the server with SIGKILL and waits for the process to exit, as
    /// a crash or a network cut would look to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (empty: no
    /// persistence), and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// A blocking connection for set-up and assertions.
    pub fn connection(&self) -> redis::Connection {
        connect(&self.url()).unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = Command::new(server_binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", server_binary()))?;
        self.child = Some(child);
        let url = self.url();
        let mut last_ping = None;
        let outcome = super::poll_until(START_DEADLINE, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let stderr = child.stderr.take().map(std::io::read_to_string);
                return Some(Err(format!("exited with {status}; stderr: {stderr:?}")));
            }
            let ping = connect(&url).and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            let answered = ping.is_ok();
            last_ping = Some(ping);
            answered.then_some(Ok(()))
        });
        let why = match outcome {
            Some(Ok(())) => return Ok(()),
            Some(Err(exited)) => {
                self.child = None;
                exited
            }
            None => {
                self.kill();
                format!("did not answer PING within {START_DEADLINE:?}: {last_ping:?}")
            }
        };
        Err(format!(
            "redis-server on port {} {why}\nlog:\n{}",
            self.port,
            self.log()
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let conn = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

/// A Redis Cluster of masters without replicas. Every node is killed on
/// `Drop`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with_args(true, |dir| {
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        dir.join("nodes.conf").into_os_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ]
                })
            })
            .collect();
        let cluster = Self { nodes };
        let output = Command::new(cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port())),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cli_binary()));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    fn wait_until_ok(&self) {
        for node in &self.nodes {
            let mut info = String::new();
            let ok = super::poll_until(START_DEADLINE, || {
                info = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.connection())
                    .unwrap_or_default();
                info.contains("cluster_state:ok").then_some(())
            });
            assert!(
                ok.is_some(),
                "cluster node {} not ok within {START_DEADLINE:?}:\n{info}\nlog:\n{}",
                node.port(),
                node.log()
            );
        }
    }

    /// The nodes' URLs, usable as Cluster seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].connection())
            .expect("CLUSTER KEYSLOT")
    }

    /// The index in [`Self::nodes`] of the master that serves `key`.
    pub fn node_of(&self, key: &str) -> usize {
        let slot = i64::from(self.keyslot(key));
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.nodes[0].connection())
            .expect("CLUSTER SLOTS");
        for range in ranges {
            let (start, end, port): (i64, i64, Vec<redis::Value>) = match range {
                redis::Value::Array(items) if items.len() >= 3 => (
                    redis::from_redis_value_ref(&items[0]).expect("slot start"),
                    redis::from_redis_value_ref(&items[1]).expect("slot end"),
                    redis::from_redis_value_ref(&items[2]).expect("master"),
                ),
                other => panic!("unexpected CLUSTER SLOTS entry {other:?}"),
            };
            if (start..=end).contains(&slot) {
                let port: u16 = redis::from_redis_value_ref(&port[1]).expect("master port");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("slot owner is one of our nodes");
            }
        }
        panic!("no master serves slot {slot}")
    }
}

/// Calls per command since the server started, from `INFO commandstats`,
/// keyed by lowercase command name (`get`, `evalsha`, `cluster|slots`).
/// Proves which commands a code path sends, or that it sends none. Compare
/// the commands of interest: a connected `RedisStore` also sends a `ping`
/// every `RedisOptions::keepalive`.
pub fn commandstats(url: &str) -> HashMap<String, u64> {
    let mut conn = connect(url).unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A `redis-sentinel` process watching one master as `mymaster`, on a free
/// 127.0.0.1 port with its own directory and config file (Sentinel rewrites
/// it). Killed on `Drop`.
pub struct RedisSentinel {
    child: Option<Child>,
    port: u16,
    /// The Sentinel's own ACL user and password, if it has one.
    auth: Option<(String, String)>,
    _dir: TempDir,
}

/// The name the test Sentinels give the master.
pub const SENTINEL_MASTER: &str = "mymaster";

impl RedisSentinel {
    /// Starts a Sentinel watching `master_port`, quorum 1, declaring the
    /// master down after 1 s, and waits until it names the master.
    pub fn start(master_port: u16) -> Self {
        Self::start_with(master_port, None, "")
    }

    /// [`start`](Self::start), the Sentinel itself taking clients only as
    /// the ACL user `auth` (name, password; its default user is off), with
    /// `extra` lines appended to its sentinel.conf.
    pub fn start_with(master_port: u16, auth: Option<(&str, &str)>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let port = free_port(false);
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "bind 127.0.0.1\nport {port}\ndir {}\nlogfile {}\n\
             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 10000\n",
            dir.path().display(),
            dir.path().join("sentinel.log").display(),
        );
        if let Some((user, password)) = auth {
            text.push_str(&format!(
                "user {user} on >{password} ~* &* +@all\nuser default off\n"
            ));
        }
        text.push_str(extra);
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let binary = std::env::var_os("WAGATE_TEST_REDIS_SENTINEL")
            .unwrap_or_else(|| "redis-sentinel".into());
        let child = Command::new(&binary)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn {binary:?}: {e} (scripts/test.sh installs redis-sentinel)")
            });
        let sentinel = Self {
            child: Some(child),
            port,
            auth: auth.map(|(user, password)| (user.to_owned(), password.to_owned())),
            _dir: dir,
        };
        assert!(
            super::poll_until(START_DEADLINE, || sentinel.master_port()).is_some(),
            "redis-sentinel on {port} did not start"
        );
        sentinel
    }

    /// `redis+sentinel://127.0.0.1:<port>/mymaster`
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{SENTINEL_MASTER}", self.port)
    }

    /// A plain connection to the Sentinel, as its user if it has one.
    fn connection(&self) -> Option<redis::Connection> {
        let auth = self
            .auth
            .as_ref()
            .map_or_else(String::new, |(user, password)| {
                format!("{user}:{password}@")
            });
        connect(&format!("redis://{auth}127.0.0.1:{}/", self.port)).ok()
    }

    /// The master's port as the Sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let mut conn = self.connection()?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(SENTINEL_MASTER)
            .query(&mut conn)
            .ok()?;
        addr.map(|(_, port)| port)
    }

    /// How many replicas of the master the Sentinel knows.
    pub fn replicas(&self) -> usize {
        let Some(mut conn) = self.connection() else {
            return 0;
        };
        redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(SENTINEL_MASTER)
            .query::<Vec<redis::Value>>(&mut conn)
            .map_or(0, |replicas| replicas.len())
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The pid of a running server, for tests that kill it as a crash would.
impl RedisServer {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}
