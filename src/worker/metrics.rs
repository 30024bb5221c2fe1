//! The worker's Prometheus figures, in a registry of its own.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProductLabel {
    pub product: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

pub struct WorkerMetrics {
    registry: Registry,
    pub events: Family<EventLabels, Counter>,
    pub latency: Histogram,
    pub finch_requests: Family<RequestLabels, Counter>,
    pub rate_limit_wait: Family<ProductLabel, Counter<f64>>,
    pub batch_size: Histogram,
    pub retries: Counter,
    pub dead_letters: Family<ReasonLabel, Counter>,
    pub queue_depth: Family<QueueLabel, Gauge>,
    pub notifications: Counter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("finch_webhooks");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "worker_events",
            "Events finished, by kind (account, job, company, directory, individual, employment, payment, pay_statement, resync, other) and outcome (processed, skipped, retried, dead_lettered)",
            events.clone(),
        );
        // 10 ms .. ~45 min
        let latency = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register(
            "worker_processing_latency_seconds",
            "Time from receiving an event to its data being committed",
            latency.clone(),
        );
        let finch_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "worker_finch_requests",
            "Requests to the Finch API by endpoint and HTTP status (none: no answer)",
            finch_requests.clone(),
        );
        let rate_limit_wait = Family::<ProductLabel, Counter<f64>>::default();
        registry.register(
            "worker_rate_limit_wait_seconds",
            "Time spent waiting for the shared rate budget, by product",
            rate_limit_wait.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "worker_batch_events",
            "Events served by one coalesced Finch batch",
            batch_size.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "worker_retries",
            "Events sent to a delayed-retry queue",
            retries.clone(),
        );
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "worker_dead_letters",
            "Events dead-lettered, by reason",
            dead_letters.clone(),
        );
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "worker_queue_depth",
            "Ready messages in the work, retry and dead-letter queues",
            queue_depth.clone(),
        );
        let notifications = Counter::default();
        registry.register(
            "worker_synced_notifications",
            "Notifications published on finch.synced",
            notifications.clone(),
        );
        Self {
            registry,
            events,
            latency,
            finch_requests,
            rate_limit_wait,
            batch_size,
            retries,
            dead_letters,
            queue_depth,
            notifications,
        }
    }

    pub fn count_event(&self, event: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels { event, outcome })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
