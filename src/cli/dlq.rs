//! `finch-webhooks dlq ...` and `finch-webhooks events show`: flags and
//! human-readable output over [`crate::ops::dlq`] and [`crate::ops::events`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{broker, database, emit};
use crate::config::Settings;
use crate::ops::dlq::{
    self, DeadLetter, DeadLetterCopy, Listing, PurgeReport, ReasonSource, ReplayOptions,
    ReplayReport, Shown,
};
use crate::ops::events::{self, EventRecord, Stage};
use crate::ops::Filter;
use crate::telemetry::ErrorChain;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// One line per dead-lettered message and a count by reason; removes and reorders nothing.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Everything about one event in the DLQ: reason, errors, headers, times and body.
    Show {
        event_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Republish matching messages to the work exchange; each leaves the DLQ only
    /// once the broker confirmed its copy.
    Replay {
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        options: ReplayOptions,
        #[arg(long)]
        json: bool,
    },
    /// Delete matching messages (all of them without filters); refuses without --yes.
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Really delete.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// The lifecycle of one event: received, published, processed or dead-lettered, replays.
    Show {
        event_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_dlq(command: DlqCommand, settings: &Settings) -> anyhow::Result<()> {
    let amqp = broker(settings).await?;
    let outcome = dlq(command, settings, &amqp).await;
    amqp.close(200, "done".into()).await.ok();
    outcome
}

async fn dlq(
    command: DlqCommand,
    settings: &Settings,
    amqp: &lapin::Connection,
) -> anyhow::Result<()> {
    let now = Utc::now();
    match command {
        DlqCommand::List { filter, json } => {
            let listing = dlq::list(amqp, &filter.resolve(now)?).await?;
            emit(json, &listing, || render_listing(&listing, now))
        }
        DlqCommand::Show { event_id, json } => {
            // The stored record completes the story but is not needed to read the DLQ.
            let pool = match database(settings).await {
                Ok(pool) => Some(pool),
                Err(error) => {
                    eprintln!(
                        "warning: webhook_events not read ({})",
                        ErrorChain(error.as_ref())
                    );
                    None
                }
            };
            let shown = dlq::show(amqp, pool.as_ref(), &event_id).await?;
            anyhow::ensure!(
                !shown.is_empty(),
                "no event {event_id} in the DLQ or in webhook_events"
            );
            emit(json, &shown, || render_shown(&shown, now))
        }
        DlqCommand::Replay {
            filter,
            options,
            json,
        } => {
            let selection = filter.resolve(now)?;
            let pool = if options.dry_run {
                None
            } else {
                Some(database(settings).await?)
            };
            let report = dlq::replay(amqp, pool.as_ref(), &selection, options).await?;
            emit(json, &report, || render_replay(&report))
        }
        DlqCommand::Purge { filter, yes, json } => {
            let selection = filter.resolve(now)?;
            if !yes {
                let listing = dlq::list(amqp, &selection).await?;
                anyhow::bail!(
                    "refusing to purge without --yes; {} message(s) match{}",
                    listing.matched,
                    by_reason_inline(&listing.by_reason)
                );
            }
            let pool = database(settings).await?;
            let report = dlq::purge(amqp, Some(&pool), &selection).await?;
            emit(json, &report, || render_purge(&report))
        }
    }
}

pub async fn run_events(command: EventsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        EventsCommand::Show { event_id, json } => {
            let pool = database(settings).await?;
            let record = events::show(&pool, &event_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no event {event_id} in webhook_events"))?;
            emit(json, &record, || {
                let mut out = String::new();
                render_record(&mut out, &record, Utc::now());
                out
            })
        }
    }
}

fn dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

fn render_listing(listing: &Listing, now: DateTime<Utc>) -> String {
    let header = [
        "EVENT ID",
        "TYPE",
        "CONNECTION",
        "REASON",
        "ATTEMPTS",
        "AGE",
    ];
    let rows: Vec<[String; 6]> = listing
        .messages
        .iter()
        .map(|letter: &DeadLetter| {
            [
                dash(letter.event_id.as_deref()).to_owned(),
                dash(letter.event_type.as_deref()).to_owned(),
                dash(letter.connection_id.as_deref()).to_owned(),
                letter.reason.clone(),
                letter.attempts.map_or("-".into(), |n| n.to_string()),
                letter.age(now).map_or("-".into(), short_duration),
            ]
        })
        .collect();
    let mut out = String::new();
    if !rows.is_empty() {
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut line = |cells: &[&str]| {
            let mut text = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                write!(text, "{cell:<width$}  ").ok();
            }
            writeln!(out, "{}", text.trim_end()).ok();
        };
        line(&header);
        for row in &rows {
            line(&row.each_ref().map(String::as_str));
        }
        out.push('\n');
    }
    let shown = if (listing.messages.len() as u64) < listing.matched {
        format!(" (first {} shown)", listing.messages.len())
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} of {} message(s) in the DLQ match{shown}",
        listing.matched, listing.in_queue
    )
    .ok();
    let width = listing.by_reason.keys().map(String::len).max().unwrap_or(0);
    for (reason, count) in &listing.by_reason {
        writeln!(out, "  {reason:<width$}  {count}").ok();
    }
    out
}

