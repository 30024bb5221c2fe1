//! The one confirmed publisher. Every message is persistent and every
//! publish waits for the broker's confirm; a batch is pipelined (all its
//! frames go out before any confirm is awaited), so it costs one broker round
//! trip rather than one per message.
//!
//! Nothing on this path panics on bad input: a value that cannot be an AMQP
//! short string (255 bytes at most) is a [`PublishError::TooLong`].

use bytes::Bytes;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tracing::Instrument as _;

use super::contract::{fits_amqp, headers, reasons, Headers as _, JSON, SHORT_STRING_MAX};
use super::{DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE};
use crate::telemetry;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ")]
    Disconnected,
    #[error("RabbitMQ: {0}")]
    Broker(lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for the message (returned as unroutable)")]
    Unroutable,
    #[error("the message's {field} is {bytes} bytes; AMQP allows at most 255")]
    TooLong { field: &'static str, bytes: usize },
}

impl From<lapin::Error> for PublishError {
    fn from(error: lapin::Error) -> Self {
        Self::Broker(error)
    }
}

/// `value` as an AMQP short string; `field` names it in the error.
pub fn short(field: &'static str, value: &str) -> Result<ShortString, PublishError> {
    ShortString::try_new(value).map_err(|_| PublishError::TooLong {
        field,
        bytes: value.len(),
    })
}

/// One message and where it goes.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Set where a queue must take the message: one that no queue takes
    /// comes back as [`PublishError::Unroutable`] instead of vanishing.
    pub mandatory: bool,
    pub body: &'a [u8],
    /// Sent as given, except that the message is always made persistent.
    pub properties: BasicProperties,
}

/// The broker's verdict on one sent message, still to come.
#[must_use = "a publish is only done once its confirm is awaited"]
pub struct Confirm(PublisherConfirm);

impl Confirm {
    /// Waits for the broker: `Ok` once it has the message and a queue took
    /// it (or none had to).
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.0.await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                Err(PublishError::Unroutable)
            }
            Confirmation::Nack(None) => Err(PublishError::Nacked),
            // Only a channel without confirms answers this; `open` selects them.
            Confirmation::NotRequested => Ok(()),
        }
    }
}

/// A confirm-mode channel. Cheap to clone and share: lapin channels are
/// thread-safe.
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

    /// Closes the channel once a short-lived publisher is done. Dropping the
    /// last clone closes it too, but from the background, possibly after its
    /// owner already moved on to the connection.
    pub async fn close(self) {
        self.channel.close(200, "done".into()).await.ok();
    }

    /// Sends one message without waiting for the broker; await the returned
    /// [`Confirm`] for its verdict. Sending many before awaiting any is what
    /// makes a batch cheap.
    pub async fn send(&self, envelope: Envelope<'_>) -> Result<Confirm, PublishError> {
        let exchange = short("exchange", envelope.exchange)?;
        let routing_key = short("routing key", envelope.routing_key)?;
        let confirm = self
            .channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: envelope.mandatory,
                    ..BasicPublishOptions::default()
                },
                envelope.body,
                envelope.properties.with_delivery_mode(PERSISTENT),
            )
            .await?;
        Ok(Confirm(confirm))
    }

    /// Sends one message and waits for the broker's verdict.
    pub async fn publish(&self, envelope: Envelope<'_>) -> Result<(), PublishError> {
        self.send(envelope).await?.wait().await
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
            let sent = match event.properties(traceparent) {
                Ok(properties) => {
                    self.send(Envelope {
                        exchange,
                        routing_key,
                        mandatory: true,
                        body: &event.body,
                        properties,
                    })
                    .instrument(span.clone())
                    .await
                }
                Err(error) => Err(error),
            };
            confirms.push(sent);
            spans.push(span);
        }
        join_all(
            confirms
                .into_iter()
                .zip(spans)
                .map(|(sent, span)| async move { sent?.wait().await }.instrument(span)),
        )
        .await
    }
}

/// A webhook event on its way to the broker.
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
    /// Why the event goes to the dead-letter exchange, if it does: the
    /// stored reason, or what the event itself makes impossible. Events
    /// stored before the ingress checked them get the same treatment here.
    fn dead_letter_reason(&self) -> Option<&str> {
        match (&self.dead_letter_reason, &self.event_type) {
            (Some(reason), _) => Some(reason.as_str()),
            (None, None) => Some(reasons::UNPARSEABLE),
            (None, Some(event_type)) if !fits_amqp(event_type, self.connection_id.as_deref()) => {
                Some(reasons::INVALID_ENVELOPE)
            }
            (None, Some(_)) => None,
        }
    }

    fn destination(&self) -> (&'static str, &str) {
        match (self.dead_letter_reason(), &self.event_type) {
            (Some(reason), _) => (DEAD_LETTER_EXCHANGE, reason),
            (None, Some(event_type)) => (EVENTS_EXCHANGE, event_type.as_str()),
            (None, None) => (DEAD_LETTER_EXCHANGE, reasons::UNPARSEABLE),
        }
    }

    /// Values too long for their AMQP field are left out rather than
    /// failing the publish: the body still carries them, and an event that
    /// cannot be published would stay in the outbox for ever.
    fn properties(&self, traceparent: Option<String>) -> Result<BasicProperties, PublishError> {
        let fits = |value: &&String| value.len() <= SHORT_STRING_MAX;
        let mut table = FieldTable::default();
        if let Some(traceparent) = traceparent.as_ref().filter(fits) {
            table.set_text(headers::TRACEPARENT, traceparent);
        }
        if let Some(connection_id) = self.connection_id.as_ref().filter(fits) {
            table.set_text(headers::CONNECTION_ID, connection_id);
        }
        if let Some(reason) = self.dead_letter_reason() {
            table.set_text(headers::DEAD_LETTER_REASON, reason);
        }
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        let mut properties = BasicProperties::default()
            .with_content_type(short("content type", JSON)?)
            .with_message_id(short("event id", &self.event_id)?)
            .with_timestamp(timestamp)
            .with_headers(table);
        if let Some(event_type) = self.event_type.as_ref().filter(fits) {
            properties = properties.with_type(short("event type", event_type)?);
        }
        Ok(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: Option<&str>, connection_id: Option<&str>) -> OutgoingEvent {
        OutgoingEvent {
            event_id: "msg_1".into(),
            event_type: event_type.map(str::to_owned),
            connection_id: connection_id.map(str::to_owned),
            body: Bytes::from_static(b"{}"),
            dead_letter_reason: None,
            traceparent: None,
        }
    }

    #[test]
    fn values_too_long_for_amqp_dead_letter_the_event_instead_of_failing_its_publish() {
        let long = "x".repeat(SHORT_STRING_MAX + 1);
        for (event_type, connection_id) in [(long.as_str(), "c1"), ("directory.created", &long)] {
            let event = event(Some(event_type), Some(connection_id));
            assert_eq!(
                event.destination(),
                (DEAD_LETTER_EXCHANGE, reasons::INVALID_ENVELOPE)
            );
            let properties = event.properties(None).expect("properties are built");
            let table = properties.headers().clone().unwrap_or_default();
            assert_eq!(
                table.text(headers::DEAD_LETTER_REASON).as_deref(),
                Some(reasons::INVALID_ENVELOPE)
            );
        }
        let fine = event(Some("directory.created"), Some("c1"));
        assert_eq!(fine.destination(), (EVENTS_EXCHANGE, "directory.created"));
    }
}
