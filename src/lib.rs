//! jitgate — a just-in-time privileged-access gateway.
//!
//! # Layout
//!
//! - `config`: the TOML file, parsed and validated into a typed `Config`.
//! - `workflow`: the pure request → approval → checkout state machine.
//! - `fsutil`, `secret`: durable writes and secrets that never print.
//! - `events`, `notify`: the in-process bus of audit records, and the
//!   webhooks that receive them.
#![forbid(unsafe_code)]
// What a user can reach must not panic: a failure is an error they read.
// Unit tests may (clippy.toml allows it in #[cfg(test)] code).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod events;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod journal;
pub mod lease;
pub mod metrics;
pub mod mfa;
pub mod notify;
pub mod offline;
pub mod postgres;
pub mod rotation;
pub mod secret;
pub mod serve;
pub mod sessions;
pub mod ssh;
pub mod targets;
pub mod vault;
pub mod workflow;
