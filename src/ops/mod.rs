//! What an operator can do to the pipeline, as plain functions over the
//! broker and the store: [`dlq`] lists, shows, replays and purges dead
//! letters; [`events`] reads an event's lifecycle; [`connections`] adds,
//! lists, shows, resyncs and removes the connections the worker holds
//! tokens for; [`overview`] gathers the state of the whole pipeline.
//!
//! The CLI ([`crate::cli`]) and the admin API ([`crate::admin`]) are front
//! ends over this module: they parse, call and render, and decide nothing.
//! Every DLQ operation selects its messages with the one [`Filter`].

pub mod connection_health;
pub mod connections;
pub mod dlq;
pub mod events;
mod filter;
pub mod overview;

pub use filter::{Filter, FilterError, Selection};

use crate::finch::FinchError;
use crate::queue::PublishError;
use crate::store::connections::ConnectionError;
use crate::store::StoreError;

/// What stopped a DLQ operation part-way: a [`lapin::Error`] while reading
/// the queue, or a [`PublishError`] that is the broker's fault rather than
/// the message's.
pub type BrokerFailure = Box<dyn std::error::Error + Send + Sync>;

/// Why an operation failed. Each message names only its own part; the
/// cause is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("no connection {0}")]
    UnknownConnection(String),
    #[error("RabbitMQ failed")]
    Broker(#[from] lapin::Error),
    /// The broker failed part-way; what was done is done (see [`dlq`]).
    #[error("RabbitMQ failed after {done} message(s) were handled")]
    Interrupted {
        done: u64,
        #[source]
        source: BrokerFailure,
    },
    #[error("RabbitMQ did not take the message")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored token that cannot be decrypted with the configured key.
    #[error(transparent)]
    StoredToken(ConnectionError),
    #[error(transparent)]
    Finch(#[from] FinchError),
    #[error("Finch's /introspect named no connection_id for the token")]
    NoConnectionId,
}

impl From<ConnectionError> for OpsError {
    fn from(error: ConnectionError) -> Self {
        match error {
            ConnectionError::Store(error) => Self::Store(error),
            token @ ConnectionError::Token { .. } => Self::StoredToken(token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finch::token::TokenError;

    fn occurrences(text: &str, part: &str) -> usize {
        text.matches(part).count()
    }

    #[test]
    fn a_chained_error_names_each_cause_once() {
        let token = OpsError::from(ConnectionError::Token {
            connection_id: "conn-1".into(),
            source: TokenError::Corrupt,
        });
        let shown = format!("{:#}", anyhow::Error::new(token).context("removing conn-1"));
        assert_eq!(
            shown,
            "removing conn-1: token of connection conn-1: \
             the stored token could not be decrypted (wrong key or corrupted row)"
        );

        let outage = OpsError::from(StoreError::from(sqlx::Error::PoolTimedOut));
        let shown = format!("{:#}", anyhow::Error::new(outage));
        assert_eq!(occurrences(&shown, "pool timed out"), 1, "{shown}");
        assert!(shown.starts_with("database unavailable: "), "{shown}");

        let bug = OpsError::from(StoreError::from(sqlx::Error::RowNotFound));
        let shown = format!("{:#}", anyhow::Error::new(bug));
        assert_eq!(occurrences(&shown, "no rows returned"), 1, "{shown}");
        assert!(shown.starts_with("database query failed: "), "{shown}");
    }
}
