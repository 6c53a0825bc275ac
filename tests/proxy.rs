//! The proxy core over real HTTP: the simulator in process on port 0, the
//! gateway in process (or as the real binary where logs, memory or signals
//! matter), and reqwest or raw TCP as the client.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::gateway::{InProcess, Process, http, metric, sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wagate::sim::SimHandle;

const NUMBER: &str = "200000000000001";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

async fn control(sim: &SimHandle, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = http()
        .request(method, format!("http://{}/_sim/{path}", sim.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "sim control {path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

fn send_body() -> Value {
    json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text", "text": {"body": "hello"}})
}

fn headers_without_date(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str() != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn json_send_returns_the_upstream_response_byte_for_byte() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let response = http()
        .post(format!("{}/v24.0/{NUMBER}/messages", gateway.url()))
        .bearer_auth("token")
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    let log = control(&sim, reqwest::Method::GET, "log", Value::Null).await;
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(
        last["response_body"].as_str().unwrap().as_bytes(),
        &body[..]
    );
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        sent["messages"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("wamid.")
    );
    assert_eq!(
        metric(
            gateway.admin,
            r#"wagate_requests_total{outcome="ok",route="send"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn every_error_fixture_passes_unchanged_and_is_counted() {
    let sim = sim().await;
    // Shadow mode: the first 131031 would otherwise open the breaker and
    // the gateway would answer the later sends itself.
    let gateway = InProcess::start(sim.addr, |c| c.server.gate = false).await;
    let cases = [
        ("error_131031.json", 403, 131031),
        ("error_368.json", 403, 368),
        ("error_131048.json", 400, 131048),
        ("error_130429.json", 400, 130429),
        ("error_130429.json", 429, 130429),
        ("error_131056.json", 400, 131056),
        ("error_131056.json", 429, 131056),
        ("error_190.json", 401, 190),
    ];
    for (file, status, code) in cases {
        let fixture = std::fs::read_to_string(format!("{FIXTURES}/{file}")).unwrap();
        let inject = json!({"code": code, "http_status": status, "times": 2, "body": fixture});
        control(
            &sim,
            reqwest::Method::POST,
            &format!("numbers/{NUMBER}/errors"),
            inject,
        )
        .await;
        let path = format!("/v24.0/{NUMBER}/messages");
        let direct = http()
            .post(format!("http://{}{path}", sim.addr))
            .json(&send_body())
            .send()
            .await
            .unwrap();
        let proxied = http()
            .post(format!("{}{path}", gateway.url()))
            .json(&send_body())
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status().as_u16(), status, "{file}");
        assert_eq!(
            headers_without_date(proxied.headers()),
            headers_without_date(direct.headers()),
            "{file}"
        );
        assert_eq!(direct.bytes().await.unwrap(), fixture.as_bytes(), "{file}");
        assert_eq!(proxied.bytes().await.unwrap(), fixture.as_bytes(), "{file}");
    }
    for (code, times) in [("131031", 1.0), ("130429", 2.0), ("190", 1.0)] {
        let series = format!(r#"wagate_graph_errors_total{{code="{code}",route="send"}}"#);
        assert_eq!(metric(gateway.admin, &series).await, times, "{code}");
    }
}

#[tokio::test]
async fn http2_clients_are_served() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/{NUMBER}/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_host_is_the_upstreams() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let response = http()
        .post(format!("{}/_sim/echo/headers?x=1", gateway.url()))
        .header("connection", "x-private")
        .header("x-private", "hop")
        .header("proxy-authorization", "Basic cHJveHk=")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .header("authorization", "Bearer kept-token")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("host"), Some(sim.addr.to_string().as_str()));
    assert_eq!(get("x-end-to-end"), Some("kept"));
    assert_eq!(get("authorization"), Some("Bearer kept-token"));
    for dropped in ["connection", "x-private", "proxy-authorization", "te"] {
        assert_eq!(get(dropped), None, "{dropped} was forwarded");
    }
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["body_len"], 7);
}

/// Sends raw bytes to the gateway and returns the raw response.
async fn raw(gateway: &InProcess, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("response within 10s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn absolute_uris_connect_and_odd_hosts_never_leave_the_upstream() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let sim_host = format!("\"host\",\"{}\"", sim.addr);

    let absolute = raw(
        &gateway,
        "GET http://169.254.169.254/_sim/echo/abs HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    assert!(absolute.contains(&sim_host), "{absolute}");
    assert!(
        absolute.contains("\"path\":\"/_sim/echo/abs\""),
        "{absolute}"
    );

    for host in [
        "127.0.0.1:6379",
        "localhost",
        "evil.invalid:443",
        "[::1]:22",
    ] {
        let odd = raw(
            &gateway,
            &format!("GET /_sim/echo/odd HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(odd.starts_with("HTTP/1.1 200"), "{host}: {odd}");
        assert!(odd.contains(&sim_host), "{host}: {odd}");
    }

    let connect = raw(
        &gateway,
        "CONNECT 127.0.0.1:6379 HTTP/1.1\r\nHost: 127.0.0.1:6379\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(connect.contains("\"type\":\"WagateError\""), "{connect}");
    let counts = control(&sim, reqwest::Method::GET, "requests", Value::Null).await;
    assert_eq!(counts, json!({}), "CONNECT reached the upstream");
}

async fn gateway_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "WagateError", "{body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
    assert!(
        body["error"]["fbtrace_id"]
            .as_str()
            .unwrap()
            .starts_with("wagate-")
    );
    body
}

#[tokio::test]
async fn upstream_down_is_a_502_in_metas_envelope() {
    // Bind, then close: nothing listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = InProcess::start(closed, |_| {}).await;
    let response = http()
        .post(format!("{}/v24.0/{NUMBER}/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap();
    let body = gateway_error(response, StatusCode::BAD_GATEWAY).await;
    assert_eq!(body["error"]["code"], 2);
    assert_eq!(
        metric(
            gateway.admin,
            r#"wagate_requests_total{outcome="bad_gateway",route="send"}"#
        )
        .await,
        1.0
    );
}

/// A send through `gateway` on `client`, whose keep-alive connection it
/// reuses.
async fn send_on(client: &reqwest::Client, gateway: &InProcess) -> reqwest::Response {
    client
        .post(format!("{}/v24.0/{NUMBER}/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_after_an_upstream_timeout_is_not_held_behind_it() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.upstream.timeout = Duration::from_millis(500)
    })
    .await;
    // One client, so both requests share one keep-alive connection to the
    // gateway, and with it the gateway's upstream connection.
    let client = http();
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 3000})).await;
    gateway_error(
        send_on(&client, &gateway).await,
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;

    // The upstream still owes the abandoned answer for 2.5 s. The next
    // request must not queue behind it (and time out too): the gateway
    // gives up the upstream connection the abandoned request was on.
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 0})).await;
    let response = send_on(&client, &gateway).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The upstream deadline holds for every request on a keep-alive
/// connection: a slow answer times out after fast ones, and again after a
/// timeout (which cost the connection its upstream connection).
#[tokio::test]
async fn the_upstream_deadline_holds_for_every_request_on_a_connection() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.upstream.timeout = Duration::from_millis(300)
    })
    .await;
    // One client: every request rides one keep-alive connection.
    let client = http();
    for round in 0..2 {
        for _ in 0..3 {
            control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 0})).await;
            assert_eq!(
                send_on(&client, &gateway).await.status(),
                StatusCode::OK,
                "round {round}"
            );
        }
        control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 3000})).await;
        let started = Instant::now();
        gateway_error(
            send_on(&client, &gateway).await,
            StatusCode::GATEWAY_TIMEOUT,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "round {round}: answered before the upstream"
        );
    }
}

