//! Counters behind `GET /_emulator/stats`: benchmarks read their figures here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use finch_core::Product;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct Stats {
    /// "METHOD /route/{template}" -> status -> count.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    rate_limited: Mutex<BTreeMap<String, u64>>,
    /// 429s by `finch_code`.
    rate_limited_by_code: Mutex<BTreeMap<String, u64>>,
    /// `/employer/*` requests that got past the token and scope checks, by product.
    data_requests: Mutex<BTreeMap<String, u64>>,
    /// The same, by connection id.
    data_requests_by_connection: Mutex<BTreeMap<String, u64>>,
    pub(crate) faults_500: AtomicU64,
    pub(crate) faults_502: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) events_emitted: AtomicU64,
    pub(crate) deliveries_attempted: AtomicU64,
    pub(crate) webhooks_delivered: AtomicU64,
    pub(crate) webhooks_retried: AtomicU64,
    pub(crate) webhooks_failed: AtomicU64,
    pub(crate) webhooks_duplicated: AtomicU64,
    /// Requests received and not answered yet (nor abandoned by their client).
    pub(crate) in_flight: AtomicU64,
}

/// A point-in-time copy of the counters, as `/_emulator/stats` serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests by "METHOD /route" and HTTP status.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// 429s served in total.
    pub rate_limited: u64,
    /// 429s served per Finch product (`company`, `directory`, ...).
    pub rate_limited_by_product: BTreeMap<String, u64>,
    /// 429s served per `finch_code` (`finch_application_rl`, `finch_api_ip_rl`,
    /// `upstream_rate_limit_exceeded`).
    #[serde(default)]
    pub rate_limited_by_code: BTreeMap<String, u64>,
    /// `/employer/*` requests per product (`company`, ..., `pay-statement`),
    /// whatever they were answered with.
    #[serde(default)]
    pub data_requests: BTreeMap<String, u64>,
    /// `/employer/*` requests per connection id.
    #[serde(default)]
    pub data_requests_by_connection: BTreeMap<String, u64>,
    pub injected_500: u64,
    pub injected_502: u64,
    /// Data syncs that ran (successful or not).
    pub syncs: u64,
    pub webhooks: WebhookStats,
    /// API requests received and not answered yet: lets a test act while
    /// a client's request is provably under way.
    #[serde(default)]
    pub in_flight: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Events produced, counted once per target.
    pub emitted: u64,
    /// HTTP attempts made, first tries and retries.
    pub attempts: u64,
    /// Attempts answered with 2xx.
    pub delivered: u64,
    /// Attempts that were retries of an earlier failure.
    pub retried: u64,
    /// Events given up on after the whole retry schedule.
    pub failed: u64,
    /// Extra copies sent because of `--duplicate-rate`.
    pub duplicated: u64,
}

impl WebhookStats {
    /// Deliveries still queued or being retried: each copy ends delivered
    /// once or given up on once.
    pub fn pending(&self) -> u64 {
        (self.emitted + self.duplicated).saturating_sub(self.delivered + self.failed)
    }
}

impl Stats {
    pub fn record_request(&self, route: String, status: u16) {
        let mut requests = self.requests.lock().expect("stats lock");
        *requests
            .entry(route)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    pub fn record_rate_limited(&self, product: Product, finch_code: &str) {
        let mut limited = self.rate_limited.lock().expect("stats lock");
        *limited.entry(product.as_str().to_owned()).or_default() += 1;
        drop(limited);
        let mut by_code = self.rate_limited_by_code.lock().expect("stats lock");
        *by_code.entry(finch_code.to_owned()).or_default() += 1;
    }

    pub fn record_data_request(&self, product: Product, connection_id: &str) {
        let mut by_product = self.data_requests.lock().expect("stats lock");
        *by_product.entry(product.as_str().to_owned()).or_default() += 1;
        drop(by_product);
        let mut by_connection = self.data_requests_by_connection.lock().expect("stats lock");
        match by_connection.get_mut(connection_id) {
            Some(count) => *count += 1,
            None => {
                by_connection.insert(connection_id.to_owned(), 1);
            }
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_product = self.rate_limited.lock().expect("stats lock").clone();
        StatsSnapshot {
            requests: self.requests.lock().expect("stats lock").clone(),
            rate_limited: by_product.values().sum(),
            rate_limited_by_product: by_product,
            rate_limited_by_code: self
                .rate_limited_by_code
                .lock()
                .expect("stats lock")
                .clone(),
            data_requests: self.data_requests.lock().expect("stats lock").clone(),
            data_requests_by_connection: self
                .data_requests_by_connection
                .lock()
                .expect("stats lock")
                .clone(),
            injected_500: load(&self.faults_500),
            injected_502: load(&self.faults_502),
            syncs: load(&self.syncs),
            in_flight: load(&self.in_flight),
            webhooks: WebhookStats {
                emitted: load(&self.events_emitted),
                attempts: load(&self.deliveries_attempted),
                delivered: load(&self.webhooks_delivered),
                retried: load(&self.webhooks_retried),
                failed: load(&self.webhooks_failed),
                duplicated: load(&self.webhooks_duplicated),
            },
        }
    }
}
