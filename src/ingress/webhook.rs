//! `POST /webhooks/finch`: verify, store once, answer.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use super::error::{IngressError, Result};
use super::pipeline::Stored;
use super::AppState;
use crate::metrics::ReasonLabel;
use crate::queue::contract::fits_amqp;
use crate::queue::contract::reasons::{INVALID_ENVELOPE, UNPARSEABLE};
use crate::store::events::NewEvent;
use crate::store::StoreError;
use crate::telemetry;
use tracing::Instrument as _;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub status: ReceiptStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Accepted,
    Duplicate,
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Receipt>> {
    let started = Instant::now();
    let span = tracing::info_span!(
        "webhook",
        otel.kind = "server",
        otel.name = "POST /webhooks/finch",
        http.request.method = "POST",
        http.route = "/webhooks/finch",
        http.response.status_code = tracing::field::Empty,
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        connection_id = tracing::field::Empty,
    );
    let result = receive_inner(&state, &headers, body)
        .instrument(span.clone())
        .await;
    let status = match &result {
        Ok(_) => 200,
        Err(error) => error.status().as_u16(),
    };
    span.record("http.response.status_code", status);
    let outcome = match &result {
        Ok(receipt) if receipt.status == ReceiptStatus::Duplicate => "duplicate",
        Ok(receipt) => match receipt.dead_letter_reason.as_deref() {
            Some(INVALID_ENVELOPE) => INVALID_ENVELOPE,
            Some(_) => "unparseable",
            None => "accepted",
        },
        Err(error) => error.outcome(),
    };
    state.metrics.count_request(outcome);
    state.tally.bump(match &result {
        Err(IngressError::Verify(error)) => error.code(),
        _ => outcome,
    });
    state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    result.map(Json)
}

async fn receive_inner(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Receipt> {
    let limit = state.max_body_bytes;
    // Refuse a declared oversized body before reading a byte of it.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    {
        if length > limit as u64 {
            return Err(IngressError::PayloadTooLarge { limit });
        }
    }
    let body = read_body(body, limit).await?;

    let now = (state.clock)();
    let verified = state
        .verifier
        .verify(headers, &body, now)
        .inspect_err(|error| {
            state
                .metrics
                .verification_failures
                .get_or_create(&ReasonLabel {
                    reason: error.code(),
                })
                .inc();
            tracing::info!(reason = error.code(), "webhook refused");
        })?;

    let envelope = Envelope::parse(&body);
    // Stored either way, so nothing Finch sent is lost; what cannot be
    // routed goes straight to the DLQ instead of stalling the publisher.
    let dead_letter_reason = match &envelope {
        None => Some(UNPARSEABLE),
        Some(envelope) if !fits_amqp(&envelope.event_type, envelope.connection_id.as_deref()) => {
            Some(INVALID_ENVELOPE)
        }
        Some(_) => None,
    };
    let (event_type, connection_id) = envelope
        .map(|e| (Some(e.event_type), e.connection_id))
        .unwrap_or_default();
    let span = tracing::Span::current();
    span.record("event_id", verified.event_id.as_str());
    if let Some(event_type) = &event_type {
        span.record("event_type", event_type.as_str());
    }
    if let Some(connection_id) = &connection_id {
        span.record("connection_id", connection_id.as_str());
    }
    let event = NewEvent {
        event_id: verified.event_id,
        event_type,
        connection_id,
        finch_timestamp: verified.timestamp,
        body,
        dead_letter_reason,
        traceparent: telemetry::traceparent_of(&span),
    };
    let commit = tracing::info_span!(
        "commit webhook_events",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = "INSERT",
        db.collection.name = "webhook_events",
    );

    // The step's line names the event itself: text logs leave span fields out.
    let (event_id, event_type, connection_id) = (
        event.event_id.clone(),
        event.event_type.clone().unwrap_or_default(),
        event.connection_id.clone().unwrap_or_default(),
    );
    match state.intake.submit(event).instrument(commit).await {
        Ok(Stored::New) => {
            if let Some(reason) = dead_letter_reason {
                tracing::warn!(
                    reason,
                    "signed webhook cannot be routed as a Finch event; stored and dead-lettered"
                );
            } else {
                tracing::info!(%event_id, %event_type, %connection_id, "received");
            }
            Ok(Receipt {
                status: ReceiptStatus::Accepted,
                dead_letter_reason: dead_letter_reason.map(str::to_owned),
            })
        }
        Ok(Stored::Duplicate) => {
            state.metrics.duplicates.inc();
            tracing::debug!("duplicate webhook delivery");
            Ok(Receipt {
                status: ReceiptStatus::Duplicate,
                dead_letter_reason: None,
            })
        }
        Err(error) => match *error {
            StoreError::Unavailable(_) => Err(IngressError::Unavailable {
                retry_after_secs: state.retry_after_secs,
            }),
            // A bug: logged in full as a 500, never described to Finch.
            StoreError::Query(_) => Err(IngressError::Internal(
                anyhow::Error::new(error).context("storing the event"),
            )),
        },
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(IngressError::PayloadTooLarge { limit })
        }
        Err(_) => Err(IngressError::UnreadableBody),
    }
}

