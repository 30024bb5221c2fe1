//! The end of a message: acknowledged after its data is committed, sent to
//! a delayed-retry queue, or dead-lettered with the reasons — each published
//! with a broker confirm before the original is acknowledged, and recorded
//! on `webhook_events`.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{Disposition, Failure, Message, Verdict};
use super::Context;
use crate::queue::contract::{
    headers, reasons, Headers as _, ERROR_HISTORY_CAP, JSON, SWEEP_EVENT_TYPE,
};
use crate::queue::publisher::short;
use crate::queue::{retry_queue_name, Envelope, PublishError, DEAD_LETTER_EXCHANGE};
use crate::store::events::{self, Processed};
use crate::telemetry::ErrorChain;

const BATCH: usize = 512;

/// Finishes messages until `stop` fires, then finishes what is already queued.
pub async fn run(
    ctx: Arc<Context>,
    mut done: mpsc::UnboundedReceiver<Arc<Message>>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            received = done.recv_many(&mut batch, BATCH) => received,
            () = stop.cancelled() => {
                while let Ok(message) = done.try_recv() {
                    batch.push(message);
                }
                finish(&ctx, std::mem::take(&mut batch)).await;
                return;
            }
        };
        if received == 0 {
            return;
        }
        finish(&ctx, std::mem::take(&mut batch)).await;
    }
}

async fn finish(ctx: &Context, messages: Vec<Arc<Message>>) {
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for message in messages {
        match message.verdict() {
            Verdict::Done { note } => succeeded.push((message, note)),
            Verdict::Failed(failure) => failed.push((message, failure)),
        }
    }
    if !succeeded.is_empty() {
        acknowledge(ctx, succeeded).await;
    }
    futures::future::join_all(
        failed
            .into_iter()
            .map(|(message, failure)| fail(ctx, message, failure)),
    )
    .await;
}

async fn acknowledge(ctx: &Context, messages: Vec<(Arc<Message>, Option<String>)>) {
    let processed: Vec<Processed<'_>> = messages
        .iter()
        .map(|(message, note)| Processed {
            event_id: &message.event_id,
            attempts: i32::try_from(message.attempt()).unwrap_or(i32::MAX),
            note: note.as_deref(),
        })
        .collect();
    let recorded = events::mark_processed(&ctx.pool, &processed).await;
    if let Err(error) = recorded {
        // The data is committed; a redelivery redoes it harmlessly.
        tracing::warn!(error = %ErrorChain(&error), "could not record processed events; returning them to the queue");
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (message, _) in messages {
            requeue(&message).await;
        }
        return;
    }
    let mut connection_ids: Vec<String> = messages
        .iter()
        .filter_map(|(m, _)| m.connection_id.clone())
        .collect();
    connection_ids.sort();
    connection_ids.dedup();
    if let Err(error) = crate::store::connections::touch_event(&ctx.pool, &connection_ids).await {
        tracing::warn!(error = %ErrorChain(&error), "could not record last event times");
    }
    // A sweep counts once every read of it committed, not when it was queued.
    let swept: Vec<String> = messages
        .iter()
        .filter(|(m, note)| note.is_none() && m.event_type == SWEEP_EVENT_TYPE)
        .filter_map(|(m, _)| m.connection_id.clone())
        .collect();
    if !swept.is_empty() {
        if let Err(error) = crate::store::sweeps::finished(&ctx.pool, &swept).await {
            tracing::warn!(error = %ErrorChain(&error), "could not record finished sweeps");
        }
    }
    for (message, note) in messages {
        let outcome = if note.is_some() {
            "skipped"
        } else {
            "processed"
        };
        ctx.metrics.count_event(message.label(), outcome);
        ctx.metrics
            .latency
            .observe(message.received_at.elapsed().as_secs_f64());
        let connection_id = message.connection_id.as_deref().unwrap_or("");
        // In the event's span, so that JSON logs and `-v` show its context.
        message.span.in_scope(|| match &note {
            None => tracing::info!(
                event_id = %message.event_id,
                event_type = %message.event_type,
                connection_id,
                "committed"
            ),
            Some(note) => tracing::info!(
                event_id = %message.event_id,
                event_type = %message.event_type,
                connection_id,
                note = note.as_str(),
                "skipped"
            ),
        });
        if let Err(error) = message.acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(%error, event_id = %message.event_id, "ack failed; the event will be redelivered");
        }
    }
}