#[tokio::test]
async fn slow_upstream_is_a_504() {
    let sim = sim().await;
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 3000})).await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.upstream.timeout = Duration::from_millis(300)
    })
    .await;
    let started = Instant::now();
    let response = http()
        .post(format!("{}/v24.0/{NUMBER}/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap();
    gateway_error(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered before the upstream"
    );
}

#[tokio::test]
async fn slow_upstream_is_a_504_over_http2_too() {
    let sim = sim().await;
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 3000})).await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.upstream.timeout = Duration::from_millis(300)
    })
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let started = Instant::now();
    let response = send_on(&client, &gateway).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    gateway_error(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered before the upstream"
    );
}

/// An HTTP/1.1 connection to the gateway through hyper's own client, so a
/// test sees exactly one connection: its requests, and when it closes.
struct H1Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    closed: tokio::task::JoinHandle<()>,
}

impl H1Connection {
    async fn open(gateway: &InProcess) -> Self {
        let stream = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        Self { sender, closed }
    }

    /// A send on this connection; its status.
    async fn send(&mut self) -> StatusCode {
        self.sender.ready().await.expect("the connection is open");
        let request = http::Request::post(format!("/v24.0/{NUMBER}/messages"))
            .header("host", "wagate.test")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(
                send_body().to_string(),
            )))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        status
    }

    /// Waits for the gateway to close this connection; fails the test if it
    /// is still open after `deadline`.
    async fn wait_closed(self, deadline: Duration, what: &str) {
        tokio::time::timeout(deadline, self.closed)
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after {deadline:?}"))
            .unwrap();
    }
}

