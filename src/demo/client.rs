//! The demo's HTTP side: a plain hyper client for sends, admin reads and
//! `/metrics`, and the reading of the metrics text.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A request that takes longer than this fails the step it belongs to.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: `/metrics` of a small gateway is a few KiB.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What an integration would send: a text message to one recipient.
const SEND_BODY: &str =
    r#"{"messaging_product":"whatsapp","to":"15550001111","type":"text","text":{"body":"hello"}}"#;

/// One answer, read whole.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    /// The body as JSON, `Null` when it is not.
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value as text, empty when absent.
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Meta's `error.code` in the body, 0 when there is none.
    pub(super) fn error_code(&self) -> i64 {
        self.json()["error"]["code"].as_i64().unwrap_or(0)
    }
}

/// An HTTP/1.1 client over plain TCP: everything the demo talks to is on
/// loopback.
#[derive(Clone)]
pub(super) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub(super) fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `POST /v24.0/{number}/messages` through the gateway at `proxy`, with
    /// the number's own (made-up) token, as an integration sends.
    pub(super) async fn send(&self, proxy: SocketAddr, number: &str) -> Result<Answer, String> {
        let request = Request::post(format!("http://{proxy}/v24.0/{number}/messages"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer demo-token-{number}"),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(SEND_BODY.as_bytes())))
            .map_err(|e| e.to_string())?;
        self.exchange(request).await
    }

    /// `GET url`.
    pub(super) async fn get(&self, url: &str) -> Result<Answer, String> {
        let request = Request::get(url)
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        self.exchange(request).await
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
        let target = request.uri().to_string();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::upstream::error_chain(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, BODY_LIMIT)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e: String| format!("{target}: {e}"))
    }
}

/// Every sample of a Prometheus text page, by series (name and labels).
pub(super) fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Gauges left out of [`moved`]: the poll budget counts down from the huge
/// hourly budget the demo configures, which says nothing about the story.
const UNTOLD: [&str; 1] = ["wagate_health_budget_left"];

/// The series whose value differs between `before` and `after` (absent
/// counts as 0), with both values. Histogram buckets and sums are left
/// out: their `_count` says how often they moved.
pub(super) fn moved(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or_default();
            !name.ends_with("_bucket") && !name.ends_with("_sum") && !UNTOLD.contains(&name)
        })
        .filter_map(|(series, &now)| {
            let was = before.get(series).copied().unwrap_or(0.0);
            (was != now).then(|| (series.clone(), was, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_series_skip_buckets_and_count_absent_as_zero() {
        let before = samples(
            "# HELP x help\n# TYPE x counter\nx_total{a=\"1\"} 2\nsteady 5\nh_bucket{le=\"1\"} 0\n",
        );
        let after = samples(
            "x_total{a=\"1\"} 3\nsteady 5\nfresh_total 1\nwagate_health_budget_left{waba=\"-\"} 9\nh_bucket{le=\"1\"} 4\nh_sum 0.5\nh_count 4\n",
        );
        assert_eq!(
            moved(&before, &after),
            [
                ("fresh_total".to_owned(), 0.0, 1.0),
                ("h_count".to_owned(), 0.0, 4.0),
                ("x_total{a=\"1\"}".to_owned(), 2.0, 3.0),
            ]
        );
    }
}
