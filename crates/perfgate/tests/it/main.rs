//! Integration tests of issue #2's acceptance list: real origin, real
//! gateway (in-process on port 0, or the real binary as a child process),
//! real clients. One binary so linking happens once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The in-process gateway (`support::Gateway`, `support::Instance`): it starts
// `perfgate::app`, so it lives here rather than in perfgate-test-support.
mod support;

mod admin;
mod auth;
mod availability;
mod batch;
mod cache;
mod cli;
mod cluster;
mod coalescing;
mod compression;
mod desync;
mod guards;
mod hostile;
mod invalidation;
mod isolation;
mod job_isolation;
mod jobs;
mod l2;
mod limits;
mod logs;
mod malformed;
mod paths;
mod performance;
mod protocols;
mod reload;
mod resilience;
mod shutdown;
mod signals;
mod slow_clients;
mod streaming;
mod warmup;

use std::time::Duration;

/// A JSON body large enough to be compressed (> 500 B).
pub fn events_json() -> String {
    let items: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"event number {i}","venue":"hall {}"}}"#,
                i % 7
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, items.join(","))
}

/// Moves `gw`'s manual clock (see `GatewayBuilder::manual_clock`) far
/// enough for a `max-age=1` entry to be stale.
pub fn make_stale(gw: &crate::support::RunningGateway) {
    gw.advance(Duration::from_millis(1300));
}
