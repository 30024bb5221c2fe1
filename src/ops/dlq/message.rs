//! Decoding a dead-lettered message into what an operator needs to read.
//!
//! Three producers write to the DLQ, each with a different amount of detail:
//! the worker (full set of headers), the ingress (only `dead_letter_reason =
//! unparseable`), and RabbitMQ itself when the work queue's delivery limit is
//! reached (only its `x-death` header). Every field is therefore optional and
//! decoding never fails.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone as _, Utc};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::Value;

use crate::queue::contract::{headers, int, text, Headers as _};

/// Reason shown when a message carries no reason at all.
pub const UNKNOWN_REASON: &str = "unknown";

/// One message of the DLQ, decoded. The body is kept only where it is needed
/// (`show`, replay); listings drop it so that PII never reaches them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Finch event id (the message id); `None` if the producer set none.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub connection_id: Option<String>,
    /// Why it was dead-lettered: the worker's or ingress's reason, else the
    /// broker's (`delivery_limit`, `rejected`, ...) from `x-death`.
    pub reason: String,
    /// Who decided: `application` (worker or ingress header) or `broker` (`x-death`).
    pub reason_source: ReasonSource,
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// When the message was first published (the AMQP timestamp property).
    pub published_at: Option<DateTime<Utc>>,
    pub attempts: Option<i64>,
    pub http_status: Option<i64>,
    pub finch_code: Option<String>,
    pub finch_request_id: Option<String>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub error_history: Vec<String>,
    pub replay_count: i64,
    pub replayed_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
    pub content_type: Option<String>,
    /// Routing key it was dead-lettered with.
    pub routing_key: String,
    /// Every header, converted to JSON, for the full story.
    #[schema(value_type = Object)]
    pub headers: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonSource {
    Application,
    Broker,
    Unknown,
}

impl DeadLetter {
    /// Decodes the properties of a DLQ delivery; never fails.
    pub fn decode(routing_key: &str, properties: &BasicProperties) -> Self {
        let empty = FieldTable::default();
        let table = properties.headers().as_ref().unwrap_or(&empty);

        let death = table.inner().get(headers::X_DEATH).and_then(latest_death);
        let (reason, reason_source) = match (table.text(headers::DEAD_LETTER_REASON), &death) {
            (Some(reason), _) => (reason, ReasonSource::Application),
            (None, Some(death)) if death.reason.is_some() => (
                death.reason.clone().unwrap_or_default(),
                ReasonSource::Broker,
            ),
            _ => (UNKNOWN_REASON.to_owned(), ReasonSource::Unknown),
        };
        let dead_lettered_at = table
            .text(headers::DEAD_LETTERED_AT)
            .and_then(|value| parse_time(&value))
            .or_else(|| death.as_ref().and_then(|death| death.time));

        Self {
            event_id: properties.message_id().as_ref().map(|id| id.to_string()),
            event_type: properties.kind().as_ref().map(|kind| kind.to_string()),
            connection_id: table.text(headers::CONNECTION_ID),
            reason,
            reason_source,
            dead_lettered_at,
            published_at: properties.timestamp().and_then(unix_time),
            attempts: table.int(headers::ATTEMPTS),
            http_status: table.int(headers::HTTP_STATUS),
            finch_code: table.text(headers::FINCH_CODE),
            finch_request_id: table.text(headers::FINCH_REQUEST_ID),
            last_error: table.text(headers::LAST_ERROR),
            error_history: table.texts(headers::ERROR_HISTORY),
            replay_count: table.int(headers::REPLAY_COUNT).unwrap_or(0),
            replayed_at: table
                .text(headers::REPLAYED_AT)
                .and_then(|value| parse_time(&value)),
            traceparent: table.text(headers::TRACEPARENT),
            content_type: properties
                .content_type()
                .as_ref()
                .map(|value| value.to_string()),
            routing_key: routing_key.to_owned(),
            headers: table
                .inner()
                .iter()
                .map(|(name, value)| (name.to_string(), to_json(value)))
                .collect(),
        }
    }

    /// Time since it was dead-lettered (or published, if the producer did not
    /// say when it gave up).
    pub fn age(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.dead_lettered_at
            .or(self.published_at)
            .map(|then| now - then)
    }
}

