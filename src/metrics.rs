//! Prometheus metrics. Each process owns its registry (no globals), so tests
//! that run several applications in one binary read their own figures.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
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
            "Webhook deliveries by outcome (accepted, duplicate, unparseable, rejected, too_large, unavailable, error)",
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
        }
    }

    pub fn count_request(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
