//! wagate: a circuit-breaking gateway for the WhatsApp Business Cloud API.
//!
//! An integration points its Graph API base URL at wagate. wagate forwards
//! every request unchanged, reads Meta's error codes on failed sends, and
//! refuses a locked number's sends at the gateway so that retry storms stop
//! hammering it.
//!
//! # Layout
//!
//! The arrows go one way: `app` wires everything; `proxy` and `admin` use
//! `engine` and `breaker`, never `store`; `engine` uses `breaker` and
//! `store`; `breaker` uses nothing but `graph`; `graph` uses nothing of
//! ours. `docs/architecture.md` draws them all.
//!
//! - [`app`]: builds the gateway from the configuration and runs it.
//! - [`proxy`]: the reverse proxy: routes, inspection, gateway-made
//!   errors, the accept loop.
//! - [`upstream`]: the Graph API client the proxy and the health poller
//!   share: target, TLS, connection settings.
//! - [`engine`]: the breaker engine: the machine applied to a local
//!   snapshot, written through to the store, fail-static.
//! - [`store`]: where breaker state lives: the `BreakerStore` trait, the
//!   embedded store (redb) and the Redis store.
//! - [`health`]: the Health Status API poller that releases locked numbers.
//! - [`admin`]: the admin listener: metrics, health checks, admin API.
//! - [`breaker`]: the pure breaker state machine and the rules table.
//! - [`graph`]: Meta's API model (error envelope).
//! - [`config`]: the configuration file and its environment overrides.
//! - [`metrics`]: every Prometheus metric, on an explicit registry.
//! - [`telemetry`]: logging set-up.
//! - [`sim`]: a Graph API simulator for tests, demos and load tests.
//! - [`demo`]: `wagate demo`, the simulator and a gateway in process, told
//!   step by step.
//! - [`cli`]: the `wagate breakers`, `wabas` and `audit` commands, a client
//!   of the admin API over HTTP; it uses nothing of ours but `config`'s
//!   `Secret` and `upstream`'s error chain.

pub mod admin;
pub mod app;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod graph;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod webhook;

pub use app::{Listeners, RunError, run};
