//! Redis as people run it: an ACL user with a password, TLS with a private
//! CA (and mutual TLS), and a master found through Redis Sentinel that fails
//! over, is reached over TLS, or sits behind Sentinels with a user of their
//! own. Real `redis-server` and `redis-sentinel` processes on free loopback
//! ports; certificates made by `openssl` for the test.

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::gateway::{Process, send_text, sim};
use support::redis::{RedisSentinel, RedisServer};
use support::store_contract::{record, write};
use wagate::config::{RedisUrl, Store};
use wagate::store::{BreakerStore, CasOutcome};

const ACL_PASSWORD: &str = "pw-ACL-7781";
const SENTINEL_USER: &str = "watcher";
const SENTINEL_PASSWORD: &str = "pw-SENTINEL-4417";
const DEADLINE: Duration = Duration::from_secs(20);

fn store_config(url: &str) -> Store {
    Store {
        redis_url: RedisUrl::new(url),
        ..Store::default()
    }
}

/// One write and its read back: the store really talks to that Redis.
async fn round_trip(store: &dyn BreakerStore, number: &str) {
    let r = record(number, number, 1, true, "{}");
    let outcome = store.compare_and_set(write(0, &r)).await.expect("write");
    assert_eq!(outcome, CasOutcome::Applied);
    assert_eq!(store.get(number, number).await.expect("read"), Some(r));
}

/// Waits until `server` holds a key matching `pattern`.
async fn wait_for_records(server: &RedisServer, pattern: &str, what: &str) {
    let mut conn = server.connection();
    support::wait_until(DEADLINE, what, || {
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        !keys.is_empty()
    })
    .await;
}

