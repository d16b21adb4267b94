//! perfgate as a library: starting a gateway (proxy and admin listeners)
//! from a configuration, and the `demo` that shows it end to end. The
//! binary (`main.rs`) only parses the command line and calls in here.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod demo;