/// Waits until the gateway closes a raw connection; returns what it sent.
async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    deadline: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    match tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("reading the connection: {e}"),
        Err(_) => panic!("the connection is still open after {deadline:?}"),
    }
    out
}

/// The slow-loris guard: a client that trickles its request head, a line
/// at a time, is disconnected once the header-read timeout has passed,
/// however often it sends.
// On a multi-thread runtime, as the gateway runs in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_head_too_slowly_is_disconnected() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.server.header_read_timeout = Duration::from_millis(400)
    })
    .await;
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        writer
            .write_all(format!("POST /v24.0/{NUMBER}/messages HTTP/1.1\r\n").as_bytes())
            .await?;
        // A slow client's pace, not a synchronisation: one header line
        // every 50 ms, bounded at 200 lines (10 s).
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        for line in 0..200 {
            pace.tick().await;
            writer
                .write_all(format!("x-slow-{line}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let out = read_until_closed(&mut reader, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the header-read timeout: {:?}",
        started.elapsed()
    );
    assert!(out.is_empty(), "no response to a head that never ended");
    trickle.abort();

    // A connection that sends nothing at all goes the same way.
    let mut silent = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(5))
            .await
            .is_empty()
    );
}

/// The header-read deadline runs only while a connection waits for a
/// request: a request slower than it keeps its connection, the deadline
/// starts again once it is answered, and an idle keep-alive connection is
/// closed when it passes.
// On a multi-thread runtime, as the gateway runs in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_deadline_runs_only_between_requests() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.server.header_read_timeout = Duration::from_millis(400);
        c.upstream.timeout = Duration::from_secs(10);
    })
    .await;
    let mut connection = H1Connection::open(&gateway).await;
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 1200})).await;
    assert_eq!(connection.send().await, StatusCode::OK);
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 0})).await;
    // Still open, although it was accepted three timeouts ago.
    assert_eq!(connection.send().await, StatusCode::OK);

    let idle_from = Instant::now();
    connection
        .wait_closed(Duration::from_secs(5), "an idle keep-alive connection")
        .await;
    assert!(
        idle_from.elapsed() >= Duration::from_millis(300),
        "closed {:?} after its last request was sent",
        idle_from.elapsed()
    );
}

/// An HTTP/2 connection carries concurrent streams and has no header-read
/// deadline once it has shown itself to be HTTP/2 (as with hyper's own
/// guard): it outlives idle HTTP/1.1 connections.
#[tokio::test]
async fn http2_connections_have_no_header_read_deadline() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.server.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let stream = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let h2_closed = tokio::spawn(connection);
    let send = |sender: &mut hyper::client::conn::http2::SendRequest<_>| {
        let request = http::Request::post(format!("http://wagate.test/v24.0/{NUMBER}/messages"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(
                send_body().to_string(),
            )))
            .unwrap();
        sender.send_request(request)
    };
    assert_eq!(send(&mut sender).await.unwrap().status(), StatusCode::OK);

    // Two header-read timeouts, one after the other, each seen to pass on
    // an idle HTTP/1.1 connection opened after the HTTP/2 request.
    for _ in 0..2 {
        let mut idle = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
        read_until_closed(&mut idle, Duration::from_secs(5)).await;
    }
    assert!(!h2_closed.is_finished(), "the HTTP/2 connection is open");
    assert_eq!(send(&mut sender).await.unwrap().status(), StatusCode::OK);
}