fn acl_server() -> RedisServer {
    RedisServer::start_with_args(false, |_| {
        [
            "--user",
            "wagate",
            "on",
            &format!(">{ACL_PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_connects_and_its_password_never_shows() {
    let redis = acl_server();
    let good = format!("redis://wagate:{ACL_PASSWORD}@127.0.0.1:{}/", redis.port());
    let store = wagate::store::open(&store_config(&good))
        .await
        .expect("open");
    round_trip(store.as_ref(), "1001").await;

    let bad = format!(
        "redis://wagate:{ACL_PASSWORD}-wrong@127.0.0.1:{}/",
        redis.port()
    );
    let error = wagate::store::open(&store_config(&bad))
        .await
        .err()
        .expect("a wrong password is refused")
        .to_string();
    assert!(!error.contains(ACL_PASSWORD), "{error}");
    assert!(error.contains("refused wagate's credentials"), "{error}");

    // The real gateway: check-config and its logs show the user, never the
    // password, and a refused password stops start-up saying so.
    let output = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["check-config", "--config", "/dev/null"])
        .env("WAGATE_STORE__REDIS_URL", &good)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        shown.contains("redis://wagate:<redacted>@127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains(ACL_PASSWORD), "{shown}");
    let output = Command::new(env!("CARGO_BIN_EXE_wagate"))
        .args(["serve", "--config", "/dev/null"])
        .env("WAGATE_STORE__REDIS_URL", &bad)
        .env("WAGATE_LISTEN__PROXY", "127.0.0.1:0")
        .env("WAGATE_LISTEN__ADMIN", "127.0.0.1:0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(!log.contains(ACL_PASSWORD), "{log}");
    assert!(
        log.to_lowercase().contains("pass") || log.contains("WRONGPASS"),
        "{log}"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in
/// `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e} (scripts/test.sh installs it)"));
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wagate test CA",
    ]);
    for (name, cn) in [("server", "127.0.0.1"), ("client", "wagate")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// A server with a plain port (for the helper's readiness check) and a TLS
/// port, returned with the TLS port and the certificates' folder.
fn tls_server(auth_clients: bool) -> (RedisServer, u16, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = certs.path().to_owned();
    let server = RedisServer::start_with_args(false, move |_| {
        let path = |name: &str| dir.join(name).into_os_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string().into(),
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            if auth_clients { "yes" } else { "no" }.into(),
        ]
    });
    (server, tls_port, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_carries_the_gateways_breakers() {
    let (redis, tls_port, certs) = tls_server(false);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let mut config = store_config(&url);
    config.tls_ca_file = certs.path().join("ca.crt");
    let store = wagate::store::open(&config).await.expect("open over TLS");
    round_trip(store.as_ref(), "1001").await;

    // Without the CA the server's certificate is not trusted: a clear error,
    // soon, not a hang.
    let untrusted = tokio::time::timeout(DEADLINE, wagate::store::open(&store_config(&url)))
        .await
        .expect("an untrusted server is refused within the deadline");
    let error = untrusted
        .err()
        .expect("an untrusted certificate is refused")
        .to_string();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("tls"),
        "{error}"
    );

    // The real gateway trips a number through TLS: the record is in Redis.
    let sim = sim().await;
    sim.sim.lock("200000000000001");
    let ca = certs.path().join("ca.crt");
    let gateway = Process::spawn(&[
        ("WAGATE_UPSTREAM__BASE_URL", &sim.base_url()),
        ("WAGATE_STORE__REDIS_URL", &url),
        ("WAGATE_STORE__TLS_CA_FILE", ca.to_str().unwrap()),
    ]);
    let response = send_text(&gateway.url(), "200000000000001").await;
    assert_eq!(response.status(), 403);
    wait_for_records(
        &redis,
        "wagate:{200000000000001}:rec:*",
        "the trip is in Redis",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let (_redis, tls_port, certs) = tls_server(true);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let mut config = store_config(&url);
    config.tls_ca_file = certs.path().join("ca.crt");
    let refused = tokio::time::timeout(DEADLINE, wagate::store::open(&config))
        .await
        .expect("answered within the deadline");
    assert!(
        refused.is_err(),
        "a server requiring a client certificate refuses none"
    );
    config.tls_cert_file = certs.path().join("client.crt");
    config.tls_key_file = certs.path().join("client.key");
    let store = wagate::store::open(&config)
        .await
        .expect("open with a client certificate");
    round_trip(store.as_ref(), "1002").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_is_followed_across_a_failover() {
    let mut master = RedisServer::start();
    let master_port = master.port();
    let replica = RedisServer::start_with_args(false, move |_| {
        vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string().into(),
        ]
    });
    let sentinel = RedisSentinel::start(master_port);
    support::wait_until(DEADLINE, "the sentinel knows the replica", || {
        sentinel.replicas() == 1
    })
    .await;

    let store = wagate::store::open(&store_config(&sentinel.url()))
        .await
        .expect("open");
    assert_eq!(store.kind(), "redis");
    round_trip(store.as_ref(), "1001").await;
    // Written on the master, the record reaches the replica.
    wait_for_records(&replica, "wagate:*:rec:*", "the replica has the record").await;

    // The master dies; the Sentinel promotes the replica.
    master.kill();
    support::wait_until(DEADLINE, "the sentinel names the replica", || {
        sentinel.master_port() == Some(replica.port())
    })
    .await;
    // The store follows without being reopened: a write fails while the
    // master is gone, then lands on the new master.
    let r = record("1001", "1001", 2, true, "{\"after\":\"failover\"}");
    support::wait_until_async(DEADLINE, "a write lands on the new master", || async {
        matches!(
            store.compare_and_set(write(1, &r)).await,
            Ok(CasOutcome::Applied)
        )
    })
    .await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg("wagate:{1001}:rec:1001")
        .arg("body")
        .query(&mut replica.connection())
        .unwrap();
    assert_eq!(stored.as_deref(), Some("{\"after\":\"failover\"}"));
}

/// Sentinels that take clients only as an ACL user of their own, in front
/// of a master with another user: without `store.sentinel_*` the store
/// cannot open and says why without a password; with them it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_user_of_their_own() {
    let master = acl_server();
    let sentinel =
        RedisSentinel::start_with(master.port(), Some((SENTINEL_USER, SENTINEL_PASSWORD)), "");
    let url = sentinel
        .url()
        .replace("sentinel://", &format!("sentinel://wagate:{ACL_PASSWORD}@"));

    let refused = wagate::store::open(&store_config(&url))
        .await
        .err()
        .expect("Sentinels that ask for a user refuse a store without one");
    let message = refused.to_string();
    assert!(!message.contains(ACL_PASSWORD), "{message}");
    assert!(message.contains("store.sentinel_password"), "{message}");

    let mut config = store_config(&url);
    config.sentinel_username = SENTINEL_USER.to_owned();
    config.sentinel_password = wagate::config::Secret::new(SENTINEL_PASSWORD);
    let printed = format!("{config:?}");
    assert!(!printed.contains(SENTINEL_PASSWORD), "{printed}");
    assert!(!printed.contains(ACL_PASSWORD), "{printed}");
    let store = wagate::store::open(&config)
        .await
        .expect("open with the Sentinels' user");
    round_trip(store.as_ref(), "1003").await;
}

/// A master reached over TLS through the Sentinels, which watch its TLS
/// port (over TLS themselves) and so name that port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_named_master_is_reached_over_tls() {
    let (_master, tls_port, certs) = tls_server(false);
    let path = |name: &str| certs.path().join(name).display().to_string();
    let sentinel = RedisSentinel::start_with(
        tls_port,
        None,
        &format!(
            "tls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
            path("server.crt"),
            path("server.key"),
            path("ca.crt"),
        ),
    );
    assert_eq!(sentinel.master_port(), Some(tls_port));
    let mut config = store_config(&sentinel.url());
    config.tls_ca_file = certs.path().join("ca.crt");
    let store = wagate::store::open(&config)
        .await
        .expect("open the Sentinel-named master over TLS");
    round_trip(store.as_ref(), "1004").await;

    // Without store.tls_ca_file the master is asked in plain text, which its
    // TLS port refuses.
    let untrusted = tokio::time::timeout(
        DEADLINE,
        wagate::store::open(&store_config(&sentinel.url())),
    )
    .await
    .expect("answered within the deadline");
    assert!(
        untrusted.is_err(),
        "a plain connection to a TLS port is refused"
    );
}