/// The two fields the ingress needs; the rest of the body is not examined.
#[derive(Debug, PartialEq, Eq)]
struct Envelope {
    event_type: String,
    connection_id: Option<String>,
}

impl Envelope {
    /// `None` for anything that is not a JSON object with a string `event_type`.
    fn parse(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow)]
            event_type: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            connection_id: Option<serde_json::Value>,
        }
        // Derived struct parsing would also accept a JSON array.
        let first = body.iter().find(|byte| !byte.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        let fields: Fields = serde_json::from_slice(body).ok()?;
        let event_type = fields.event_type?;
        // Postgres text cannot hold NUL; such a value is not a Finch event type.
        if event_type.is_empty() || event_type.contains('\0') {
            return None;
        }
        let connection_id = fields
            .connection_id
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty() && !id.contains('\0'))
            .map(str::to_owned);
        Some(Self {
            event_type: event_type.into_owned(),
            connection_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Envelope;

    #[test]
    fn envelope_takes_event_type_and_connection_id() {
        let parsed = Envelope::parse(
            br#"{"event_type":"directory.created","connection_id":"c1","data":{"x":[1]}}"#,
        );
        assert_eq!(
            parsed,
            Some(Envelope {
                event_type: "directory.created".into(),
                connection_id: Some("c1".into())
            })
        );
        let old =
            Envelope::parse(br#"{"event_type":"company.updated","company_id":"x","data":null}"#)
                .unwrap();
        assert_eq!(old.connection_id, None);
    }

    #[test]
    fn non_events_are_unparseable() {
        for body in [
            &b"[\"directory.created\"]"[..],
            b"\"text\"",
            b"not json",
            b"{\"data\":{}}",
            b"{\"event_type\":42}",
            b"{\"event_type\":\"\"}",
            b"{\"event_type\":\"a\\u0000b\"}",
            b"",
        ] {
            assert_eq!(
                Envelope::parse(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    mod properties {
        use super::Envelope;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        /// Any JSON value, nested a little.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                ".*".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(".{0,8}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_bytes_get_an_answer_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
                if let Some(envelope) = Envelope::parse(&body) {
                    prop_assert!(!envelope.event_type.is_empty());
                    prop_assert!(!envelope.event_type.contains('\0'));
                }
            }

            #[test]
            fn an_object_is_an_envelope_exactly_when_its_event_type_can_be_stored(
                event_type in ".{0,300}",
                connection_id in any_json(),
                data in any_json(),
            ) {
                let body = json!({
                    "event_type": event_type,
                    "connection_id": connection_id,
                    "data": data,
                });
                let parsed = Envelope::parse(body.to_string().as_bytes());
                let storable = !event_type.is_empty() && !event_type.contains('\0');
                prop_assert_eq!(parsed.is_some(), storable);
                if let Some(envelope) = parsed {
                    prop_assert_eq!(&envelope.event_type, &event_type);
                    let expected = connection_id
                        .as_str()
                        .filter(|id| !id.is_empty() && !id.contains('\0'))
                        .map(str::to_owned);
                    prop_assert_eq!(envelope.connection_id, expected);
                }
            }

            #[test]
            fn anything_but_an_object_is_no_envelope(value in any_json()) {
                prop_assume!(!value.is_object());
                prop_assert!(Envelope::parse(value.to_string().as_bytes()).is_none());
            }
        }
    }
}
