//! One work-queue message on its way through the worker: what it says, the
//! work it is waiting for, and how that work went.
//!
//! A message may wait on several pieces of work (a full sync is a dozen
//! requests; a pay-statement event waits on its payment's batch). Each piece
//! that finishes settles once; when none is outstanding the message goes to
//! the finalizer, which acknowledges, retries or dead-letters it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use lapin::types::FieldTable;
use lapin::Acker;
use lapin::BasicProperties;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::finch::{ErrorClass, FinchError};
use crate::queue::contract::{headers, reasons, Headers as _};

/// Why a piece of work did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub disposition: Disposition,
    pub error: String,
    pub http_status: Option<u16>,
    pub finch_code: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Retry,
    DeadLetter(&'static str),
}

impl Failure {
    pub fn retry(error: impl Into<String>) -> Self {
        Self::plain(Disposition::Retry, error)
    }

    pub fn dead_letter(reason: &'static str, error: impl Into<String>) -> Self {
        Self::plain(Disposition::DeadLetter(reason), error)
    }

    fn plain(disposition: Disposition, error: impl Into<String>) -> Self {
        Self {
            disposition,
            error: error.into(),
            http_status: None,
            finch_code: None,
            request_id: None,
        }
    }

    pub fn from_finch(error: &FinchError) -> Self {
        let disposition = match error.class() {
            ErrorClass::Retry => Disposition::Retry,
            ErrorClass::Reauthenticate => Disposition::DeadLetter(reasons::REAUTHENTICATE_USER),
            ErrorClass::Client => Disposition::DeadLetter(reasons::FINCH_CLIENT_ERROR),
        };
        Self {
            disposition,
            error: error.to_string(),
            http_status: error.status(),
            finch_code: error.finch_code().map(str::to_owned),
            request_id: error.request_id().map(str::to_owned),
        }
    }
}

/// What became of a message, once all its work is settled.
#[derive(Debug, Clone)]
pub enum Verdict {
    Done { note: Option<String> },
    Failed(Failure),
}

struct State {
    outstanding: usize,
    failure: Option<Failure>,
    note: Option<String>,
    sent: bool,
}

pub struct Message {
    pub event_id: String,
    pub event_type: String,
    pub connection_id: Option<String>,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// Failed processing attempts before this delivery (our `attempts` header).
    pub previous_attempts: i64,
    pub error_history: Vec<String>,
    pub replay_count: i64,
    /// The processing span: a child of the ingress's trace (from the
    /// `traceparent` header), or linked to it for a replay. Closes when the
    /// message is dropped, after it was settled.
    pub span: tracing::Span,
    label: OnceLock<&'static str>,
    pub received_at: Instant,
    pub acker: Acker,
    state: Mutex<State>,
    finalizer: mpsc::UnboundedSender<Arc<Message>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No body: it may name employees.
        f.debug_struct("Message")
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

/// The parts of a delivery the worker needs, before any decision.
pub struct Parsed {
    pub event_id: String,
    pub event_type: String,
    pub connection_id: Option<String>,
    pub body: Option<Value>,
}

impl Message {
    /// Reads a delivery. The message starts with one outstanding settlement
    /// (the intake's own), so work attached while it is being routed cannot
    /// finish it early.
    pub fn from_delivery(
        delivery: lapin::message::Delivery,
        finalizer: mpsc::UnboundedSender<Arc<Message>>,
    ) -> (Arc<Self>, Parsed) {
        let properties = delivery.properties.clone();
        let table = properties.headers().clone().unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&delivery.data).ok();
        let event_type = properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str().to_owned())
            .filter(|kind| !kind.is_empty())
            .or_else(|| {
                body.as_ref()
                    .and_then(|b| b.get("event_type"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let connection_id = table.text(headers::CONNECTION_ID).or_else(|| {
            body.as_ref()
                .and_then(|b| b.get("connection_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let event_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let replay_count = table.int(headers::REPLAY_COUNT).unwrap_or(0);
        let span = tracing::info_span!(
            "process",
            otel.kind = "consumer",
            otel.name = format!("{} process", if event_type.is_empty() { "event" } else { &event_type }),
            messaging.system = "rabbitmq",
            messaging.destination.name = crate::queue::WORK_QUEUE,
            event_id = %event_id,
            event_type = %event_type,
            connection_id = connection_id.as_deref().unwrap_or(""),
            replay_count,
        );
        let traceparent = table.text(headers::TRACEPARENT);
        if replay_count > 0 {
            crate::telemetry::link_trace(&span, traceparent.as_deref());
        } else {
            crate::telemetry::continue_trace(&span, traceparent.as_deref());
        }
        let message = Arc::new(Self {
            event_id: event_id.clone(),
            event_type: event_type.clone(),
            connection_id: connection_id.clone(),
            previous_attempts: table.int(headers::ATTEMPTS).unwrap_or(0).max(0),
            error_history: table.texts(headers::ERROR_HISTORY),
            replay_count,
            span,
            body: delivery.data,
            properties,
            label: OnceLock::new(),
            received_at: Instant::now(),
            acker: delivery.acker,
            state: Mutex::new(State {
                outstanding: 1,
                failure: None,
                note: None,
                sent: false,
            }),
            finalizer,
        });
        let parsed = Parsed {
            event_id,
            event_type,
            connection_id,
            body,
        };
        (message, parsed)
    }

    /// Sets the metrics label once the action is known.
    pub fn set_label(&self, label: &'static str) {
        self.label.set(label).ok();
    }

    pub fn label(&self) -> &'static str {
        self.label.get().copied().unwrap_or("other")
    }

    /// This delivery's attempt number.
    pub fn attempt(&self) -> i64 {
        self.previous_attempts + 1
    }

    /// Declares `count` more pieces of work this message waits for.
    pub fn attach(&self, count: usize) {
        self.state.lock().expect("message lock").outstanding += count;
    }

    /// Adds a remark for `webhook_events.last_error` on success (a skip).
    pub fn note(&self, note: impl Into<String>) {
        self.state.lock().expect("message lock").note = Some(note.into());
    }

    /// Records how one piece of work went; the last one hands the message
    /// to the finalizer. A dead-letter outcome outranks a retry.
    pub fn settle(self: &Arc<Self>, outcome: Result<(), Failure>) {
        let finished = {
            let mut state = self.state.lock().expect("message lock");
            if let Err(failure) = outcome {
                let replace = match (&state.failure, failure.disposition) {
                    (None, _) => true,
                    (Some(current), Disposition::DeadLetter(_)) => {
                        current.disposition == Disposition::Retry
                    }
                    (Some(_), Disposition::Retry) => false,
                };
                if replace {
                    state.failure = Some(failure);
                }
            }
            state.outstanding = state.outstanding.saturating_sub(1);
            if state.outstanding == 0 && !state.sent {
                state.sent = true;
                true
            } else {
                false
            }
        };
        if finished {
            // A closed finalizer means shutdown: the unacknowledged message
            // returns to the queue when the channel closes.
            self.finalizer.send(self.clone()).ok();
        }
    }

    pub fn verdict(&self) -> Verdict {
        let state = self.state.lock().expect("message lock");
        match &state.failure {
            Some(failure) => Verdict::Failed(failure.clone()),
            None => Verdict::Done {
                note: state.note.clone(),
            },
        }
    }

    pub fn incoming_headers(&self) -> FieldTable {
        self.properties.headers().clone().unwrap_or_default()
    }
}
