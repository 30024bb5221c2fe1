//! `GET /console/events`: search; `GET /console/events/{id}`: one event's
//! body, lifecycle and trace.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::session::SignedIn;
use super::{ConsoleError, ConsoleState};
use crate::ops::events::{self, EventRecord, EventSearch, EventStatus, EventStep};

const PAGE_SIZE: u32 = 50;

/// The search form; blank fields mean "any".
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct SearchForm {
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    status: String,
    /// Received at or after; RFC 3339, or a date and time as the browser's
    /// `datetime-local` field sends it, read as UTC.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: u32,
}

fn blank_is_none(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn parse_time(field: &str, value: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    let Some(value) = blank_is_none(value) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(&value) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&value, format).ok())
        .map(|at| Some(at.and_utc()))
        .ok_or_else(|| {
            ConsoleError::Invalid(format!(
                "{field}: {value:?} is not a time such as 2026-05-01T12:00 (UTC)"
            ))
        })
}

impl SearchForm {
    fn to_search(&self) -> Result<EventSearch, ConsoleError> {
        let status = match self.status.trim() {
            "" => None,
            wanted => Some(
                EventStatus::ALL
                    .into_iter()
                    .find(|status| status.as_str() == wanted)
                    .ok_or_else(|| ConsoleError::Invalid(format!("status: unknown {wanted:?}")))?,
            ),
        };
        Ok(EventSearch {
            event_id: blank_is_none(&self.event_id),
            event_type: blank_is_none(&self.event_type),
            connection_id: blank_is_none(&self.connection),
            status,
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            page: self.page,
            page_size: PAGE_SIZE,
        })
    }

    /// The query string of the same search on another page.
    fn page_query(&self, page: u32) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("event_id", &self.event_id),
            ("event_type", &self.event_type),
            ("connection", &self.connection),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        query.append_pair("page", &page.to_string());
        query.finish()
    }
}

