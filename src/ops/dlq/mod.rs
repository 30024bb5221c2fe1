//! The dead-letter queue as operators use it: list, show, replay and purge
//! the messages in `finch.events.dlq`.
//!
//! Every operation is a [`scan::Scan`]: the messages present when it starts
//! are read in order; those it removes are acknowledged, the rest go back in
//! their original order when it ends. A replayed message is acknowledged only
//! after the broker confirmed its republish, so a crash at any point leaves
//! each message in the DLQ, in the work queue, or (at worst) in both.

pub mod message;
pub mod pace;
pub mod scan;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::{BrokerFailure, OpsError, Selection};
use crate::queue::contract::{headers, Headers as _};
use crate::queue::{Envelope, PublishError, Publisher, EVENTS_EXCHANGE};
use crate::store::events::{self, EventRecord};
use crate::telemetry::ErrorChain;
pub use message::{DeadLetter, ReasonSource};
use scan::Scan;

/// Republishes awaiting their confirm at once; bounds memory, not speed.
const CONFIRM_WINDOW: usize = 1_000;
/// Replayed ids are counted in Postgres in batches of this size.
const RECORD_BATCH: usize = 500;
/// How listings group messages that name no connection.
pub const NO_CONNECTION: &str = "none";
/// A report lists at most this many skipped messages individually.
const SKIPPED_SHOWN: usize = 100;

/// The next message of `scan` that `selection` matches, decoded; the others
/// are passed over and stay where they are.
async fn next_match(
    scan: &mut Scan,
    selection: &Selection,
) -> lapin::Result<Option<(Delivery, DeadLetter)>> {
    while let Some(delivery) = scan.next().await? {
        let letter = DeadLetter::decode(delivery.routing_key.as_str(), &delivery.properties);
        if selection.matches(&letter) {
            return Ok(Some((delivery, letter)));
        }
    }
    Ok(None)
}

/// What `list` found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing {
    /// Messages in the DLQ when the listing started.
    pub in_queue: u64,
    /// Messages matching the filters (all of them, whatever the limit).
    pub matched: u64,
    /// Matching messages per dead-letter reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Matching messages per connection id (`none` for those without one).
    pub by_connection: BTreeMap<String, u64>,
    /// The first matching messages in queue order, up to the limit; never bodies.
    pub messages: Vec<DeadLetter>,
}

/// Lists the DLQ without removing or reordering anything.
pub async fn list(connection: &Connection, selection: &Selection) -> Result<Listing, OpsError> {
    let mut scan = Scan::open(connection).await?;
    let mut listing = Listing {
        in_queue: u64::from(scan.expected()),
        matched: 0,
        by_reason: BTreeMap::new(),
        by_connection: BTreeMap::new(),
        messages: Vec::new(),
    };
    while let Some((_, letter)) = next_match(&mut scan, selection).await? {
        listing.matched += 1;
        *listing.by_reason.entry(letter.reason.clone()).or_default() += 1;
        let connection = letter.connection_id.as_deref().unwrap_or(NO_CONNECTION);
        *listing
            .by_connection
            .entry(connection.to_owned())
            .or_default() += 1;
        // The limit caps the lines, never the counts.
        if !selection.limit_reached(listing.messages.len() as u64) {
            listing.messages.push(letter);
        }
    }
    scan.finish().await?;
    Ok(listing)
}

/// One copy of an event in the DLQ, with its body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterCopy {
    /// Position in the DLQ, 0 being the next message a consumer would get.
    pub position: u64,
    #[serde(flatten)]
    pub message: DeadLetter,
    /// The raw Finch JSON (a string if it is not JSON). Contains employee data.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub body_bytes: usize,
}

/// Everything known about one event: its copies in the DLQ (normally one; two
/// after an interrupted replay) and its row in `webhook_events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Shown {
    pub event_id: String,
    pub copies: Vec<DeadLetterCopy>,
    pub event: Option<EventRecord>,
}

impl Shown {
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.event.is_none()
    }
}

/// The DLQ copies of `event_id`, read without disturbing the queue, and its
/// stored record when a database is given.
pub async fn show(
    connection: &Connection,
    pool: Option<&PgPool>,
    event_id: &str,
) -> Result<Shown, OpsError> {
    let mut scan = Scan::open(connection).await?;
    let mut copies = Vec::new();
    let mut position = 0;
    while let Some(delivery) = scan.next().await? {
        if delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str)
            == Some(event_id)
        {
            copies.push(DeadLetterCopy {
                position,
                message: DeadLetter::decode(delivery.routing_key.as_str(), &delivery.properties),
                body: serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
                }),
                body_bytes: delivery.data.len(),
            });
        }
        position += 1;
    }
    scan.finish().await?;
    let event = match pool {
        Some(pool) => events::find(pool, event_id).await?,
        None => None,
    };
    Ok(Shown {
        event_id: event_id.to_owned(),
        copies,
        event,
    })
}

