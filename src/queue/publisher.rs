//! Persistent, mandatory publishing with publisher confirms, pipelined: a
//! batch's frames all go out before any confirm is awaited, so a batch costs
//! one broker round trip rather than one per message.

use bytes::Bytes;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use tracing::Instrument as _;

use super::{headers, short, string, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE};
use crate::telemetry::{self, TRACEPARENT};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// An event on its way to the broker.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    pub body: Bytes,
    /// Events with a reason go to the dead-letter exchange instead of the work exchange.
    pub dead_letter_reason: Option<String>,
    /// Trace context of the delivery; the publish span becomes its child.
    pub traceparent: Option<String>,
}

impl OutgoingEvent {
    fn destination(&self) -> (&'static str, &str) {
        match (&self.dead_letter_reason, &self.event_type) {
            (Some(reason), _) => (DEAD_LETTER_EXCHANGE, reason.as_str()),
            (None, Some(event_type)) => (EVENTS_EXCHANGE, event_type.as_str()),
            (None, None) => (DEAD_LETTER_EXCHANGE, super::UNPARSEABLE),
        }
    }

    fn properties(&self, traceparent: Option<String>) -> BasicProperties {
        let mut table = FieldTable::default();
        if let Some(traceparent) = traceparent {
            table.insert(TRACEPARENT.into(), string(&traceparent));
        }
        if let Some(connection_id) = &self.connection_id {
            table.insert(headers::CONNECTION_ID.into(), string(connection_id));
        }
        if let Some(reason) = &self.dead_letter_reason {
            table.insert(headers::DEAD_LETTER_REASON.into(), string(reason));
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(short("application/json"))
            .with_message_id(short(&self.event_id))
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_headers(table);
        if let Some(event_type) = &self.event_type {
            properties = properties.with_type(short(event_type));
        }
        properties
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for the message (returned as unroutable)")]
    Unroutable,
}

/// A confirm-mode channel. Cheap to share: lapin channels are thread-safe.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes every event and waits for the broker's verdict on each; the
    /// results are in the order of `events`.
    pub async fn publish_all(&self, events: &[OutgoingEvent]) -> Vec<Result<(), PublishError>> {
        let mut confirms = Vec::with_capacity(events.len());
        // One producer span per event, in the event's trace, open until its confirm.
        let mut spans = Vec::with_capacity(events.len());
        for event in events {
            let (exchange, routing_key) = event.destination();
            let span = tracing::info_span!(
                "publish",
                otel.kind = "producer",
                otel.name = format!("{exchange} publish"),
                messaging.system = "rabbitmq",
                messaging.destination.name = exchange,
                messaging.rabbitmq.destination.routing_key = routing_key,
                event_id = %event.event_id,
            );
            telemetry::continue_trace(&span, event.traceparent.as_deref());
            let traceparent =
                telemetry::traceparent_of(&span).or_else(|| event.traceparent.clone());
            let sent = self
                .channel
                .basic_publish(
                    short(exchange),
                    short(routing_key),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &event.body,
                    event.properties(traceparent),
                )
                .instrument(span.clone())
                .await;
            confirms.push(sent);
            spans.push(span);
        }
        join_all(confirms.into_iter().zip(spans).map(|(sent, span)| {
            async move {
                let confirmation = sent?.await?;
                if confirmation.is_nack() {
                    return Err(PublishError::Nacked);
                }
                if confirmation.take_message().is_some() {
                    return Err(PublishError::Unroutable);
                }
                Ok(())
            }
            .instrument(span)
        }))
        .await
    }
}