async fn requeue(message: &Message) {
    message
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .ok();
}

async fn fail(ctx: &Context, message: Arc<Message>, mut failure: Failure) {
    let attempt = message.attempt();
    if failure.disposition == Disposition::Retry && attempt >= i64::from(ctx.config.max_attempts) {
        failure.disposition = Disposition::DeadLetter(reasons::RETRIES_EXHAUSTED);
    }
    let mut history = message.error_history.clone();
    history.push(format!(
        "{} attempt {attempt}: {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        failure.error
    ));
    if history.len() > ERROR_HISTORY_CAP {
        history.drain(..history.len() - ERROR_HISTORY_CAP);
    }
    let headers = failure_headers(&message, attempt, &failure, &history);
    let properties = match republished_properties(&message) {
        Ok(properties) => properties.with_headers(headers),
        Err(error) => {
            tracing::warn!(%error, event_id = %message.event_id, "cannot republish the event; requeueing");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return requeue(&message).await;
        }
    };
    let span_fields = (
        message.event_id.as_str(),
        message.event_type.as_str(),
        message.connection_id.as_deref().unwrap_or(""),
    );
    match failure.disposition {
        Disposition::Retry => {
            let delays = &ctx.config.retry_delays;
            let index = usize::try_from(attempt - 1)
                .unwrap_or(0)
                .min(delays.len() - 1);
            let delay = delays[index];
            // The queue's TTL is the ceiling; each message leaves a little
            // earlier so a burst of retries comes back spread out.
            let jitter = rand::rng().random_range(0.0..=ctx.config.retry_jitter);
            let expiration = (delay.as_millis() as f64 * (1.0 - jitter)).max(1.0) as u64;
            let queue = retry_queue_name(delay);
            let published = async {
                let expiration = short("expiration", &expiration.to_string())?;
                ctx.publish(Envelope {
                    exchange: "",
                    routing_key: &queue,
                    mandatory: true,
                    body: &message.body,
                    properties: properties.with_expiration(expiration),
                })
                .await
            }
            .await;
            if let Err(error) = published {
                tracing::warn!(%error, event_id = span_fields.0, "could not schedule a retry; requeueing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return requeue(&message).await;
            }
            record(ctx, &message, attempt, &failure, None).await;
            ctx.metrics.retries.inc();
            ctx.metrics.count_event(message.label(), "retried");
            message.span.in_scope(|| {
                tracing::warn!(
                    event_id = span_fields.0,
                    event_type = span_fields.1,
                    connection_id = span_fields.2,
                    attempt,
                    retry_in_ms = expiration,
                    http_status = failure.http_status,
                    finch_code = failure.finch_code.as_deref().unwrap_or(""),
                    finch_request_id = failure.request_id.as_deref().unwrap_or(""),
                    error = %failure.error,
                    "retried"
                )
            });
        }
        Disposition::DeadLetter(reason) => {
            let published = ctx
                .publish(Envelope {
                    exchange: DEAD_LETTER_EXCHANGE,
                    routing_key: reason,
                    mandatory: true,
                    body: &message.body,
                    properties,
                })
                .await;
            if let Err(error) = published {
                tracing::warn!(%error, event_id = span_fields.0, "could not dead-letter; requeueing");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return requeue(&message).await;
            }
            record(ctx, &message, attempt, &failure, Some(reason)).await;
            ctx.metrics
                .dead_letters
                .get_or_create(&crate::metrics::ReasonLabel { reason })
                .inc();
            ctx.metrics.count_event(message.label(), "dead_lettered");
            message.span.in_scope(|| {
                tracing::error!(
                    event_id = span_fields.0,
                    event_type = span_fields.1,
                    connection_id = span_fields.2,
                    reason,
                    attempt,
                    http_status = failure.http_status,
                    finch_code = failure.finch_code.as_deref().unwrap_or(""),
                    finch_request_id = failure.request_id.as_deref().unwrap_or(""),
                    error = %failure.error,
                    "dead-lettered"
                )
            });
        }
    }
    if let Err(error) = message.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(%error, event_id = span_fields.0, "ack failed; the event will be redelivered");
    }
}

