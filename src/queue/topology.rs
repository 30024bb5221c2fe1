//! The exchanges, queues and bindings every role declares.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

use super::contract::string;

/// Topic exchange for live events; the routing key is the event type.
pub const EVENTS_EXCHANGE: &str = "finch.events";
/// Quorum queue the workers consume.
pub const WORK_QUEUE: &str = "finch.events.work";
/// Exchange for events that could not be processed.
pub const DEAD_LETTER_EXCHANGE: &str = "finch.events.dlx";
/// Where dead-lettered events wait for an operator.
pub const DEAD_LETTER_QUEUE: &str = "finch.events.dlq";
/// Prefix of the delayed-retry queues, followed by the delay (`5s`, `2m`, ...).
pub const RETRY_QUEUE_PREFIX: &str = "finch.events.retry.";
/// Topic exchange on which workers announce committed data changes.
pub const SYNCED_EXCHANGE: &str = "finch.synced";

/// Name of the retry queue that holds messages for `delay`.
pub fn retry_queue_name(delay: Duration) -> String {
    let millis = delay.as_millis();
    let suffix = if millis.is_multiple_of(60_000) {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    };
    format!("{RETRY_QUEUE_PREFIX}{suffix}")
}

/// Deliveries after which the broker dead-letters a message that keeps
/// crashing consumers (a poison message), instead of redelivering it forever.
const WORK_QUEUE_DELIVERY_LIMIT: i64 = 20;

/// Declares exchanges, queues and bindings; safe to repeat, and every role
/// does it on connect so that start order never matters.
pub async fn declare_topology(
    connection: &Connection,
    retry_delays: &[Duration],
) -> lapin::Result<()> {
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
    channel
        .exchange_declare(
            SYNCED_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;

    let mut work_arguments = dead_lettering(DEAD_LETTER_EXCHANGE, None);
    work_arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(WORK_QUEUE_DELIVERY_LIMIT),
    );
    channel
        .queue_declare(WORK_QUEUE.into(), durable_queue, work_arguments)
        .await?;
    channel
        .queue_declare(DEAD_LETTER_QUEUE.into(), durable_queue, classic())
        .await?;
    for delay in retry_delays {
        let mut arguments = dead_lettering("", Some(WORK_QUEUE));
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(delay.as_millis() as i64),
        );
        channel
            .queue_declare(
                retry_queue_name(*delay).as_str().into(),
                durable_queue,
                arguments,
            )
            .await?;
    }

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

/// Quorum queue arguments for safe dead-lettering into `exchange`.
fn dead_lettering(exchange: &str, routing_key: Option<&str>) -> FieldTable {
    let mut arguments = quorum();
    arguments.insert("x-dead-letter-exchange".into(), string(exchange));
    if let Some(routing_key) = routing_key {
        arguments.insert("x-dead-letter-routing-key".into(), string(routing_key));
    }
    arguments.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    // At-least-once dead-lettering requires publishers to be refused, not
    // messages dropped, when a queue is full.
    arguments.insert("x-overflow".into(), string("reject-publish"));
    arguments
}

/// The DLQ is classic: a quorum queue hands one consumer at most 65,535
/// unacknowledged messages (2,000 with an unlimited prefetch) and requeues
/// explicitly nacked ones out of order, so a large DLQ could not be read
/// whole without disturbing it (see docs/operations.md, "Why the DLQ is a classic queue").
fn classic() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("classic"));
    arguments
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}
