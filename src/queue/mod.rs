//! RabbitMQ: the topology every role declares, and the confirmed publisher.
//!
//! ```text
//! finch.events (topic, key = event_type) ──► finch.events.work (quorum)
//! finch.events.dlx (topic)               ──► finch.events.dlq  (quorum)
//! ```
//! The work queue dead-letters into `finch.events.dlx`, so a message the
//! broker gives up on (delivery limit) still lands in the DLQ.

pub mod link;
pub mod publisher;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

pub use link::BrokerLink;
pub use publisher::{OutgoingEvent, PublishError, Publisher};

/// Topic exchange for live events; the routing key is the event type.
pub const EVENTS_EXCHANGE: &str = "finch.events";
/// Quorum queue the workers consume.
pub const WORK_QUEUE: &str = "finch.events.work";
/// Exchange for events that could not be processed.
pub const DEAD_LETTER_EXCHANGE: &str = "finch.events.dlx";
/// Where dead-lettered events wait for an operator.
pub const DEAD_LETTER_QUEUE: &str = "finch.events.dlq";

/// Message header names: part of the contract with workers and DLQ tooling.
pub mod headers {
    pub const CONNECTION_ID: &str = "connection_id";
    pub const DEAD_LETTER_REASON: &str = "dead_letter_reason";
}

/// Routing key of messages the ingress dead-letters itself.
pub const UNPARSEABLE: &str = "unparseable";

/// Deliveries after which the broker dead-letters a message that keeps
/// crashing consumers (a poison message), instead of redelivering it forever.
const WORK_QUEUE_DELIVERY_LIMIT: i64 = 20;

pub async fn connect(amqp_url: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name("finch-webhooks".into());
    Connection::connect(amqp_url, properties).await
}

/// Declares exchanges, queues and bindings; safe to repeat, and every role
/// does it on connect so that start order never matters.
pub async fn declare_topology(connection: &Connection) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;

    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut work_arguments = quorum();
    work_arguments.insert(
        "x-dead-letter-exchange".into(),
        string(DEAD_LETTER_EXCHANGE),
    );
    work_arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(WORK_QUEUE_DELIVERY_LIMIT),
    );
    channel
        .queue_declare(WORK_QUEUE.into(), durable_queue, work_arguments)
        .await?;
    channel
        .queue_declare(DEAD_LETTER_QUEUE.into(), durable_queue, quorum())
        .await?;

    channel
        .queue_bind(
            WORK_QUEUE.into(),
            EVENTS_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.close(200, "topology declared".into()).await.ok();
    Ok(())
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}

pub(crate) fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub(crate) fn short(value: &str) -> ShortString {
    ShortString::from(value)
}
