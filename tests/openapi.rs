//! The admin listener against its OpenAPI document, `src/admin/openapi.json`:
//! every endpoint is called over HTTP, in every documented status a test can
//! bring about (a store outage on a real, killed `redis-server` included).
//! Each answer must have a status its operation documents, the documented
//! headers and content type and, for JSON, a body valid against the
//! documented schema; a documented status that no call produced fails the
//! test unless `NOT_PRODUCED` says why. The served document must be the
//! file, and the router's routes the document's operations.

#[path = "openapi/spec.rs"]
mod spec;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use spec::Spec;
use support::gateway::{InProcess, http, sim};
use support::redis::RedisServer;
use wagate::config::{Config, RedisUrl, Secret, Waba};

const DOCUMENT: &str = include_str!("../src/admin/openapi.json");
/// The router, read for its routes, so that a route added without being
/// described fails here.
const ROUTER: &str = include_str!("../src/admin/mod.rs");

const LOCKED: &str = "200000000000001";
const HELD: &str = "200000000000002";
const LINKED: &str = "200000000000003";
const UNKNOWN: &str = "200000000000009";
const WABA: &str = "300000000000001";
const UNKNOWN_WABA: &str = "399999999999999";
const TOKEN: &str = "t";
const ALICE: &str = "a1";

const ONE: &str = "/admin/breakers/{id}";
const ACT: &str = "/admin/breakers/{id}/{action}";
const WABA_ONE: &str = "/admin/wabas/{id}";
const WABA_ACT: &str = "/admin/wabas/{id}/{action}";

/// A body over the listener's 64 KiB limit.
fn too_large() -> String {
    "x".repeat(70 * 1024)
}

/// Documented answers that no test here can bring about:
/// - `/readyz` 503: starting and draining last no longer than a start or
///   a stop;
/// - a breaker change's 503: a store that fails other than by being
///   unreachable (unreachable is the 202);
/// - a WABA change's 202: a store that takes the WABA's record but not its
///   numbers' writes (a Cluster with one node down).
const NOT_PRODUCED: &[(&str, &str, u16)] = &[
    ("/readyz", "get", 503),
    (ACT, "post", 503),
    (WABA_ACT, "post", 202),
];

async fn send(base: &str, number: &str) -> StatusCode {
    let message = json!({"messaging_product": "whatsapp", "to": "+15550009999", "type": "text",
                         "text": {"body": "hi"}});
    http()
        .post(format!("{base}/v24.0/{number}/messages"))
        .bearer_auth("integration-token")
        .json(&message)
        .send()
        .await
        .unwrap()
        .status()
}

async fn readyz_says(admin: SocketAddr, want: &str) {
    support::wait_until_async(Duration::from_secs(15), want, || async {
        match http().get(format!("http://{admin}/readyz")).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|b| b["status"] == want),
            Err(_) => false,
        }
    })
    .await;
}

/// Two tokens (`admin` and `alice`), and HELD and LINKED known to belong to
/// WABA.
fn configure(c: &mut Config) {
    c.admin.token = Secret::new(TOKEN);
    c.admin.tokens = Secret::new(format!("alice:{ALICE}"));
    c.wabas = vec![Waba {
        id: WABA.to_owned(),
        numbers: vec![HELD.to_owned(), LINKED.to_owned()],
        token: Secret::default(),
    }];
}

#[tokio::test]
async fn every_endpoint_answers_as_documented() {
    let sim = sim().await;
    sim.sim.lock(LOCKED);
    let gateway = InProcess::start(sim.addr, configure).await;
    let admin = gateway.admin;
    let mut spec = Spec::new(DOCUMENT);
    readyz_says(admin, "ready").await;

    reads(&mut spec, admin).await;
    assert_eq!(send(&gateway.url(), LOCKED).await, StatusCode::FORBIDDEN);
    breakers(&mut spec, admin).await;
    changes(&mut spec, admin).await;
    wabas(&mut spec, admin).await;
    audit_and_unlisted(&mut spec, admin).await;

    let no_tokens = InProcess::start(sim.addr, |_| {}).await;
    for path in [
        (&format!("/admin/breakers/{LOCKED}/trip") as &str, ACT),
        (&format!("/admin/wabas/{WABA}/trip"), WABA_ACT),
    ] {
        let answer = spec.post(no_tokens.admin, path, Some(TOKEN), "").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    }
    // Last on this gateway: it locks the test out of changes.
    failed_attempts(&mut spec, admin).await;
    outage(&mut spec, sim.addr).await;
    spec.assert_all_seen(NOT_PRODUCED);
}

