//! What the run observes while it lasts: Finch requests per simulated day,
//! `finch.synced` notifications (when each change reached our copy), sweeps
//! finishing, and Finch's refreshes of assisted connections.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use finch_emulator::{ChangeRecord, ConnectionKind, RunningEmulator, StatsSnapshot};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use sqlx::PgPool;

use crate::config::Settings;
use crate::finch::Product;
use crate::queue::topology::SYNCED_EXCHANGE;

/// (connection id, resource as `finch.synced` names it, item id) -> Finch
/// times at which a notification about it arrived, in order.
type Seen = HashMap<(String, String, String), Vec<DateTime<Utc>>>;

pub struct Watch {
    /// Filled by the consumer task as notifications arrive.
    seen: Arc<Mutex<Seen>>,
    notifications: Arc<std::sync::atomic::AtomicU64>,
    /// Kept open for the consumer; closed with the run.
    _amqp: lapin::Connection,
    /// Connection id -> every Finch time its sweep was seen finishing.
    sweeps: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
    last_swept: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Assisted connection id -> each `Finch-Data-Retrieved` seen.
    refreshes: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
    kinds: HashMap<String, ConnectionKind>,
    samples: std::sync::atomic::AtomicU64,
}

impl Watch {
    pub async fn start(
        settings: &Settings,
        emulator: &Arc<RunningEmulator>,
        kinds: &HashMap<String, ConnectionKind>,
    ) -> anyhow::Result<Self> {
        let amqp = crate::queue::connect(&settings.amqp_url()?).await?;
        crate::queue::declare_topology(&amqp, &settings.retry_delays()?).await?;
        let channel = amqp.create_channel().await?;
        let queue = "bench.synced";
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.into(),
                SYNCED_EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "bench-fleet".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let notifications = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (into, count, clock) = (seen.clone(), notifications.clone(), emulator.clone());
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let at = clock.now();
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(body) = serde_json::from_slice::<Value>(&delivery.data) {
                    record(&into, &body, at);
                }
                delivery.ack(BasicAckOptions::default()).await.ok();
            }
        });
        Ok(Self {
            seen,
            notifications,
            _amqp: amqp,
            sweeps: Mutex::default(),
            last_swept: Mutex::default(),
            refreshes: Mutex::default(),
            kinds: kinds.clone(),
            samples: Default::default(),
        })
    }

    pub fn notifications(&self) -> u64 {
        self.notifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the emulator's counters, and every fourth time the sweep
    /// schedule and the assisted refreshes.
    pub async fn sample(
        &self,
        emulator: &RunningEmulator,
        pool: &PgPool,
        observations: &mut Observations,
    ) -> anyhow::Result<()> {
        let now = emulator.now();
        observations.add(now, &emulator.stats());
        let n = self
            .samples
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !n.is_multiple_of(4) {
            return Ok(());
        }
        let swept: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT connection_id, last_swept_at FROM connections WHERE last_swept_at IS NOT NULL",
        )
        .fetch_all(pool)
        .await?;
        {
            let mut last = self.last_swept.lock().expect("watch lock");
            let mut sweeps = self.sweeps.lock().expect("watch lock");
            for (connection_id, at) in swept {
                if last.get(&connection_id) != Some(&at) {
                    sweeps.entry(connection_id.clone()).or_default().push(now);
                    last.insert(connection_id, at);
                }
            }
        }
        let mut refreshes = self.refreshes.lock().expect("watch lock");
        for (connection_id, retrieved) in emulator.data_retrieved() {
            if self.kinds.get(&connection_id) != Some(&ConnectionKind::Assisted) {
                continue;
            }
            let seen = refreshes.entry(connection_id).or_default();
            if seen.last() != Some(&retrieved) {
                seen.push(retrieved);
            }
        }
        Ok(())
    }

    fn first_seen_after(&self, change: &ChangeRecord) -> Option<DateTime<Utc>> {
        let seen = self.seen.lock().expect("watch lock");
        let resource = change.product.replace('-', "_");
        let item = if resource == "company" {
            String::new()
        } else {
            change.item_id.clone()
        };
        seen.get(&(change.connection_id.clone(), resource, item))?
            .iter()
            .find(|at| **at >= change.at)
            .copied()
    }

    /// Changes no notification has answered yet.
    pub fn unresolved(&self, changes: &[ChangeRecord]) -> usize {
        changes
            .iter()
            .filter(|change| self.first_seen_after(change).is_none())
            .count()
    }

    pub fn staleness(&self, changes: &[ChangeRecord]) -> Staleness {
        let mut staleness = Staleness::default();
        for change in changes {
            match self.first_seen_after(change) {
                Some(at) => {
                    let seconds = (at - change.at).num_milliseconds() as f64 / 1000.0;
                    if change.announced {
                        staleness.announced.push(seconds);
                    } else {
                        staleness.repaired.push(seconds);
                    }
                }
                None => staleness.unresolved += 1,
            }
        }
        staleness.announced.sort_by(f64::total_cmp);
        staleness.repaired.sort_by(f64::total_cmp);
        staleness
    }

    /// Automated connections: a sweep within every cadence of the measured
    /// period. Assisted ones: a sweep within the check interval after each
    /// of Finch's refreshes. Both allow one scheduler hour of slack.
    pub fn sweeps_on_time(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        cadence: Duration,
        assisted_check: Duration,
    ) -> Sweeps {
        let slack = chrono::Duration::hours(1);
        let cadence = chrono::Duration::from_std(cadence).unwrap_or(chrono::Duration::MAX) + slack;
        let check =
            chrono::Duration::from_std(assisted_check).unwrap_or(chrono::Duration::MAX) + slack;
        let sweeps = self.sweeps.lock().expect("watch lock");
        let refreshes = self.refreshes.lock().expect("watch lock");
        let none = Vec::new();
        let mut result = Sweeps::default();
        for (connection_id, kind) in &self.kinds {
            let done = sweeps.get(connection_id).unwrap_or(&none);
            let on_time = match kind {
                ConnectionKind::Automated => {
                    let mut previous = start;
                    let mut ok = true;
                    for at in done.iter().chain(std::iter::once(&end)) {
                        if *at - previous > cadence {
                            ok = false;
                        }
                        previous = *at;
                    }
                    ok
                }
                ConnectionKind::Assisted => refreshes
                    .get(connection_id)
                    .unwrap_or(&none)
                    .iter()
                    .filter(|refresh| **refresh >= start && **refresh < end)
                    .all(|refresh| {
                        done.iter()
                            .any(|at| at >= refresh && *at - *refresh <= check)
                    }),
            };
            let tally = match kind {
                ConnectionKind::Automated => &mut result.automated,
                ConnectionKind::Assisted => &mut result.assisted,
            };
            tally.1 += 1;
            if on_time {
                tally.0 += 1;
            } else if result.late.len() < 5 {
                result.late.push(connection_id.clone());
            }
            result.finished += done.len();
        }
        result
    }
}

