//! From verified delivery to confirmed broker message.
//!
//! ```text
//! handlers ──submit──► writers (group commit) ──new events──► publisher ──► RabbitMQ
//!                            │                                   │ failure
//!                            ▼                                   ▼
//!                      webhook_events  ◄──── outbox relay (oldest first, after outages)
//! ```
//! A handler answers only after the commit that holds its event. Many
//! concurrent deliveries share one commit: a writer takes everything queued
//! while the previous commit ran. Publishing happens after the answer; the
//! outbox relay publishes whatever the direct path could not.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{IngressMetrics, OutcomeLabel};
use crate::queue::{Backoff, BrokerLink, OutgoingEvent};
use crate::store::events::{self, NewEvent, UnpublishedEvent};
use crate::store::StoreError;
use crate::telemetry::ErrorChain;

/// Deliveries waiting for a writer; beyond this, handlers wait for room.
const SUBMISSION_QUEUE: usize = 16_384;
/// Committed events waiting for the direct publisher; beyond this the
/// relay picks them up from Postgres instead.
const PUBLISH_QUEUE: usize = 65_536;
/// Largest batch sent to the broker at once.
const PUBLISH_BATCH_MAX: usize = 1_000;
/// Broker batches in flight at once; confirms of one overlap the next.
const PUBLISH_CONCURRENCY: usize = 4;
/// Concurrent commits: one can fsync while the next batch is being built.
const WRITERS: usize = 3;
/// Rows the relay publishes per round.
const RELAY_BATCH: i64 = 1_000;
/// Any fixed number shared by all replicas: only one relays at a time.
const RELAY_LOCK_KEY: i64 = 0x6669_6e63_685f_7278; // "finch_rx"

/// What became of a submitted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

struct Submission {
    event: NewEvent,
    /// Every submission of a failed batch gets the same error, hence shared.
    reply: oneshot::Sender<Result<Stored, Arc<StoreError>>>,
}

/// The handlers' side of the pipeline. Dropping every clone lets the writers
/// flush what is queued and stop.
#[derive(Clone)]
pub struct Intake {
    submissions: mpsc::Sender<Submission>,
}

