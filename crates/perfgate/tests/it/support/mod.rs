//! The test helpers that start perfgate in-process through `perfgate::app`:
//! a [`Gateway`] on listeners bound to `127.0.0.1:0`, an [`Instance`] whose
//! `Running` handle is reachable for reloads, and the gateway side of the
//! shared-cache tests (`Gateway::member`, the cache admin API,
//! [`until_not_hit`]). They live here, next to the tests, so that
//! `perfgate-test-support` (origins, clients, Redis servers, the binary as a
//! child process) does not depend on the binary crate.

// A helper library, as perfgate-test-support is: not every method has a
// caller in every test build (in a library crate, `pub` keeps them quiet).
#![allow(dead_code)]

mod gateway;
mod pools;
mod shared;

pub use gateway::{Gateway, GatewayBuilder, RunningGateway};
pub use pools::{Instance, Listeners};
pub use shared::until_not_hit;