async fn reads(spec: &mut Spec, admin: SocketAddr) {
    for path in ["/", "/metrics", "/healthz", "/readyz"] {
        let answer = spec.get(admin, path, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
    }
    let path = "/admin/openapi.json";
    let served = spec.get(admin, path, path).await;
    assert_eq!(served.text, DOCUMENT, "the served document is the file");
}

/// Reads of breakers: an open one (LOCKED, tripped by Meta's 131031) and a
/// held one (HELD, held with a ttl).
async fn breakers(spec: &mut Spec, admin: SocketAddr) {
    let hold = json!({"reason": "template fix", "ttl": "1h"}).to_string();
    let path = format!("/admin/breakers/{HELD}/trip");
    let answer = spec.post(admin, (&path, ACT), Some(ALICE), hold).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["breaker"]["state"], "held");
    assert_eq!(answer.body["breaker"]["waba"], WABA);

    let lists = [
        ("", StatusCode::OK, 2),
        ("?state=open", StatusCode::OK, 1),
        ("?state=held", StatusCode::OK, 1),
        ("?state=ramping", StatusCode::OK, 0),
        (&format!("?waba={WABA}&cause=0"), StatusCode::OK, 1),
        ("?cause=131031", StatusCode::OK, 1),
        ("?state=closed", StatusCode::BAD_REQUEST, 0),
        ("?cause=locked", StatusCode::BAD_REQUEST, 0),
        ("?waba=x", StatusCode::BAD_REQUEST, 0),
        ("?color=red", StatusCode::BAD_REQUEST, 0),
    ];
    for (query, want, count) in lists {
        let path = format!("/admin/breakers{query}");
        let answer = spec.get(admin, &path, "/admin/breakers").await;
        assert_eq!(answer.status, want, "{path}: {}", answer.text);
        if want == StatusCode::OK {
            let found = answer.body["breakers"].as_array().unwrap().len();
            assert_eq!(found, count, "{path}");
        }
    }
    for (id, want) in [
        (LOCKED, StatusCode::OK),
        (HELD, StatusCode::OK),
        (UNKNOWN, StatusCode::NOT_FOUND),
        ("12ab", StatusCode::BAD_REQUEST),
        // Not UTF-8 once decoded: refused before the handler, still JSON.
        ("%FF", StatusCode::BAD_REQUEST),
    ] {
        let path = format!("/admin/breakers/{id}");
        let answer = spec.get(admin, &path, ONE).await;
        assert_eq!(answer.status, want, "{path}: {}", answer.text);
    }
}