fn by_reason_inline(by_reason: &std::collections::BTreeMap<String, u64>) -> String {
    if by_reason.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by_reason
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    format!(" ({})", parts.join(", "))
}

fn when(time: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    time.map_or("-".into(), |time| {
        format!("{} ({} ago)", time.to_rfc3339(), short_duration(now - time))
    })
}

fn render_shown(shown: &Shown, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let copies = match shown.copies.len() {
        0 => "not in the DLQ".to_owned(),
        1 => "1 copy in the DLQ".to_owned(),
        n => format!("{n} copies in the DLQ (an interrupted replay can leave two; replaying again is harmless)"),
    };
    writeln!(out, "Event {}: {copies}", shown.event_id).ok();
    for copy in &shown.copies {
        out.push('\n');
        render_copy(&mut out, copy, now);
    }
    out.push('\n');
    match &shown.event {
        Some(record) => render_record(&mut out, record, now),
        None => {
            writeln!(
                out,
                "Not in webhook_events (or the database was not reachable)."
            )
            .ok();
        }
    }
    out
}

fn render_copy(out: &mut String, copy: &DeadLetterCopy, now: DateTime<Utc>) {
    let letter = &copy.message;
    let source = match letter.reason_source {
        ReasonSource::Application => "set by the worker or ingress",
        ReasonSource::Broker => "set by RabbitMQ (x-death)",
        ReasonSource::Unknown => "no reason recorded",
    };
    let mut field = |name: &str, value: String| {
        writeln!(out, "  {name:<18}{value}").ok();
    };
    field("position", format!("{} (0 = next out)", copy.position));
    field("type", dash(letter.event_type.as_deref()).into());
    field("connection", dash(letter.connection_id.as_deref()).into());
    field("reason", format!("{} ({source})", letter.reason));
    field(
        "HTTP status",
        letter.http_status.map_or("-".into(), |s| s.to_string()),
    );
    field("finch_code", dash(letter.finch_code.as_deref()).into());
    field(
        "Finch-Request-Id",
        dash(letter.finch_request_id.as_deref()).into(),
    );
    field(
        "attempts",
        letter.attempts.map_or("-".into(), |n| n.to_string()),
    );
    field("last error", dash(letter.last_error.as_deref()).into());
    field("published at", when(letter.published_at, now));
    field("dead-lettered at", when(letter.dead_lettered_at, now));
    field(
        "replays",
        match letter.replayed_at {
            Some(at) => format!("{}, last {}", letter.replay_count, when(Some(at), now)),
            None => letter.replay_count.to_string(),
        },
    );
    field("traceparent", dash(letter.traceparent.as_deref()).into());
    if !letter.error_history.is_empty() {
        writeln!(out, "  error history").ok();
        for (number, error) in letter.error_history.iter().enumerate() {
            writeln!(out, "    {}. {error}", number + 1).ok();
        }
    }
    writeln!(out, "  headers").ok();
    for (name, value) in &letter.headers {
        writeln!(out, "    {name}: {value}").ok();
    }
    writeln!(
        out,
        "  body ({} bytes, {})",
        copy.body_bytes,
        dash(letter.content_type.as_deref())
    )
    .ok();
    let body = match &copy.body {
        serde_json::Value::String(text) => text.clone(),
        value => serde_json::to_string_pretty(value).unwrap_or_default(),
    };
    for line in body.lines() {
        writeln!(out, "    {line}").ok();
    }
}

