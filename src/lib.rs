//! wagate: a circuit-breaking gateway for the WhatsApp Business Cloud API.
//!
//! An integration points its Graph API base URL at wagate. wagate forwards
//! every request unchanged, reads Meta's error codes on failed sends, and
//! refuses a locked number's sends at the gateway so that retry storms stop
//! hammering it.
//!
//! # Layout
//!
//! The arrows go one way: `proxy` and `admin` use `breaker` and `store`;
//! `breaker` uses nothing but `graph`; `graph` uses nothing of ours.
//!
//! - [`graph`]: Meta's API model (error envelope).
//! - [`breaker`]: the pure breaker state machine and the rules table.
//! - [`config`]: the configuration file and its environment overrides.
//! - [`proxy`]: the reverse proxy: routes, upstream client, gateway errors.
//! - [`admin`]: the admin listener: metrics, health checks, admin API.
//! - [`metrics`]: every Prometheus metric, on an explicit registry.
//! - [`telemetry`]: logging set-up.
//! - [`sim`]: a Graph API simulator for tests, demos and load tests.

pub mod breaker;
pub mod config;
pub mod graph;
pub mod sim;