/// How a replay runs, besides which messages it takes; read, like the
/// [`Filter`](crate::ops::Filter), from CLI flags and from JSON alike.
#[derive(Debug, Clone, Copy, Default, Deserialize, clap::Args, utoipa::ToSchema)]
pub struct ReplayOptions {
    /// Count what would be replayed, changing nothing.
    #[arg(long)]
    #[serde(default)]
    pub dry_run: bool,
    /// Republish at most N messages per second (at least 1), leaving room for live events; unlimited if absent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
}

/// A matching message that a replay left in the DLQ, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Skipped {
    pub event_id: Option<String>,
    pub why: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub dry_run: bool,
    /// Messages in the DLQ when the replay started.
    pub in_queue: u64,
    /// Messages matching the filters (within the limit).
    pub matched: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// Republished, confirmed by the broker, and removed from the DLQ (0 on a dry run).
    pub replayed: u64,
    /// Matching messages left in the DLQ.
    pub skipped: u64,
    /// The first skipped messages, with the reason each was left.
    pub skipped_messages: Vec<Skipped>,
    /// Seconds from the first republish to the last confirm.
    pub publish_seconds: f64,
}

/// Republishes matching messages to the work exchange, each removed from the
/// DLQ only once the broker confirmed its copy; see the module docs.
pub async fn replay(
    connection: &Connection,
    pool: Option<&PgPool>,
    selection: &Selection,
    options: ReplayOptions,
) -> Result<ReplayReport, OpsError> {
    replay_reporting(connection, pool, selection, options, &mut |_| {}).await
}