impl Intake {
    /// Resolves once the event is committed (or found already stored).
    pub async fn submit(&self, event: NewEvent) -> Result<Stored, Arc<StoreError>> {
        // The writers are gone only when the pipeline is shutting down.
        let stopped = || Arc::new(StoreError::Unavailable(sqlx::Error::PoolClosed));
        let (reply, outcome) = oneshot::channel();
        self.submissions
            .send(Submission { event, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

struct Committed {
    event: OutgoingEvent,
    committed_at: Instant,
}

#[derive(Clone)]
pub struct PipelineSettings {
    pub batch_max: usize,
    pub outbox_poll_interval: Duration,
    pub outbox_grace: Duration,
}

/// The running background tasks, in the order they must stop.
pub struct Pipeline {
    writers: Vec<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    /// The relay's supervisor, which restarts it after any failure.
    relay: JoinHandle<()>,
    /// Stops the relay; writers and publisher stop when their inputs close.
    stop_relay: CancellationToken,
    /// Whether a relay is running right now; `/readyz` requires it.
    relay_running: Arc<AtomicBool>,
}

/// A relay that ran this long before failing starts over with short waits.
const RELAY_STABLE_AFTER: Duration = Duration::from_secs(60);

impl Pipeline {
    pub fn start(
        pool: PgPool,
        link: BrokerLink,
        metrics: Arc<IngressMetrics>,
        settings: PipelineSettings,
    ) -> (Intake, Self) {
        let (submissions, queue) = mpsc::channel(SUBMISSION_QUEUE);
        let (committed_tx, committed_rx) = mpsc::channel(PUBLISH_QUEUE);
        let relay_wake = Arc::new(Notify::new());
        let queue = Arc::new(Mutex::new(queue));
        let writers = (0..WRITERS)
            .map(|_| {
                tokio::spawn(write_batches(
                    queue.clone(),
                    pool.clone(),
                    committed_tx.clone(),
                    metrics.clone(),
                    settings.batch_max,
                ))
            })
            .collect();
        drop(committed_tx);
        let publisher = tokio::spawn(publish_committed(
            committed_rx,
            pool.clone(),
            link.clone(),
            metrics.clone(),
            relay_wake.clone(),
        ));
        let stop_relay = CancellationToken::new();
        let relay_running = Arc::new(AtomicBool::new(true));
        let relay = tokio::spawn(supervise_relay(
            Relay {
                pool,
                link,
                metrics,
                wake: relay_wake,
                settings,
                stop: stop_relay.clone(),
            },
            relay_running.clone(),
        ));
        let pipeline = Self {
            writers,
            publisher,
            relay,
            stop_relay,
            relay_running,
        };
        (Intake { submissions }, pipeline)
    }

    /// Whether the outbox relay is running, for `/readyz`.
    pub fn relay_running(&self) -> Arc<AtomicBool> {
        self.relay_running.clone()
    }

    /// Waits for queued deliveries to commit and committed events to be
    /// published (or left for the next start's relay), then stops the relay.
    /// Every [`Intake`] must have been dropped first.
    pub async fn drain(self) {
        for writer in self.writers {
            writer.await.ok();
        }
        self.publisher.await.ok();
        self.stop_relay.cancel();
        self.relay.await.ok();
    }
}

async fn write_batches(
    queue: Arc<Mutex<mpsc::Receiver<Submission>>>,
    pool: PgPool,
    committed: mpsc::Sender<Committed>,
    metrics: Arc<IngressMetrics>,
    batch_max: usize,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < batch_max {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        commit_batch(batch, &pool, &committed, &metrics).await;
    }
}

async fn commit_batch(
    batch: Vec<Submission>,
    pool: &PgPool,
    committed: &mpsc::Sender<Committed>,
    metrics: &IngressMetrics,
) {
    // The same id twice in one batch: the first occurrence is written, the
    // others are duplicates of it whatever the insert decides.
    let mut seen = HashSet::with_capacity(batch.len());
    let (unique, repeated): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|submission| seen.insert(submission.event.event_id.clone()));
    let rows: Vec<NewEvent> = unique
        .iter()
        .map(|submission| submission.event.clone())
        .collect();
    metrics.batch_size.observe(rows.len() as f64);

    match events::insert_batch(pool, &rows).await {
        Ok(inserted) => {
            let committed_at = Instant::now();
            for submission in unique {
                let outcome = if inserted.contains(&submission.event.event_id) {
                    let event = outgoing(&submission.event);
                    // A full queue only delays the event: the relay finds it in Postgres.
                    committed
                        .try_send(Committed {
                            event,
                            committed_at,
                        })
                        .ok();
                    Stored::New
                } else {
                    Stored::Duplicate
                };
                submission.reply.send(Ok(outcome)).ok();
            }
            for submission in repeated {
                submission.reply.send(Ok(Stored::Duplicate)).ok();
            }
        }
        Err(error) => {
            tracing::error!(
                error = %ErrorChain(&error),
                events = rows.len(),
                "could not store webhook events"
            );
            // Whether it is an outage (503, Finch retries) or a bug (500) is
            // the handlers' to tell, so the error itself goes to each.
            let error = Arc::new(error);
            for submission in unique.into_iter().chain(repeated) {
                submission.reply.send(Err(error.clone())).ok();
            }
        }
    }
}

fn outgoing(event: &NewEvent) -> OutgoingEvent {
    OutgoingEvent {
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        connection_id: event.connection_id.clone(),
        body: event.body.clone(),
        dead_letter_reason: event.dead_letter_reason.map(str::to_owned),
        traceparent: event.traceparent.clone(),
    }
}

async fn publish_committed(
    mut committed: mpsc::Receiver<Committed>,
    pool: PgPool,
    link: BrokerLink,
    metrics: Arc<IngressMetrics>,
    relay_wake: Arc<Notify>,
) {
    let in_flight = Arc::new(Semaphore::new(PUBLISH_CONCURRENCY));
    let mut batch = Vec::with_capacity(PUBLISH_BATCH_MAX);
    while committed.recv_many(&mut batch, PUBLISH_BATCH_MAX).await > 0 {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        let items = std::mem::take(&mut batch);
        let (pool, link, metrics, relay_wake) = (
            pool.clone(),
            link.clone(),
            metrics.clone(),
            relay_wake.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let oldest = items.iter().map(|item| item.committed_at).min();
            let events: Vec<OutgoingEvent> = items.into_iter().map(|item| item.event).collect();
            let all_confirmed = publish_and_record(&events, &pool, &link, &metrics, "direct").await;
            if let (true, Some(oldest)) = (all_confirmed, oldest) {
                metrics
                    .publish_latency
                    .observe(oldest.elapsed().as_secs_f64());
            } else if !all_confirmed {
                relay_wake.notify_one();
            }
        });
    }
    // Wait for the batches still in flight.
    let _ = in_flight.acquire_many(PUBLISH_CONCURRENCY as u32).await;
}

/// Publishes and marks confirmed events as published. Returns whether every
/// event was confirmed; the rest stay in the outbox.
async fn publish_and_record(
    events: &[OutgoingEvent],
    pool: &PgPool,
    link: &BrokerLink,
    metrics: &IngressMetrics,
    path: &'static str,
) -> bool {
    let Some(publisher) = link.publisher() else {
        return false;
    };
    let results = publisher.publish_all(events).await;
    let mut confirmed = Vec::with_capacity(events.len());
    let mut failed = 0u64;
    for (event, result) in events.iter().zip(results) {
        match result {
            Ok(()) => confirmed.push(event.event_id.clone()),
            Err(error) => {
                failed += 1;
                tracing::debug!(event_id = %event.event_id, %error, path, "publish not confirmed");
            }
        }
    }
    metrics
        .published
        .get_or_create(&OutcomeLabel {
            outcome: "confirmed",
        })
        .inc_by(confirmed.len() as u64);
    if failed > 0 {
        metrics
            .published
            .get_or_create(&OutcomeLabel { outcome: "failed" })
            .inc_by(failed);
        tracing::warn!(
            failed,
            path,
            "broker did not confirm some events; they stay in the outbox"
        );
        link.report_failure();
    }
    if !confirmed.is_empty() {
        if let Err(error) = events::mark_published(pool, &confirmed).await {
            // They are in RabbitMQ; the relay may publish them again, which
            // consumers tolerate (delivery is at-least-once).
            tracing::warn!(error = %ErrorChain(&error), "could not record published events");
            return false;
        }
    }
    failed == 0
}

/// What one run of the relay needs; cloned for each restart.
#[derive(Clone)]
struct Relay {
    pool: PgPool,
    link: BrokerLink,
    metrics: Arc<IngressMetrics>,
    /// Rung by the direct publisher when the broker did not confirm.
    wake: Arc<Notify>,
    settings: PipelineSettings,
    stop: CancellationToken,
}

/// Runs the relay until stopped, restarting it with backoff whenever it
/// ends early or panics: without it, events the direct publish missed
/// would stay in the outbox until the next start.
async fn supervise_relay(relay: Relay, running: Arc<AtomicBool>) {
    let mut backoff = Backoff::new();
    loop {
        running.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = tokio::spawn(relay_outbox(relay.clone())).await;
        running.store(false, Ordering::Relaxed);
        if relay.stop.is_cancelled() {
            return;
        }
        match outcome {
            Err(error) if error.is_panic() => {
                tracing::error!("outbox relay panicked; restarting it")
            }
            _ => tracing::warn!("outbox relay stopped unexpectedly; restarting it"),
        }
        relay.metrics.relay_restarts.inc();
        if started.elapsed() >= RELAY_STABLE_AFTER {
            backoff.reset();
        }
        if !backoff.wait(&relay.stop).await {
            return;
        }
    }
}

async fn relay_outbox(relay: Relay) {
    let Relay {
        pool,
        link,
        metrics,
        wake,
        settings,
        stop,
    } = relay;
    let mut broker = link.subscribe();
    let mut tick = tokio::time::interval(settings.outbox_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            () = wake.notified() => {}
            changed = broker.changed() => if changed.is_err() { return },
        }
        metrics.broker_connected.set(i64::from(link.is_connected()));
        if link.is_connected() {
            if let Err(error) =
                relay_round(&pool, &link, &metrics, settings.outbox_grace, &stop).await
            {
                tracing::warn!(error = %ErrorChain(&error), "outbox relay round failed");
            }
        }
        if let Ok(backlog) = events::outbox_backlog(&pool).await {
            metrics.outbox_backlog.set(backlog);
        }
    }
}

/// Publishes unpublished events, oldest first, until none are left or the
/// broker fails. Holds an advisory lock so replicas do not relay the same
/// rows; the lock belongs to a transaction, so it is released however the
/// round ends: rolled back on return, on error, and on a panic, when the
/// dropped transaction's connection goes back to the pool.
async fn relay_round(
    pool: &PgPool,
    link: &BrokerLink,
    metrics: &IngressMetrics,
    grace: Duration,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let mut lock_holder = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK_KEY)
        .fetch_one(&mut *lock_holder)
        .await?;
    if !locked {
        return Ok(());
    }
    // Development builds can be told to fail here, to prove the above.
    fail::fail_point!("outbox-relay-round");
    let outcome = async {
        while !stop.is_cancelled() {
            let rows = events::unpublished(pool, grace, RELAY_BATCH).await?;
            if rows.is_empty() {
                break;
            }
            let full = rows.len() as i64 == RELAY_BATCH;
            let outgoing: Vec<OutgoingEvent> = rows
                .into_iter()
                .map(UnpublishedEvent::into_outgoing)
                .collect();
            tracing::info!(
                events = outgoing.len(),
                "relaying stored events to RabbitMQ"
            );
            if !publish_and_record(&outgoing, pool, link, metrics, "relay").await || !full {
                break;
            }
        }
        Ok(())
    }
    .await;
    lock_holder.rollback().await.ok();
    outcome
}

impl UnpublishedEvent {
    fn into_outgoing(self) -> OutgoingEvent {
        OutgoingEvent {
            event_id: self.event_id,
            event_type: self.event_type,
            connection_id: self.connection_id,
            body: self.body.into(),
            dead_letter_reason: self.dead_letter_reason,
            traceparent: self.traceparent,
        }
    }
}