pub(super) async fn search(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Query(form): Query<SearchForm>,
) -> Result<Response, ConsoleError> {
    let search = form.to_search()?;
    let (found, more) = events::search(&state.pool, &search).await?;
    // An exact id that exists goes straight to its page.
    if let (Some(id), [only]) = (&search.event_id, found.as_slice()) {
        if search.page == 0 && &only.event_id == id {
            return Ok(super::redirect(&format!("/events/{}", encode(id))));
        }
    }
    state.page(
        "events.html",
        &signed_in,
        "events",
        minijinja::context! {
            form => &form,
            statuses => EventStatus::ALL.map(EventStatus::as_str),
            events => found.iter().map(row).collect::<Vec<_>>(),
            page => form.page,
            previous => (form.page > 0).then(|| form.page_query(form.page - 1)),
            next => more.then(|| form.page_query(form.page + 1)),
        },
    )
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn row(record: &EventRecord) -> minijinja::Value {
    minijinja::context! {
        link => encode(&record.event_id),
        ..minijinja::Value::from_serialize(record)
    }
}

/// One step of an event's life.
#[derive(Serialize)]
struct Step {
    at: Option<DateTime<Utc>>,
    what: String,
    /// `ok`, `warn` or `bad`: how the step reads at a glance.
    tone: &'static str,
}

/// The steps in the order the pipeline takes them: each recorded attempt
/// and replay when the event has them, else (events stored before steps were
/// recorded, and those the ingress dead-lettered) what its record keeps.
fn timeline(record: &EventRecord, last_error: Option<&str>, recorded: &[EventStep]) -> Vec<Step> {
    let mut steps = vec![Step {
        at: Some(record.received_at),
        what: "Received and stored".into(),
        tone: "ok",
    }];
    if let Some(at) = record.published_at {
        steps.push(Step {
            at: Some(at),
            what: "Published to RabbitMQ".into(),
            tone: "ok",
        });
    } else {
        steps.push(Step {
            at: None,
            what: "Waiting in the outbox for RabbitMQ".into(),
            tone: "warn",
        });
    }
    if recorded.is_empty() {
        summary(record, last_error, &mut steps);
    } else {
        // The ingress dead-letters what it cannot route before any attempt.
        if !recorded.iter().any(|step| step.kind == "dead_lettered") {
            steps.extend(dead_lettered(record));
        }
        steps.extend(recorded.iter().map(step));
    }
    if let Some(at) = record.purged_at {
        steps.push(Step {
            at: Some(at),
            what: "Purged from the dead-letter queue".into(),
            tone: "bad",
        });
    }
    steps
}

fn step(recorded: &EventStep) -> Step {
    let attempt = recorded.attempt.unwrap_or_default();
    let detail = recorded.detail.as_deref();
    let (what, tone) = match (recorded.kind.as_str(), detail) {
        ("processed", Some(note)) => (format!("Attempt {attempt}: processed ({note})"), "ok"),
        ("processed", None) => (format!("Attempt {attempt}: processed"), "ok"),
        ("retrying", detail) => (
            format!(
                "Attempt {attempt} failed, retry scheduled: {}",
                detail.unwrap_or("no error recorded")
            ),
            "warn",
        ),
        ("dead_lettered", detail) => (
            format!(
                "Dead-lettered after attempt {attempt}: {}",
                detail.unwrap_or("unknown")
            ),
            "bad",
        ),
        ("replayed", _) => ("Replayed from the dead-letter queue".to_owned(), "warn"),
        (other, _) => (other.to_owned(), "warn"),
    };
    Step {
        at: Some(recorded.at),
        what,
        tone,
    }
}

/// The dead letter the record keeps, if any; events dead-lettered on
/// publishing carry only their reason, and date from their publishing.
fn dead_lettered(record: &EventRecord) -> Option<Step> {
    let at = record
        .dead_lettered_at
        .or(record.dead_letter_reason.as_ref().and(record.published_at))?;
    Some(Step {
        at: Some(at),
        what: format!(
            "Dead-lettered: {}",
            record.dead_letter_reason.as_deref().unwrap_or("unknown")
        ),
        tone: "bad",
    })
}

/// The lifecycle from the record's latest values alone.
fn summary(record: &EventRecord, last_error: Option<&str>, steps: &mut Vec<Step>) {
    if record.attempts > 0 {
        let outcome = match (record.processed_at, last_error) {
            (Some(_), Some(note)) => format!("succeeded ({note})"),
            (Some(_), None) => "succeeded".to_owned(),
            (None, Some(error)) => format!("failed: {error}"),
            (None, None) => "failed".to_owned(),
        };
        steps.push(Step {
            at: None,
            what: format!(
                "{} processing attempt(s); the last {outcome}",
                record.attempts
            ),
            tone: if record.processed_at.is_some() {
                "ok"
            } else {
                "bad"
            },
        });
    }
    steps.extend(dead_lettered(record));
    if let Some(at) = record.last_replayed_at {
        steps.push(Step {
            at: Some(at),
            what: format!("Replayed ({} time(s) in all)", record.replay_count),
            tone: "warn",
        });
    }
    if let Some(at) = record.processed_at {
        steps.push(Step {
            at: Some(at),
            what: "Processed".into(),
            tone: "ok",
        });
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(id)
}

pub(super) async fn show(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(event_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let Some((record, detail)) = events::detail(&state.pool, &event_id).await? else {
        return Err(ConsoleError::NotFound);
    };
    let recorded = events::steps(&state.pool, &event_id).await?;
    let body = serde_json::from_slice::<serde_json::Value>(&detail.body)
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&detail.body).into_owned());
    let trace = detail.traceparent.as_deref().and_then(trace_id);
    let trace_link = trace
        .zip(state.config.trace_url.as_deref())
        .map(|(id, template)| template.replace("{trace_id}", id));
    state.page(
        "event.html",
        &signed_in,
        "events",
        minijinja::context! {
            event => minijinja::Value::from_serialize(&record),
            body => body,
            body_is_json => serde_json::from_slice::<serde_json::Value>(&detail.body).is_ok(),
            last_error => detail.last_error.as_deref(),
            steps => timeline(&record, detail.last_error.as_deref(), &recorded),
            trace_id => trace,
            trace_link => trace_link,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_gives_its_trace_id_and_garbage_gives_none() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("00-not-a-trace-01"), None);
        assert_eq!(trace_id(""), None);
    }

    #[test]
    fn browser_times_are_read_as_utc_and_nonsense_is_refused() {
        assert_eq!(
            parse_time("from", "2026-05-01T12:30")
                .unwrap()
                .unwrap()
                .to_rfc3339(),
            "2026-05-01T12:30:00+00:00"
        );
        assert!(parse_time("from", "yesterday").is_err());
        assert_eq!(parse_time("from", " ").unwrap(), None);
    }
}