/// [`replay`], telling `progress` the number replayed so far each time a
/// republish is confirmed, for front ends that show a replay as it runs.
pub async fn replay_reporting(
    connection: &Connection,
    pool: Option<&PgPool>,
    selection: &Selection,
    options: ReplayOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ReplayReport, OpsError> {
    let mut scan = Scan::open(connection).await?;
    let publisher = Publisher::open(connection).await?;
    let mut pacer = options.rate.map(pace::Pacer::new);
    let mut report = ReplayReport {
        dry_run: options.dry_run,
        in_queue: u64::from(scan.expected()),
        matched: 0,
        by_reason: BTreeMap::new(),
        replayed: 0,
        skipped: 0,
        skipped_messages: Vec::new(),
        publish_seconds: 0.0,
    };
    let mut confirmed_ids = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut first_publish: Option<Instant> = None;

    let outcome: Result<(), BrokerFailure> = async {
        while let Some((delivery, letter)) = next_match(&mut scan, selection).await? {
            if selection.limit_reached(report.matched) {
                continue;
            }
            report.matched += 1;
            *report.by_reason.entry(letter.reason.clone()).or_default() += 1;
            if options.dry_run {
                continue;
            }
            let Some(routing_key) = letter.event_type.clone() else {
                report.skip(
                    &letter,
                    "no event type (the body was not parseable): nothing to route it by",
                );
                continue;
            };
            if let Some(pacer) = pacer.as_mut() {
                pacer.wait().await;
            }
            first_publish.get_or_insert_with(Instant::now);
            let sent = publisher
                .send(Envelope {
                    exchange: EVENTS_EXCHANGE,
                    routing_key: &routing_key,
                    mandatory: true,
                    body: &delivery.data,
                    properties: republished_properties(&delivery.properties, &letter),
                })
                .await;
            // A message refused on sending is settled like one refused by
            // the broker: both verdicts go through `settle`.
            in_flight.push(async move {
                let verdict = match sent {
                    Ok(confirm) => confirm.wait().await,
                    Err(error) => Err(error),
                };
                (delivery, letter, verdict)
            });
            // Acknowledge promptly whatever is confirmed, so that an
            // interruption leaves as few duplicates as possible.
            while in_flight.len() >= CONFIRM_WINDOW {
                if let Some(done) = in_flight.next().await {
                    settle(&mut scan, &mut report, &mut confirmed_ids, progress, done).await?;
                }
            }
            while let Some(Some(done)) = in_flight.next().now_or_never() {
                settle(&mut scan, &mut report, &mut confirmed_ids, progress, done).await?;
            }
            if confirmed_ids.len() >= RECORD_BATCH {
                record_replays(pool, &mut confirmed_ids).await;
            }
        }
        while let Some(done) = in_flight.next().await {
            settle(&mut scan, &mut report, &mut confirmed_ids, progress, done).await?;
        }
        Ok(())
    }
    .await;
    if let Some(first) = first_publish {
        report.publish_seconds = first.elapsed().as_secs_f64();
    }
    record_replays(pool, &mut confirmed_ids).await;
    publisher.close().await;
    if let Err(source) = outcome {
        return Err(OpsError::Interrupted {
            done: report.replayed,
            source,
        });
    }
    scan.finish().await?;
    Ok(report)
}

impl ReplayReport {
    fn skip(&mut self, letter: &DeadLetter, why: &str) {
        self.skipped += 1;
        if self.skipped_messages.len() < SKIPPED_SHOWN {
            self.skipped_messages.push(Skipped {
                event_id: letter.event_id.clone(),
                why: why.to_owned(),
            });
        }
    }
}

/// Removes a message from the DLQ once its republish is confirmed; a
/// message the broker refused stays there; a broker failure stops the replay.
async fn settle(
    scan: &mut Scan,
    report: &mut ReplayReport,
    confirmed_ids: &mut Vec<String>,
    progress: &mut (dyn FnMut(u64) + Send),
    (delivery, letter, verdict): (Delivery, DeadLetter, Result<(), PublishError>),
) -> Result<(), BrokerFailure> {
    match verdict {
        Ok(()) => {
            scan.remove(&delivery).await?;
            report.replayed += 1;
            confirmed_ids.extend(letter.event_id);
            progress(report.replayed);
        }
        Err(PublishError::Unroutable) => report.skip(
            &letter,
            "unroutable: no queue is bound to finch.events for its type",
        ),
        Err(PublishError::Nacked) => {
            report.skip(&letter, "the broker refused the republish (nack)");
        }
        Err(refused @ PublishError::TooLong { .. }) => report.skip(&letter, &refused.to_string()),
        Err(PublishError::Broker(error)) => return Err(error.into()),
        Err(failure @ PublishError::Disconnected) => return Err(failure.into()),
    }
    Ok(())
}

/// Counting is bookkeeping: the replay has happened, so a database failure
/// is logged rather than undoing or stopping it.
async fn record_replays(pool: Option<&PgPool>, event_ids: &mut Vec<String>) {
    if let Some(pool) = pool {
        if !event_ids.is_empty() {
            if let Err(error) = events::mark_replayed(pool, event_ids).await {
                tracing::warn!(
                    error = %ErrorChain(&error),
                    count = event_ids.len(),
                    "replays not counted in webhook_events"
                );
            }
        }
    }
    event_ids.clear();
}

/// The original properties and headers with the replay counted (the
/// publisher makes the copy persistent). A replay starts fresh: the
/// worker's `attempts` and the broker-owned `x-` headers (`x-death`,
/// `x-delivery-count`, ...) describe the previous trip and are dropped, so
/// the retry schedule and the work queue's delivery limit start over. The
/// error history stays, for whoever reads the message next.
fn republished_properties(original: &BasicProperties, letter: &DeadLetter) -> BasicProperties {
    let mut kept = original
        .headers()
        .as_ref()
        .map(|table| table.inner().clone())
        .unwrap_or_default();
    kept.retain(|name, _| !name.as_str().starts_with("x-") && name.as_str() != headers::ATTEMPTS);
    let mut table = FieldTable::from(kept);
    table.set_int(headers::REPLAY_COUNT, letter.replay_count + 1);
    table.set_text(headers::REPLAYED_AT, &Utc::now().to_rfc3339());
    original.clone().with_headers(table)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    /// Messages in the DLQ when the purge started.
    pub in_queue: u64,
    /// Messages deleted.
    pub purged: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// Deletes the matching messages; the rest stay, in order.
pub async fn purge(
    connection: &Connection,
    pool: Option<&PgPool>,
    selection: &Selection,
) -> Result<PurgeReport, OpsError> {
    let mut scan = Scan::open(connection).await?;
    let mut report = PurgeReport {
        in_queue: u64::from(scan.expected()),
        purged: 0,
        by_reason: BTreeMap::new(),
    };
    let mut purged_ids = Vec::new();
    let outcome: Result<(), BrokerFailure> = async {
        while let Some((delivery, letter)) = next_match(&mut scan, selection).await? {
            if selection.limit_reached(report.purged) {
                continue;
            }
            scan.remove(&delivery).await?;
            report.purged += 1;
            *report.by_reason.entry(letter.reason).or_default() += 1;
            purged_ids.extend(letter.event_id);
        }
        Ok(())
    }
    .await;
    if let Some(pool) = pool {
        for chunk in purged_ids.chunks(RECORD_BATCH) {
            if let Err(error) = events::mark_purged(pool, chunk).await {
                tracing::warn!(error = %ErrorChain(&error), "purges not recorded in webhook_events");
                break;
            }
        }
    }
    if let Err(source) = outcome {
        return Err(OpsError::Interrupted {
            done: report.purged,
            source,
        });
    }
    scan.finish().await?;
    Ok(report)
}
