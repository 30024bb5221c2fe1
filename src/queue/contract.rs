//! The message contract between the ingress, the workers, the DLQ tooling and
//! anyone reading the queues: header names, dead-letter reasons, the resync
//! event, and typed access to header values.
//!
//! Producers differ in how they encode a header (the broker, older versions,
//! other clients), so readers accept any integer width and any string kind;
//! writers always use long strings and 64-bit integers.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

/// Message header names. The ingress sets `connection_id` and `traceparent`
/// (and `dead_letter_reason` for what it dead-letters itself); the worker's
/// dead-letter and retry messages carry the rest; the DLQ tools read them all.
pub mod headers {
    pub const CONNECTION_ID: &str = "connection_id";
    pub const DEAD_LETTER_REASON: &str = "dead_letter_reason";
    pub const DEAD_LETTERED_AT: &str = "dead_lettered_at";
    pub const ATTEMPTS: &str = "attempts";
    pub const HTTP_STATUS: &str = "http_status";
    pub const FINCH_CODE: &str = "finch_code";
    pub const FINCH_REQUEST_ID: &str = "finch_request_id";
    pub const LAST_ERROR: &str = "last_error";
    pub const ERROR_HISTORY: &str = "error_history";
    pub const REPLAY_COUNT: &str = "replay_count";
    pub const TRACEPARENT: &str = crate::telemetry::TRACEPARENT;
    /// Added by replays: when the most recent one republished the message.
    pub const REPLAYED_AT: &str = "replayed_at";
    /// RabbitMQ's record of the broker dead-lettering a message.
    pub const X_DEATH: &str = "x-death";
}

/// Dead-letter reasons: the `dead_letter_reason` header and the routing key
/// on the dead-letter exchange.
pub mod reasons {
    pub const UNKNOWN_CONNECTION: &str = "unknown_connection";
    pub const REAUTHENTICATE_USER: &str = "reauthenticate_user";
    pub const FINCH_CLIENT_ERROR: &str = "finch_client_error";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// Not a Finch event (no id, no type, not JSON); the ingress
    /// dead-letters these itself.
    pub const UNPARSEABLE: &str = "unparseable";
    /// A Finch event whose `event_type` or `connection_id` cannot travel
    /// in an AMQP routing key or short string (over 255 bytes); the
    /// ingress stores it and dead-letters it itself.
    pub const INVALID_ENVELOPE: &str = "invalid_envelope";
    /// The worker panicked while handling the message: a bug, kept for a
    /// replay once it is fixed.
    pub const INTERNAL_ERROR: &str = "internal_error";
}

/// Longest value an AMQP short string holds: routing keys, the `type` and
/// `message_id` properties.
pub const SHORT_STRING_MAX: usize = 255;

/// Whether an event's type and connection can travel as a routing key and
/// short-string properties, so it can go through the work exchange.
pub fn fits_amqp(event_type: &str, connection_id: Option<&str>) -> bool {
    event_type.len() <= SHORT_STRING_MAX
        && connection_id.is_none_or(|id| id.len() <= SHORT_STRING_MAX)
}

/// Event type of the synthetic message `connections resync` and `connections
/// add` publish to ask for a full sync.
pub const RESYNC_EVENT_TYPE: &str = "finch_webhooks.resync";

/// The type of the messages the sweep scheduler queues: reconcile one
/// connection with what Finch serves, in the budget events leave free.
pub const SWEEP_EVENT_TYPE: &str = "finch_webhooks.sweep";

/// Most entries kept in the `error_history` header.
pub const ERROR_HISTORY_CAP: usize = 20;

/// Content type of every event body.
pub const JSON: &str = "application/json";

/// Typed reads and writes of a header table.
pub trait Headers {
    /// A text header, whatever string kind carries it.
    fn text(&self, name: &str) -> Option<String>;
    /// An integer header of any width, or digits sent as text.
    fn int(&self, name: &str) -> Option<i64>;
    /// A list of texts; a single text counts as a list of one.
    fn texts(&self, name: &str) -> Vec<String>;
    fn set_text(&mut self, name: &'static str, value: &str);
    fn set_int(&mut self, name: &'static str, value: i64);
    fn set_texts(&mut self, name: &'static str, values: &[String]);
}

impl Headers for FieldTable {
    fn text(&self, name: &str) -> Option<String> {
        self.inner().get(name).and_then(text)
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.inner().get(name).and_then(int)
    }

    fn texts(&self, name: &str) -> Vec<String> {
        match self.inner().get(name) {
            Some(AMQPValue::FieldArray(values)) => {
                values.as_slice().iter().filter_map(text).collect()
            }
            Some(value) => text(value).into_iter().collect(),
            None => Vec::new(),
        }
    }

    fn set_text(&mut self, name: &'static str, value: &str) {
        self.insert(ShortString::from(name), string(value));
    }

    fn set_int(&mut self, name: &'static str, value: i64) {
        self.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
    }

    fn set_texts(&mut self, name: &'static str, values: &[String]) {
        let values: Vec<AMQPValue> = values.iter().map(|value| string(value)).collect();
        self.insert(
            ShortString::from(name),
            AMQPValue::FieldArray(FieldArray::from(values)),
        );
    }
}

/// The header value of a text: a long string, which has no length limit.
pub fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A header value read as text, whatever string kind carries it.
pub fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        AMQPValue::ByteArray(bytes) => Some(String::from_utf8_lossy(bytes.as_slice()).into_owned()),
        _ => None,
    }
}

/// A header value read as an integer: any width, or digits sent as text.
pub fn int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => text(value)?.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_and_digits_as_text_read_alike() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::ShortShortUInt(7));
        table.insert("b".into(), AMQPValue::ShortInt(-7));
        table.insert("c".into(), AMQPValue::LongUInt(70_000));
        table.insert("d".into(), string(" 42 "));
        table.insert("e".into(), AMQPValue::Boolean(true));
        table.set_int("f", i64::MAX);
        assert_eq!(table.int("a"), Some(7));
        assert_eq!(table.int("b"), Some(-7));
        assert_eq!(table.int("c"), Some(70_000));
        assert_eq!(table.int("d"), Some(42));
        assert_eq!(table.int("e"), None);
        assert_eq!(table.int("f"), Some(i64::MAX));
        assert_eq!(table.int("missing"), None);
    }

    #[test]
    fn texts_read_back_as_written_and_any_string_kind_reads_as_text() {
        let mut table = FieldTable::default();
        table.set_text(headers::CONNECTION_ID, "conn-1");
        table.set_texts(
            headers::ERROR_HISTORY,
            &["first".to_owned(), "second".to_owned()],
        );
        table.insert("short".into(), AMQPValue::ShortString("s".into()));
        table.insert("bytes".into(), AMQPValue::ByteArray(b"b".to_vec().into()));
        assert_eq!(
            table.text(headers::CONNECTION_ID).as_deref(),
            Some("conn-1")
        );
        assert_eq!(table.texts(headers::ERROR_HISTORY), ["first", "second"]);
        assert_eq!(table.texts(headers::CONNECTION_ID), ["conn-1"]);
        assert_eq!(table.texts("missing"), Vec::<String>::new());
        assert_eq!(table.text("short").as_deref(), Some("s"));
        assert_eq!(table.text("bytes").as_deref(), Some("b"));
    }
}