fn render_record(out: &mut String, record: &EventRecord, now: DateTime<Utc>) {
    let stage = match record.current_stage() {
        Stage::Received => "received, waiting in the outbox for RabbitMQ",
        Stage::Published => "in the work queue, not processed yet",
        Stage::Processed => "processed",
        Stage::DeadLettered => "dead-lettered",
        Stage::Replayed => "replayed from the DLQ, not processed yet",
        Stage::Purged => "purged from the DLQ",
    };
    writeln!(out, "Event {} (webhook_events): {stage}", record.event_id).ok();
    let mut field = |name: &str, value: String| {
        writeln!(out, "  {name:<18}{value}").ok();
    };
    field("type", dash(record.event_type.as_deref()).into());
    field("connection", dash(record.connection_id.as_deref()).into());
    field("Finch timestamp", record.finch_timestamp.to_rfc3339());
    field("received at", when(Some(record.received_at), now));
    field("published at", when(record.published_at, now));
    field("processed at", when(record.processed_at, now));
    let dead_lettered = match (&record.dead_letter_reason, record.dead_lettered_at) {
        (None, None) => "-".to_owned(),
        (reason, at) => format!(
            "{} ({})",
            when(at.or(record.published_at), now),
            dash(reason.as_deref())
        ),
    };
    field("dead-lettered at", dead_lettered);
    field("attempts", record.attempts.to_string());
    field(
        "replays",
        match record.last_replayed_at {
            Some(at) => format!("{}, last {}", record.replay_count, when(Some(at), now)),
            None => record.replay_count.to_string(),
        },
    );
    if let Some(at) = record.purged_at {
        field("purged at", when(Some(at), now));
    }
    field(
        "body",
        format!("{} bytes (see dlq show)", record.body_bytes),
    );
}

fn render_replay(report: &ReplayReport) -> String {
    let mut out = String::new();
    if report.dry_run {
        writeln!(
            out,
            "Dry run: would replay {} of {} message(s) in the DLQ{}",
            report.matched,
            report.in_queue,
            by_reason_inline(&report.by_reason)
        )
        .ok();
        return out;
    }
    writeln!(
        out,
        "Replayed {} of {} matching message(s) ({} in the DLQ){} in {:.1}s",
        report.replayed,
        report.matched,
        report.in_queue,
        by_reason_inline(&report.by_reason),
        report.publish_seconds
    )
    .ok();
    if report.skipped > 0 {
        writeln!(out, "Left in the DLQ: {}", report.skipped).ok();
        for skipped in &report.skipped_messages {
            writeln!(
                out,
                "  {}: {}",
                dash(skipped.event_id.as_deref()),
                skipped.why
            )
            .ok();
        }
    }
    out
}

fn render_purge(report: &PurgeReport) -> String {
    format!(
        "Purged {} of {} message(s) in the DLQ{}\n",
        report.purged,
        report.in_queue,
        by_reason_inline(&report.by_reason)
    )
}

/// How long ago, for people: `3d4h`, `12m`, `40s`.
fn short_duration(duration: chrono::Duration) -> String {
    let seconds = duration.num_seconds().max(0);
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m:02}m"),
        (d, h, _) => format!("{d}d{h:02}h"),
    }
}
