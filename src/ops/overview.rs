//! The state of the whole pipeline at a glance: what the ingress answered
//! minute by minute, what waits where, what failed, and how much of Finch's
//! budget is in use.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use crate::config::RateLimits;
use crate::queue::{self, retry_queue_name, DEAD_LETTER_QUEUE, WORK_QUEUE};
use crate::store::budget::{RateBudget, Usage};
use crate::store::{console, events, tally};
use crate::telemetry::ErrorChain;

/// Outcomes of deliveries that were taken (stored or already stored); every
/// other outcome is a refusal, named by its reason.
const TAKEN: [&str; 3] = ["accepted", "duplicate", "unparseable"];

/// One minute of ingress answers.
#[derive(Debug, Clone, Serialize)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub accepted: i64,
    pub duplicate: i64,
    /// Accepted but not parseable as an event: stored and dead-lettered.
    pub unparseable: i64,
    /// Refusals by reason (`invalid_signature`, `too_large`, ...).
    pub refused: BTreeMap<String, i64>,
}

impl Minute {
    pub fn refused_total(&self) -> i64 {
        self.refused.values().sum()
    }
}

/// Ready messages in one queue; `None` when it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub ready: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The last minutes, oldest first, including those with no delivery.
    pub minutes: Vec<Minute>,
    /// Every refusal reason seen in those minutes, for column headings.
    pub refusal_reasons: Vec<String>,
    /// Stored events RabbitMQ has not confirmed yet.
    pub outbox_backlog: i64,
    /// Work queue, each retry queue, then the dead-letter queue.
    pub queues: Vec<QueueDepth>,
    /// Whether RabbitMQ answered at all.
    pub broker_reachable: bool,
    /// Events recorded as dead-lettered and not replayed, purged or processed since.
    pub dead_letters_by_reason: Vec<(String, i64)>,
    pub budget: Vec<Usage>,
    pub connections_by_status: Vec<(String, i64)>,
}

/// Gathers the overview; a broker that does not answer is shown as such
/// rather than failing the page.
pub async fn overview(
    pool: &PgPool,
    amqp_url: &str,
    retry_delays: &[Duration],
    rate_limits: &RateLimits,
    minutes: u32,
) -> Result<Overview, OpsError> {
    let now = Utc::now();
    let first = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now)
        - TimeDelta::minutes(i64::from(minutes.max(1)) - 1);
    let counts = tally::since(pool, first).await?;
    let mut by_minute: Vec<Minute> = (0..minutes.max(1))
        .map(|offset| Minute {
            minute: first + TimeDelta::minutes(i64::from(offset)),
            accepted: 0,
            duplicate: 0,
            unparseable: 0,
            refused: BTreeMap::new(),
        })
        .collect();
    let mut refusal_reasons = std::collections::BTreeSet::new();
    for count in counts {
        let Some(minute) = by_minute.iter_mut().find(|m| m.minute == count.minute) else {
            continue;
        };
        match count.outcome.as_str() {
            "accepted" => minute.accepted += count.count,
            "duplicate" => minute.duplicate += count.count,
            "unparseable" => minute.unparseable += count.count,
            reason => {
                debug_assert!(!TAKEN.contains(&reason));
                refusal_reasons.insert(reason.to_owned());
                *minute.refused.entry(reason.to_owned()).or_default() += count.count;
            }
        }
    }
    let (queues, broker_reachable) = queue_depths(amqp_url, retry_delays).await;
    Ok(Overview {
        minutes: by_minute,
        refusal_reasons: refusal_reasons.into_iter().collect(),
        outbox_backlog: events::outbox_backlog(pool).await?,
        queues,
        broker_reachable,
        dead_letters_by_reason: console::dead_lettered_by_reason(pool).await?,
        budget: RateBudget::new(pool.clone(), rate_limits).usage().await?,
        connections_by_status: console::connections_by_status(pool).await?,
    })
}

async fn queue_depths(amqp_url: &str, retry_delays: &[Duration]) -> (Vec<QueueDepth>, bool) {
    let mut names = vec![WORK_QUEUE.to_owned()];
    names.extend(retry_delays.iter().map(|delay| retry_queue_name(*delay)));
    names.push(DEAD_LETTER_QUEUE.to_owned());
    let unknown = |names: Vec<String>| {
        names
            .into_iter()
            .map(|queue| QueueDepth { queue, ready: None })
            .collect()
    };
    let connection = match queue::connect(amqp_url).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "overview: RabbitMQ unreachable");
            return (unknown(names), false);
        }
    };
    let mut depths = Vec::with_capacity(names.len());
    for queue in names {
        // A queue not declared yet closes its channel: one channel each.
        let ready = match connection.create_channel().await {
            Ok(channel) => {
                let ready = queue::depth::ready_messages(&channel, &queue).await.ok();
                channel.close(200, "read".into()).await.ok();
                ready
            }
            Err(_) => None,
        };
        depths.push(QueueDepth { queue, ready });
    }
    connection.close(200, "overview read".into()).await.ok();
    (depths, true)
}
