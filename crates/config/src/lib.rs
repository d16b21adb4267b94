//! perfgate's configuration: one TOML file, every value overridable by
//! `PERFGATE_…` environment variables, validated with every problem reported
//! with its path.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod ipnet;
mod load;
mod model;
mod problem;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use ipnet::IpNet;
pub use load::{from_env_only, load_file, load_file_with_env, load_str};
pub use model::*;
pub use problem::{ConfigErrors, Origin, Problem};
pub use units::{ByteSize, Duration, parse_byte_size, parse_duration};
pub use validate::{UpstreamUrl, parse_upstream_url, route_name, validate};