async fn record(
    ctx: &Context,
    message: &Message,
    attempt: i64,
    failure: &Failure,
    reason: Option<&str>,
) {
    let attempts = i32::try_from(attempt).unwrap_or(i32::MAX);
    let result = match reason {
        Some(reason) => {
            events::mark_dead_lettered(
                &ctx.pool,
                &message.event_id,
                reason,
                attempts,
                &failure.error,
            )
            .await
        }
        None => {
            events::record_failed_attempt(&ctx.pool, &message.event_id, attempts, &failure.error)
                .await
        }
    };
    if let Err(error) = result {
        // The broker already holds the retry or dead letter, which is what counts.
        tracing::warn!(error = %ErrorChain(&error), event_id = %message.event_id, "could not record the failure on webhook_events");
    }
}

/// The message's own properties, carried over to its retry or dead letter.
fn republished_properties(message: &Message) -> Result<BasicProperties, PublishError> {
    let content_type = match message.properties.content_type() {
        Some(content_type) => content_type.clone(),
        None => short("content type", JSON)?,
    };
    let mut properties = BasicProperties::default()
        .with_message_id(short("event id", &message.event_id)?)
        .with_content_type(content_type)
        .with_timestamp(
            message
                .properties
                .timestamp()
                .unwrap_or_else(|| chrono::Utc::now().timestamp() as u64),
        );
    if !message.event_type.is_empty() {
        properties = properties.with_type(short("event type", &message.event_type)?);
    }
    Ok(properties)
}

/// The contract's headers: the incoming ones (`traceparent` and others)
/// with ours replaced. Broker bookkeeping (`x-*`) is dropped.
pub fn failure_headers(
    message: &Message,
    attempt: i64,
    failure: &Failure,
    history: &[String],
) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in message.incoming_headers().inner() {
        let name = key.as_str();
        let ours = [
            headers::DEAD_LETTER_REASON,
            headers::DEAD_LETTERED_AT,
            headers::HTTP_STATUS,
            headers::FINCH_CODE,
            headers::FINCH_REQUEST_ID,
        ];
        if name.starts_with("x-") || ours.contains(&name) {
            continue;
        }
        table.insert(key.clone(), value.clone());
    }
    if let Some(connection_id) = &message.connection_id {
        table.set_text(headers::CONNECTION_ID, connection_id);
    }
    table.set_int(headers::ATTEMPTS, attempt);
    table.set_int(headers::REPLAY_COUNT, message.replay_count);
    table.set_text(headers::LAST_ERROR, &failure.error);
    table.set_texts(headers::ERROR_HISTORY, history);
    if let Some(status) = failure.http_status {
        table.set_int(headers::HTTP_STATUS, i64::from(status));
    }
    if let Some(code) = &failure.finch_code {
        table.set_text(headers::FINCH_CODE, code);
    }
    if let Some(id) = &failure.request_id {
        table.set_text(headers::FINCH_REQUEST_ID, id);
    }
    if let Disposition::DeadLetter(reason) = failure.disposition {
        table.set_text(headers::DEAD_LETTER_REASON, reason);
        table.set_text(
            headers::DEAD_LETTERED_AT,
            &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    }
    table
}
