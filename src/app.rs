//! Wiring: builds the proxy, the admin listener and their shared parts from
//! the configuration, and runs them until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::admin::{self, Readiness};
use crate::breaker::{EventRules, Rules};
use crate::config::Config;
use crate::engine::{Breakers, Timing};
use crate::health::{Poller, Tokens};
use crate::metrics::{BreakerMetrics, HealthMetrics, LastSends, Metrics, WebhookMetrics};
use crate::proxy::{self, GateLayer, InFlightLimit, Proxy, ProxySettings, SendCaps};
use crate::store::NumberLink;
use crate::upstream::{self, Target};
use crate::webhook::WebhookLayer;

/// The two listeners, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// Where integrations send Graph API calls.
    pub proxy: TcpListener,
    /// Metrics, health checks and the admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses of the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            proxy: TcpListener::bind(config.listen.proxy).await?,
            admin: TcpListener::bind(config.listen.admin).await?,
        })
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `upstream.base_url` is not usable (config validation should have
    /// caught it).
    #[error("upstream.base_url: {0}")]
    Upstream(String),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The breaker store could not be opened (an unreadable embedded file,
    /// a bad Redis URL, refused credentials, or a Redis unreachable at
    /// start: a replica with no snapshot would forward sends for numbers
    /// the others know are locked, so it exits and is restarted instead).
    /// A store lost once running is served fail-static.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The rules table is invalid (config validation should have caught it).
    #[error("rules: {0}")]
    Rules(#[from] crate::breaker::RulesError),
    /// The event rules are invalid (config validation should have caught
    /// them).
    #[error("event_rules: {0}")]
    EventRules(#[from] crate::breaker::EventRulesError),
}

/// Runs the gateway on `listeners` until `shutdown` resolves, then drains
/// in-flight requests for up to `server.drain_timeout` and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry)?;
    let breaker_metrics =
        BreakerMetrics::new(&registry)?.with_number_series(config.metrics.number_series);
    let readiness = Readiness::default();

    let store = crate::store::open(&config.store).await?;
    let rules = Rules::with_overrides(config.rules.clone())?;
    let breakers = Breakers::start(
        store,
        rules,
        config.breaker.clone(),
        breaker_metrics.clone(),
        Timing::default(),
    )
    .await;

    // The operator's [[wabas]]: numbers known to their WABA before any
    // webhook names them (a number new to a gated WABA opens here).
    for waba in &config.wabas {
        for number in &waba.numbers {
            let link = NumberLink {
                number: number.clone(),
                waba: waba.id.clone(),
                display: None,
            };
            if let Err(error) = breakers.learn(link).await {
                warn!(%error, waba = %waba.id, number = %number, "[[wabas]] link not stored yet");
            }
        }
    }

    let target =
        Target::new(config.upstream.uri()).map_err(|e| RunError::Upstream(e.to_string()))?;
    // This process's name in leases: unique per start, so a restarted
    // replica never mistakes its predecessor's lease for its own.
    let replica = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    // Tokens of successful sends are learned only when a poll could need
    // them: health on and no system-user token ([[wabas]] tokens cover only
    // the numbers of the WABAs they name).
    let learns_tokens = config.health.enabled && config.health.access_token.is_empty();
    let tokens = Arc::new(Tokens::default());
    let last_sends = LastSends::new()?;
    registry.register(Box::new(last_sends.clone()))?;
    let hook = GatewayHook {
        breakers: breakers.clone(),
        tokens: learns_tokens.then(|| tokens.clone()),
        last_sends,
    };
    let in_flight = InFlightLimit::new(config.limits.max_in_flight, metrics.in_flight().clone());
    let proxy = Proxy::new(
        upstream::client(&config.upstream),
        upstream::h1_connector(&config.upstream),
        target.clone(),
        ProxySettings {
            max_body_bytes: config.limits.max_body_bytes,
            inspect_body_bytes: config.limits.inspect_body_bytes,
            timeout: config.upstream.timeout,
        },
        metrics.clone(),
        in_flight,
        Arc::new(hook),
    );
    // Request order, top to bottom: the gate refuses sends for open numbers
    // before anything is forwarded (unless `server.gate` is off: shadow
    // mode); the proxy forwards the rest and feeds Meta's errors back to the
    // breakers.
    let gate = config.server.gate.then(|| {
        // A send body the gate must read gets the same time as a request
        // head: a client that stalls mid-body holds nothing for longer.
        GateLayer::new(
            breakers.clone(),
            metrics.clone(),
            breaker_metrics,
            config.server.header_read_timeout,
            replica.clone(),
            // A probe's answer comes within the upstream deadline; the
            // margin covers the gateway's own work around it.
            config.upstream.timeout + PROBE_MARGIN,
        )
    });
    let poller = if config.health.enabled {
        let poller = Poller::new(
            config.health.clone(),
            &config.wabas,
            &config.upstream,
            target.clone(),
            breakers.clone(),
            tokens,
            HealthMetrics::new(&registry)?,
            replica,
        );
        Some(tokio::spawn(poller.run()))
    } else {
        None
    };
    // The per-number send cap, after the gate (a refused send takes no
    // slot); absent unless limits.per_number_rate is set.
    let overrides: Vec<(String, u32)> = config
        .limits
        .number_rates
        .iter()
        .map(|r| (r.number.clone(), r.rate))
        .collect();
    let caps = SendCaps::new(config.limits.per_number_rate, &overrides, metrics.clone());
    // Webhook deliveries are answered before the gate, and never reach the
    // proxy; without a webhook key the layer is not there at all.
    let webhooks = WebhookLayer::new(
        &config.webhook,
        EventRules::with_overrides(config.event_rules.clone())?,
        caps.clone(),
        breakers.clone(),
        WebhookMetrics::new(&registry)?,
    );
    if webhooks.as_ref().is_some_and(WebhookLayer::insecure) {
        readiness.warn("webhook signatures are not checked (webhook.insecure_skip_signature)");
    }
    let make_service = move |watch: &Arc<proxy::Watch>| {
        tower::ServiceBuilder::new()
            .option_layer(webhooks.clone())
            .option_layer(gate.clone())
            .option_layer(caps.clone())
            .service(proxy.for_connection(watch))
    };

    let proxy_addr = local(&listeners.proxy);
    let admin_addr = local(&listeners.admin);
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_router = admin::router(
        metrics.clone(),
        readiness.clone(),
        breakers.clone(),
        config.admin.named_tokens(),
    );
    let admin_task = tokio::spawn(async move {
        let stopped = async {
            let _ = admin_stopped.await;
        };
        let service = admin_router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listeners.admin, service)
            .with_graceful_shutdown(stopped)
            .await
    });

    info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %config.upstream.base_url,
        store = breakers.store_kind(),
        "wagate serving"
    );
    readiness.set_ready();
    let draining = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        draining.set_draining();
        info!("shutting down: no new connections");
    };
    let settings = proxy::ServeSettings {
        body_limit: config.limits.max_body_bytes,
        header_read_timeout: config.server.header_read_timeout,
        drain: config.server.drain_timeout,
    };
    proxy::serve(listeners.proxy, make_service, settings, shutdown).await;

    if let Some(poller) = poller {
        poller.abort();
    }
    let _ = admin_stop.send(());
    let _ = admin_task.await;
    info!("stopped");
    Ok(())
}

/// Added to `upstream.timeout` for the lease of a ramp's probe.
const PROBE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// What the proxy tells about the sends it forwarded: Meta's errors to the
/// engine; the time of each number's last successful send to its metric;
/// and, when the health poller may need them, the tokens of successful
/// sends.
struct GatewayHook {
    breakers: Breakers,
    tokens: Option<Arc<Tokens>>,
    last_sends: LastSends,
}

impl proxy::GraphErrorHook for GatewayHook {
    fn graph_error(
        &self,
        phone_number_id: &str,
        error: &crate::graph::GraphError,
        recipient: Option<&str>,
    ) {
        self.breakers.observe(phone_number_id, error, recipient);
    }

    fn wants_recipient(&self) -> bool {
        self.breakers.has_pair_rules()
    }

    fn send_succeeded(
        &self,
        phone_number_id: &str,
        path_and_query: &http::uri::PathAndQuery,
        authorization: Option<&http::HeaderValue>,
    ) {
        self.last_sends.record(phone_number_id);
        if let Some(tokens) = &self.tokens {
            let (path, query) = (path_and_query.path(), path_and_query.query());
            tokens.learn(phone_number_id, path, query, authorization);
        }
    }

    fn wants_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}
