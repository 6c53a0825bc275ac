//! Shared test support.
#![allow(dead_code)]

pub(crate) mod gateway;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` until it holds, panicking after `deadline`.
pub(crate) async fn wait_until<F, Fut>(deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !condition().await {
        assert!(
            Instant::now() < until,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