fn record(seen: &Mutex<Seen>, body: &Value, at: DateTime<Utc>) {
    let Some(connection_id) = body["connection_id"].as_str() else {
        return;
    };
    let Some(resource) = body["resource"].as_str() else {
        return;
    };
    let mut seen = seen.lock().expect("watch lock");
    for id in body["ids"].as_array().into_iter().flatten() {
        let item = match resource {
            "company" => String::new(),
            "payment" | "pay_statement" => id["payment_id"].as_str().unwrap_or_default().to_owned(),
            _ => id["individual_id"].as_str().unwrap_or_default().to_owned(),
        };
        let times = seen
            .entry((connection_id.to_owned(), resource.to_owned(), item))
            .or_default();
        if times.last() != Some(&at) {
            times.push(at);
        }
    }
}

/// Simulated seconds from a change at Finch to the notification of our copy.
#[derive(Debug, Default)]
pub struct Staleness {
    /// Sorted; changes a webhook announced.
    pub announced: Vec<f64>,
    /// Sorted; changes no webhook announced, repaired by a sweep.
    pub repaired: Vec<f64>,
    /// Changes never answered by a notification.
    pub unresolved: usize,
}

#[derive(Debug, Default)]
pub struct Sweeps {
    /// (on time, all) per kind.
    pub automated: (usize, usize),
    pub assisted: (usize, usize),
    pub finished: usize,
    pub late: Vec<String>,
}

impl Sweeps {
    pub fn on_time_pct(&self) -> f64 {
        let all = self.automated.1 + self.assisted.1;
        if all == 0 {
            return 100.0;
        }
        100.0 * (self.automated.0 + self.assisted.0) as f64 / all as f64
    }
}

/// Finch requests per product and simulated day, counted from the
/// emulator's counters as the run goes.
pub struct Observations {
    start: DateTime<Utc>,
    last: BTreeMap<String, u64>,
    rate_limited_before: u64,
    rate_limited_by_code_before: BTreeMap<String, u64>,
    /// Day index -> product -> requests.
    pub per_day: BTreeMap<usize, BTreeMap<String, u64>>,
    pub rate_limited: u64,
    pub rate_limited_by_code: BTreeMap<String, u64>,
    /// Set when the measured period ends; later requests are the drain's.
    closed_at: Option<DateTime<Utc>>,
    pub drain_requests: u64,
}

impl Observations {
    pub fn new(start: DateTime<Utc>, before: &StatsSnapshot) -> Self {
        Self {
            start,
            last: before.data_requests.clone(),
            rate_limited_before: before.rate_limited,
            rate_limited_by_code_before: before.rate_limited_by_code.clone(),
            per_day: BTreeMap::new(),
            rate_limited: 0,
            rate_limited_by_code: BTreeMap::new(),
            closed_at: None,
            drain_requests: 0,
        }
    }

    pub fn add(&mut self, now: DateTime<Utc>, stats: &StatsSnapshot) {
        let day = ((now - self.start).num_seconds().max(0) / 86_400) as usize;
        for (product, count) in &stats.data_requests {
            let before = self.last.get(product).copied().unwrap_or(0);
            let delta = count.saturating_sub(before);
            if delta == 0 {
                continue;
            }
            if self.closed_at.is_some() {
                self.drain_requests += delta;
            } else {
                *self
                    .per_day
                    .entry(day)
                    .or_default()
                    .entry(product.clone())
                    .or_default() += delta;
            }
            self.last.insert(product.clone(), *count);
        }
        self.rate_limited = stats.rate_limited - self.rate_limited_before;
        self.rate_limited_by_code = stats
            .rate_limited_by_code
            .iter()
            .map(|(code, count)| {
                let before = self
                    .rate_limited_by_code_before
                    .get(code)
                    .copied()
                    .unwrap_or(0);
                (code.clone(), count - before)
            })
            .filter(|(_, count)| *count > 0)
            .collect();
    }

    pub fn close_measurement(&mut self, at: DateTime<Utc>) {
        self.closed_at = Some(at);
    }

    pub fn requests_total(&self) -> u64 {
        self.per_day.values().flat_map(|p| p.values()).sum()
    }

    /// Requests of `product` on each measured day.
    pub fn product_days(&self, product: Product, days: u32) -> Vec<u64> {
        (0..days as usize)
            .map(|day| {
                self.per_day
                    .get(&day)
                    .and_then(|p| p.get(product.as_str()))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }
}