/// Shutdown closes idle connections at once: they do not hold the drain
/// open until its time is over.
// On a multi-thread runtime, as the gateway runs in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_without_waiting_out_the_drain() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| {
        c.server.drain_timeout = Duration::from_secs(60);
        c.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut used = H1Connection::open(&gateway).await;
    assert_eq!(used.send().await, StatusCode::OK);
    let mut silent = tokio::net::TcpStream::connect(gateway.proxy).await.unwrap();
    // The silent connection is accepted before the gateway stops.
    let mut other = H1Connection::open(&gateway).await;
    assert_eq!(other.send().await, StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(10), gateway.stop())
        .await
        .expect("the gateway stops within 10 s, not after the 60 s drain");
    used.wait_closed(Duration::from_secs(1), "the used connection")
        .await;
    other
        .wait_closed(Duration::from_secs(1), "the other used connection")
        .await;
    read_until_closed(&mut silent, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn upstream_reset_mid_response_breaks_the_client_response() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |_| {}).await;
    let response = http()
        .get(format!("{}/_sim/broken", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let read = tokio::time::timeout(Duration::from_secs(10), response.bytes())
        .await
        .expect("the broken body ends, it does not hang");
    assert!(read.is_err(), "a truncated body must surface as an error");
}

#[tokio::test]
async fn oversize_bodies_get_a_413_with_or_without_content_length() {
    let sim = sim().await;
    let gateway = InProcess::start(sim.addr, |c| c.limits.max_body_bytes = 1024).await;
    let url = format!("{}/v24.0/{NUMBER}/media", gateway.url());
    let declared = http()
        .post(&url)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    gateway_error(declared, StatusCode::PAYLOAD_TOO_LARGE).await;

    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 512]))),
    );
    let streamed = http()
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    gateway_error(streamed, StatusCode::PAYLOAD_TOO_LARGE).await;

    let small = http()
        .post(&url)
        .body(vec![b'z'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), StatusCode::OK);
}

