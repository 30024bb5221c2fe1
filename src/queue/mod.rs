//! RabbitMQ: the one AMQP layer. Every role connects, declares the topology
//! and publishes through this module.
//!
//! ```text
//! finch.events (topic, key = event_type) ──► finch.events.work (quorum)
//! finch.events.dlx (topic)               ──► finch.events.dlq  (classic)
//! finch.events.retry.{delay} (quorum, TTL) ──expires──► finch.events.work
//! finch.synced (topic)                     ──► customers' own queues
//! ```
//! The work queue dead-letters into `finch.events.dlx`, so a message the
//! broker gives up on (delivery limit) still lands in the DLQ. A message to
//! retry later is published to the retry queue of its delay and returns to
//! the work queue when its TTL expires, so no consumer holds it meanwhile.
//! Dead-lettering is at-least-once (RabbitMQ 3.10+): the broker keeps a
//! message until the target queue confirmed it.
//!
//! - [`topology`]: the exchanges and queues, declared from settings.
//! - [`contract`]: header names, dead-letter reasons, typed header access.
//! - [`publisher`]: the confirmed publisher everyone publishes through.
//! - [`link`]: a kept connection for publishers that must never wait.
//! - [`backoff`], [`depth`]: reconnect pacing and queue depth.

pub mod backoff;
pub mod contract;
pub mod depth;
pub mod link;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};

pub use backoff::Backoff;
pub use depth::ready_messages;
pub use link::BrokerLink;
pub use publisher::{Envelope, OutgoingEvent, PublishError, Publisher};
pub use topology::{
    declare_topology, retry_queue_name, DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EVENTS_EXCHANGE,
    RETRY_QUEUE_PREFIX, SYNCED_EXCHANGE, WORK_QUEUE,
};

pub async fn connect(amqp_url: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name("finch-webhooks".into());
    Connection::connect(amqp_url, properties).await
}