/// Changes of LOCKED: refused ones, then a release, two holds and a reset.
async fn changes(spec: &mut Spec, admin: SocketAddr) {
    let cases: [(&str, &str, Option<&str>, &str, u16); 12] = [
        (LOCKED, "reset", None, "", 401),
        (LOCKED, "reset", Some("wrong"), "", 401),
        (LOCKED, "explode", Some(TOKEN), "", 404),
        (LOCKED, "reset", Some(TOKEN), "{not json", 400),
        (LOCKED, "reset", Some(TOKEN), r#"{"why":"x"}"#, 400),
        (LOCKED, "reset", Some(TOKEN), r#"{"ttl":"2h"}"#, 400),
        ("12ab", "reset", Some(TOKEN), "", 400),
        (UNKNOWN, "release", Some(TOKEN), "", 404),
        (LOCKED, "release", Some(ALICE), r#"{"reason":"ok"}"#, 200),
        (LOCKED, "trip", Some(TOKEN), "{}", 200),
        // The same hold again, in words: nothing to change.
        (
            LOCKED,
            "trip",
            Some(TOKEN),
            r#"{"reason":"trip by admin"}"#,
            200,
        ),
        (LOCKED, "reset", Some(TOKEN), r#"{"ttl":null}"#, 200),
    ];
    let mut outcomes = Vec::new();
    for (id, action, token, body, want) in cases {
        let path = format!("/admin/breakers/{id}/{action}");
        let answer = spec.post(admin, (&path, ACT), token, body).await;
        assert_eq!(
            answer.status.as_u16(),
            want,
            "{path} {body}: {}",
            answer.text
        );
        if want == 200 {
            outcomes.push(answer.body["outcome"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(outcomes, ["changed", "changed", "unchanged", "changed"]);
    let path = format!("/admin/breakers/{LOCKED}/reset");
    let answer = spec
        .post(admin, (&path, ACT), Some(TOKEN), too_large())
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

async fn wabas(spec: &mut Spec, admin: SocketAddr) {
    let answer = spec.get(admin, "/admin/wabas", "/admin/wabas").await;
    assert_eq!(answer.body["wabas"][0]["numbers"], 2, "{}", answer.text);
    let cases: [(&str, &str, Option<&str>, &str, u16); 6] = [
        (WABA, "trip", None, "", 401),
        (WABA, "explode", Some(TOKEN), "", 404),
        (UNKNOWN_WABA, "reset", Some(TOKEN), "", 404),
        ("x1", "trip", Some(TOKEN), "", 400),
        (WABA, "trip", Some(TOKEN), r#"{"ttl":"0s"}"#, 400),
        (
            WABA,
            "trip",
            Some(ALICE),
            r#"{"reason":"review","ttl":"1h"}"#,
            200,
        ),
    ];
    for (id, action, token, body, want) in cases {
        let path = format!("/admin/wabas/{id}/{action}");
        let answer = spec.post(admin, (&path, WABA_ACT), token, body).await;
        assert_eq!(
            answer.status.as_u16(),
            want,
            "{path} {body}: {}",
            answer.text
        );
    }
    let path = format!("/admin/wabas/{WABA}/trip");
    let answer = spec.post(admin, (&path, WABA_ACT), None, too_large()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    for (id, want) in [
        (WABA, StatusCode::OK),
        (UNKNOWN_WABA, StatusCode::NOT_FOUND),
        ("x1", StatusCode::BAD_REQUEST),
    ] {
        let path = format!("/admin/wabas/{id}");
        let answer = spec.get(admin, &path, WABA_ONE).await;
        assert_eq!(answer.status, want, "{path}: {}", answer.text);
        if want == StatusCode::OK {
            assert_eq!(answer.body["gate"]["hold"], "review");
            assert_eq!(answer.body["numbers"].as_array().unwrap().len(), 2);
        }
    }
    // A number of the held WABA shows the WABA's gate.
    let answer = spec
        .get(admin, &format!("/admin/breakers/{LINKED}"), ONE)
        .await;
    assert_eq!(
        answer.body["waba_gate"]["hold"], "review",
        "{}",
        answer.text
    );
    let path = format!("/admin/wabas/{WABA}/reset");
    let answer = spec.post(admin, (&path, WABA_ACT), Some(TOKEN), "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["outcome"], "changed");
}

async fn audit_and_unlisted(spec: &mut Spec, admin: SocketAddr) {
    for (query, want) in [
        ("", StatusCode::OK),
        ("?limit=0", StatusCode::BAD_REQUEST),
        ("?limit=1001", StatusCode::BAD_REQUEST),
        ("?number=x", StatusCode::BAD_REQUEST),
        ("?since=1", StatusCode::BAD_REQUEST),
    ] {
        let path = format!("/admin/audit{query}");
        let answer = spec.get(admin, &path, "/admin/audit").await;
        assert_eq!(answer.status, want, "{path}: {}", answer.text);
    }
    let path = format!("/admin/audit?number={LOCKED}&limit=3");
    let answer = spec.get(admin, &path, "/admin/audit").await;
    let entries = answer.body["entries"].as_array().unwrap();
    let by: Vec<&str> = entries.iter().map(|e| e["by"].as_str().unwrap()).collect();
    assert_eq!(by, ["admin", "admin", "alice"], "{}", answer.text);

    let answer = spec
        .unlisted(admin, Method::GET, "/admin/nothing-here", "NotFound")
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    for (method, path) in [
        (Method::DELETE, "/admin/breakers".to_owned()),
        (Method::POST, "/healthz".to_owned()),
        (Method::GET, format!("/admin/breakers/{LOCKED}/reset")),
    ] {
        let answer = spec
            .unlisted(admin, method, &path, "MethodNotAllowed")
            .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
}

/// Wrong tokens until the client is refused 429, which then refuses the
/// right token too, for both kinds of change.
async fn failed_attempts(spec: &mut Spec, admin: SocketAddr) {
    let path = format!("/admin/breakers/{LOCKED}/trip");
    let mut refused = false;
    for _ in 0..10 {
        let answer = spec.post(admin, (&path, ACT), Some("guess"), "").await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    }
    assert!(refused, "no 429 after 10 wrong tokens");
    let path = format!("/admin/wabas/{WABA}/trip");
    let answer = spec.post(admin, (&path, WABA_ACT), Some(TOKEN), "").await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text
    );
}

/// A gateway on a real Redis that is then killed: a change is pending, and
/// what must read the store says that it cannot.
async fn outage(spec: &mut Spec, sim: SocketAddr) {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let gateway = InProcess::start(sim, |c| {
        configure(c);
        c.store.redis_url = RedisUrl::new(url);
    })
    .await;
    let admin = gateway.admin;
    readyz_says(admin, "ready").await;
    assert_eq!(send(&gateway.url(), LOCKED).await, StatusCode::FORBIDDEN);
    redis.kill();
    readyz_says(admin, "degraded").await;
    let answer = spec.get(admin, "/readyz", "/readyz").await;
    assert_eq!(answer.body["store"], "redis");

    let path = format!("/admin/breakers/{LOCKED}/trip");
    let answer = spec.post(admin, (&path, ACT), Some(TOKEN), "").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body["outcome"], "pending");
    let answer = spec
        .get(admin, &format!("/admin/breakers/{LOCKED}"), ONE)
        .await;
    assert_eq!(answer.body["state"], "held", "{}", answer.text);
    assert!(answer.body["transitions"].is_null(), "{}", answer.text);

    for (path, template) in [
        ("/admin/wabas", "/admin/wabas"),
        (&format!("/admin/wabas/{WABA}"), WABA_ONE),
        ("/admin/audit", "/admin/audit"),
    ] {
        let answer = spec.get(admin, path, template).await;
        let status = answer.status;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            answer.text
        );
    }
    let path = format!("/admin/wabas/{WABA}/trip");
    let answer = spec.post(admin, (&path, WABA_ACT), Some(TOKEN), "").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
}

/// The router's routes, read from its source: `.route("/path", get(...))`.
fn router_routes() -> BTreeSet<(String, String)> {
    ROUTER
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once('"')?;
            let verb = rest.trim_start_matches([',', ' ']).split('(').next()?;
            Some((path.to_owned(), verb.to_owned()))
        })
        .collect()
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routes = router_routes();
    assert!(
        routes.len() >= 12,
        "routes read from the router: {routes:?}"
    );
    let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let verbs = item.as_object().unwrap().keys();
            verbs
                .filter(|key| *key != "parameters")
                .map(move |verb| (path.clone(), verb.clone()))
        })
        .collect();
    assert_eq!(routes, documented);
}

#[test]
fn the_document_names_this_version_and_resolves_every_reference() {
    let spec = Spec::new(DOCUMENT);
    assert_eq!(spec.doc["openapi"], "3.1.0");
    assert_eq!(spec.doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let license = &spec.doc["info"]["license"]["identifier"];
    assert_eq!(license, env!("CARGO_PKG_LICENSE"));
    let mut stack = vec![&spec.doc];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                spec.resolve(value);
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    for name in spec.doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
    {
        let schema = json!({"$ref": format!("#/components/schemas/{name}")});
        if let Err(e) = spec.compile(&schema) {
            panic!("{name}: {e}");
        }
    }
    // The document refuses what the server refuses.
    let body = json!({"$ref": "#/components/schemas/ChangeRequest"});
    assert!(
        spec.validate(&body, &json!({"reason": "x", "ttl": "2h"}))
            .is_ok()
    );
    assert!(spec.validate(&body, &json!({"why": "x"})).is_err());
    assert!(spec.validate(&body, &json!({"reason": null})).is_err());
}
