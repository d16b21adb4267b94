//! The log store: [`query`] parses the search language of the log index.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod query;
