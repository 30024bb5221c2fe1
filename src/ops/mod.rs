//! What an operator can do to the pipeline, as plain functions over the
//! broker and the store: [`dlq`] lists, shows, replays and purges dead
//! letters; [`events`] reads an event's lifecycle.
//!
//! The CLI ([`crate::cli`]) and the admin API ([`crate::admin`]) are front
//! ends over this module: they parse, call and render, and decide nothing.
//! Every DLQ operation selects its messages with the one [`Filter`].

pub mod dlq;
pub mod events;
mod filter;

pub use filter::{Filter, FilterError, Selection};

use crate::store::StoreError;

/// Why an operation failed. Each message names only its own part; the
/// cause is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("RabbitMQ failed")]
    Broker(#[from] lapin::Error),
    /// The broker failed part-way; what was done is done (see [`dlq`]).
    #[error("RabbitMQ failed after {done} message(s) were handled")]
    Interrupted {
        done: u64,
        #[source]
        source: lapin::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