/// The newest entry of RabbitMQ's `x-death` list (it keeps the latest first).
struct Death {
    reason: Option<String>,
    time: Option<DateTime<Utc>>,
}

fn latest_death(value: &AMQPValue) -> Option<Death> {
    let AMQPValue::FieldArray(entries) = value else {
        return None;
    };
    let AMQPValue::FieldTable(entry) = entries.as_slice().first()? else {
        return None;
    };
    Some(Death {
        reason: entry.text("reason"),
        time: match entry.inner().get("time") {
            Some(AMQPValue::Timestamp(seconds)) => unix_time(*seconds),
            _ => None,
        },
    })
}

fn unix_time(seconds: u64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(i64::try_from(seconds).ok()?, 0).single()
}

fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// A header value as JSON, for display; timestamps become RFC 3339 strings.
pub fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(decimal) => {
            let scale = i32::from(decimal.scale);
            Value::from(f64::from(decimal.value) / 10f64.powi(scale))
        }
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) | AMQPValue::ByteArray(_) => {
            text(value).map_or(Value::Null, Value::String)
        }
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(name, value)| (name.to_string(), to_json(value)))
                .collect(),
        ),
        AMQPValue::Timestamp(seconds) => unix_time(*seconds)
            .map_or(Value::from(*seconds), |time| {
                Value::String(time.to_rfc3339())
            }),
        AMQPValue::Void => Value::Null,
        _ => int(value).map_or(Value::Null, Value::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::contract::string;
    use lapin::types::FieldArray;

    fn properties(table: FieldTable) -> BasicProperties {
        BasicProperties::default()
            .with_message_id("evt_1".into())
            .with_type("employment.updated".into())
            .with_timestamp(1_700_000_000)
            .with_headers(table)
    }

    #[test]
    fn worker_headers_are_read_whatever_integer_width_was_used() {
        let mut table = FieldTable::default();
        table.insert("connection_id".into(), string("conn-1"));
        table.insert("dead_letter_reason".into(), string("reauthenticate_user"));
        table.insert("dead_lettered_at".into(), string("2026-01-02T03:04:05Z"));
        table.insert("attempts".into(), AMQPValue::LongLongInt(3));
        table.insert("http_status".into(), AMQPValue::ShortInt(401));
        table.insert("replay_count".into(), AMQPValue::LongInt(2));
        table.insert(
            "error_history".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![string("first"), string("second")])),
        );
        let letter = DeadLetter::decode("reauthenticate_user", &properties(table));
        assert_eq!(letter.event_id.as_deref(), Some("evt_1"));
        assert_eq!(letter.event_type.as_deref(), Some("employment.updated"));
        assert_eq!(letter.connection_id.as_deref(), Some("conn-1"));
        assert_eq!(letter.reason, "reauthenticate_user");
        assert_eq!(letter.reason_source, ReasonSource::Application);
        assert_eq!(
            letter.dead_lettered_at.map(|time| time.to_rfc3339()),
            Some("2026-01-02T03:04:05+00:00".into())
        );
        assert_eq!(
            (letter.attempts, letter.http_status, letter.replay_count),
            (Some(3), Some(401), 2)
        );
        assert_eq!(letter.error_history, vec!["first", "second"]);
    }

    #[test]
    fn broker_dead_letters_take_their_reason_and_time_from_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), string("delivery_limit"));
        death.insert("queue".into(), string("finch.events.work"));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_100));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let letter = DeadLetter::decode("employment.updated", &properties(table));
        assert_eq!(letter.reason, "delivery_limit");
        assert_eq!(letter.reason_source, ReasonSource::Broker);
        assert_eq!(letter.dead_lettered_at, unix_time(1_700_000_100));
        assert_eq!(letter.replay_count, 0);
        assert_eq!(
            letter.headers["x-death"][0]["queue"],
            Value::from("finch.events.work")
        );
    }

    #[test]
    fn a_message_without_any_header_still_decodes() {
        let letter = DeadLetter::decode("", &BasicProperties::default());
        assert_eq!(letter.reason, UNKNOWN_REASON);
        assert_eq!(letter.event_id, None);
        assert!(letter.headers.is_empty());
        assert_eq!(letter.age(Utc::now()), None);
    }
}
