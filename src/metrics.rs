//! Prometheus metrics of both roles. Each process owns its registries (no
//! globals), so tests that run several applications in one binary read
//! their own figures; `/metrics` (see [`crate::health`]) renders the
//! registry of the role it serves.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// A verification failure's reason (ingress) or a dead letter's (worker).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

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
pub struct QueueLabel {
    pub queue: String,
}

fn render(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The ingress's figures.
pub struct IngressMetrics {
    registry: Registry,
    pub requests: Family<OutcomeLabel, Counter>,
    pub verification_failures: Family<ReasonLabel, Counter>,
    pub duplicates: Counter,
    pub request_duration: Histogram,
    pub batch_size: Histogram,
    pub publish_latency: Histogram,
    pub published: Family<OutcomeLabel, Counter>,
    pub outbox_backlog: Gauge,
    pub broker_connected: Gauge,
    /// Each restart of the outbox relay after it failed or panicked.
    pub relay_restarts: Counter,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngressMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("finch_webhooks");
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "ingress_requests",
            "Webhook deliveries by outcome (accepted, duplicate, unparseable, invalid_envelope, rejected, too_large, unavailable, error)",
            requests.clone(),
        );
        let verification_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "ingress_verification_failures",
            "Deliveries refused by signature or header checks, by reason",
            verification_failures.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "ingress_duplicates",
            "Deliveries of an event id that was already stored",
            duplicates.clone(),
        );
        // 0.25 ms .. ~4 s
        let request_duration = Histogram::new(exponential_buckets(0.00025, 2.0, 15));
        registry.register(
            "ingress_request_duration_seconds",
            "Time from request to response for webhook deliveries",
            request_duration.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "ingress_commit_batch_size",
            "Events written per Postgres commit",
            batch_size.clone(),
        );
        let publish_latency = Histogram::new(exponential_buckets(0.00025, 2.0, 18));
        registry.register(
            "ingress_publish_latency_seconds",
            "Time from the event's commit to the broker's confirm",
            publish_latency.clone(),
        );
        let published = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "ingress_published_messages",
            "Publish attempts by outcome (confirmed, failed) and path (direct or relay)",
            published.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "ingress_outbox_backlog",
            "Stored events not yet confirmed by RabbitMQ",
            outbox_backlog.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "ingress_broker_connected",
            "1 while the RabbitMQ connection is up",
            broker_connected.clone(),
        );
        let relay_restarts = Counter::default();
        registry.register(
            "ingress_outbox_relay_restarts",
            "Restarts of the outbox relay after it failed or panicked",
            relay_restarts.clone(),
        );
        Self {
            registry,
            requests,
            verification_failures,
            duplicates,
            request_duration,
            batch_size,
            publish_latency,
            published,
            outbox_backlog,
            broker_connected,
            relay_restarts,
        }
    }

    pub fn count_request(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The worker's figures.
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

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