#[tokio::test]
async fn too_many_in_flight_is_a_503_with_retry_after() {
    let sim = sim().await;
    control(
        &sim,
        reqwest::Method::PUT,
        "latency",
        json!({"ms": 2000, "phone_number_id": NUMBER}),
    )
    .await;
    let gateway = InProcess::start(sim.addr, |c| c.limits.max_in_flight = 1).await;
    let slow_url = format!("{}/v24.0/{NUMBER}/messages", gateway.url());
    let slow = tokio::spawn(async move { http().post(slow_url).json(&send_body()).send().await });
    support::wait_until_async(
        Duration::from_secs(5),
        "the slow request is in flight",
        || async { metric(gateway.admin, "wagate_in_flight_requests").await == 1.0 },
    )
    .await;
    let response = http()
        .post(format!("{}/v24.0/200000000000002/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    gateway_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn large_uploads_and_downloads_stream_without_growing_memory() {
    const SIZE: usize = 20 * 1024 * 1024;
    let sim = sim().await;
    let upstream = format!("http://{}", sim.addr);
    let gateway = Process::spawn(&[("WAGATE_UPSTREAM__BASE_URL", &upstream)]);
    // Warm up: one small request so connection pools and buffers exist.
    let warm = http()
        .post(format!("{}/{NUMBER}/messages", gateway.url()))
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), StatusCode::OK);
    let before = gateway.peak_rss_kib();

    // A multipart body generated on the fly, so the test holds none of it.
    let boundary = "wagate-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut expected = Sha256::new();
    expected.update(head.as_bytes());
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..SIZE / chunk.len() {
        expected.update(&chunk);
    }
    expected.update(tail.as_bytes());
    let expected = hex::encode(expected.finalize());
    let parts = std::iter::once(Bytes::from(head))
        .chain((0..SIZE / chunk.len()).map({
            let chunk = Bytes::from(chunk);
            move |_| chunk.clone()
        }))
        .chain(std::iter::once(Bytes::from(tail)));
    let upload = http()
        .post(format!("{}/v24.0/{NUMBER}/media", gateway.url()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts.map(Ok::<_, std::io::Error>),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::OK);
    let log = control(&sim, reqwest::Method::GET, "log", Value::Null).await;
    let received = log.as_array().unwrap().last().unwrap();
    assert_eq!(received["body_sha256"], expected.as_str());

    let download = http()
        .get(format!("{}/_sim/blob?bytes={SIZE}", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let mut stream = download.bytes_stream();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, SIZE);

    let grown_kib = gateway.peak_rss_kib().saturating_sub(before);
    assert!(
        grown_kib < 8 * 1024,
        "peak memory grew by {grown_kib} KiB while streaming 2 x 20 MiB"
    );
}

#[tokio::test]
async fn logs_never_contain_tokens_pins_or_secrets() {
    let sim = sim().await;
    control(
        &sim,
        reqwest::Method::POST,
        &format!("numbers/{NUMBER}/lock"),
        Value::Null,
    )
    .await;
    let upstream = format!("http://{}", sim.addr);
    let gateway = Process::spawn(&[
        ("WAGATE_UPSTREAM__BASE_URL", &upstream),
        ("WAGATE_LOG__LEVEL", "trace"),
        ("WAGATE_ADMIN__TOKEN", "admin-secret-3f9a"),
        ("WAGATE_WEBHOOK__APP_SECRET", "app-secret-7c21"),
        ("WAGATE_WEBHOOK__VERIFY_TOKEN", "verify-token-5d88"),
        ("WAGATE_HEALTH__ACCESS_TOKEN", "health-token-0b4e"),
    ]);
    let client = http();
    let base = gateway.url();
    let sends = [
        client
            .post(format!("{base}/v24.0/{NUMBER}/messages"))
            .bearer_auth("EAAG-header-token-1111")
            .json(&send_body()),
        client
            .post(format!(
                "{base}/v24.0/{NUMBER}/messages?access_token=EAAG-query-token-2222"
            ))
            .json(&send_body()),
        client
            .post(format!("{base}/v24.0/{NUMBER}/register"))
            .bearer_auth("EAAG-header-token-1111")
            .json(&json!({"messaging_product": "whatsapp", "pin": "918273"})),
        client
            .post(format!("{base}/v24.0/{NUMBER}"))
            .bearer_auth("EAAG-header-token-1111")
            .json(&json!({"pin": "564738"})),
        client
            .post(format!("{base}/webhooks/whatsapp"))
            .header("x-hub-signature-256", "sha256=feedc0de99")
            .body("{}"),
    ];
    for send in sends {
        send.send().await.unwrap();
    }
    // The 131031 above was logged: wait for that line, then read everything.
    support::wait_until_async(Duration::from_secs(5), "the lock is logged", || async {
        gateway.log().contains("131031")
    })
    .await;
    let log = gateway.log();
    for secret in [
        "EAAG-header-token-1111",
        "EAAG-query-token-2222",
        "918273",
        "564738",
        "feedc0de99",
        "admin-secret-3f9a",
        "app-secret-7c21",
        "verify-token-5d88",
        "health-token-0b4e",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let sim = sim().await;
    control(&sim, reqwest::Method::PUT, "latency", json!({"ms": 1500})).await;
    let upstream = format!("http://{}", sim.addr);
    let mut gateway = Process::spawn(&[
        ("WAGATE_UPSTREAM__BASE_URL", &upstream),
        ("WAGATE_SERVER__DRAIN_TIMEOUT", "20s"),
    ]);
    let url = format!("{}/v24.0/{NUMBER}/messages", gateway.url());
    let slow = tokio::spawn(async move { http().post(url).json(&send_body()).send().await });
    support::wait_until_async(
        Duration::from_secs(5),
        "the slow request is in flight",
        || async { metric(gateway.admin, "wagate_in_flight_requests").await == 1.0 },
    )
    .await;
    gateway.terminate();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["messages"][0]["id"].is_string());
    let code = tokio::task::spawn_blocking(move || gateway.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
