//! HTTP building blocks every other part of perfgate shares: the body type
//! ([`body::Body`]), header rules (hop-by-hop, forwarding, `Via`), the
//! failure model with its status table and JSON envelope ([`error`]), and
//! the connection wrapper that bounds how a client may frame its request
//! head ([`framing`]). Nothing here knows about routes, caches or pools.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod body;
pub mod error;
pub mod framing;
pub mod headers;

pub use body::Body;
pub use error::{Error, ErrorKind, GatewayError, Side, envelope};
