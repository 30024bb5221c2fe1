//! finch-webhooks: receives Finch webhooks, proves they came from Finch, stores
//! each exactly once, hands it to RabbitMQ, and keeps a Postgres copy of every
//! connection's Finch data fresh.
//!
//! The modules follow the path of an event: [`ingress`] verifies and stores
//! it, [`queue`] carries it, [`worker`] acts on it through the [`finch`]
//! client and writes to the [`store`]. The `finch-emulator` crate stands in for Finch.
//! Both roles answer health checks through [`health`] and count in [`metrics`].
//! Operators act through [`ops`], from the [`cli`] or the [`admin`] API.

pub mod admin;
#[cfg(feature = "emulator")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
#[cfg(feature = "emulator")]
pub mod dev;
pub mod finch;
pub mod health;
pub mod ingress;
pub mod metrics;
pub mod ops;
pub mod queue;
pub mod secret_url;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use finch_core::{shutdown, signature};
