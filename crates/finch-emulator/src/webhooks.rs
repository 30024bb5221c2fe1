//! Webhook delivery the way Finch does it: signed POSTs, retried on Finch's
//! schedule, with neither uniqueness nor order guaranteed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use finch_core::signature::{signature_header, WebhookSecret};

/// Delays before each retry after a failed first attempt, in Finch time:
/// immediately, 5 s, 5 min, 30 min, 2 h.
pub const RETRY_SCHEDULE: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 60 * 60),
];

/// How long a shuffling target collects events before sending them in a random order.
const SHUFFLE_WINDOW: Duration = Duration::from_millis(100);

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh event id: `msg_` and 27 base62 characters, like Finch's. Random
/// rather than seeded, so a restarted emulator never repeats an id that a
/// receiver has already deduplicated.
pub fn event_id() -> String {
    let mut rng = rand::rng();
    let tail: String = (0..27)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect();
    format!("msg_{tail}")
}

/// The ids every payload carries.
#[derive(Debug, Clone)]
pub struct EventSource {
    pub company_id: String,
    pub account_id: String,
    pub connection_id: String,
}

/// One event ready to send: the body is fixed, the signature is made per attempt.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub event_type: String,
    pub body: Arc<Vec<u8>>,
}

impl Outgoing {
    pub fn new(source: &EventSource, event_type: &str, data: Value) -> Self {
        Self::for_entity(source, None, event_type, data)
    }

    /// An event about one entity's data carries its `entity_id`.
    pub fn for_entity(
        source: &EventSource,
        entity_id: Option<&str>,
        event_type: &str,
        data: Value,
    ) -> Self {
        let mut payload = json!({
            "company_id": source.company_id,
            "account_id": source.account_id,
            "connection_id": source.connection_id,
            "event_type": event_type,
            "data": data,
        });
        if let Some(entity_id) = entity_id {
            payload["entity_id"] = json!(entity_id);
        }
        Self {
            id: event_id(),
            event_type: event_type.to_owned(),
            body: Arc::new(serde_json::to_vec(&payload).expect("JSON values serialise")),
        }
    }
}

/// Sends one delivery attempt. Returns the status, or an error for a transport failure.
pub async fn send_once(
    client: &reqwest::Client,
    url: &str,
    secrets: &[WebhookSecret],
    event: &Outgoing,
    timeout: Duration,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature_header(secrets, &event.id, timestamp, &event.body);
    let response = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("finch-event-id", &event.id)
        .header("finch-timestamp", timestamp.to_string())
        .header("finch-signature", signature)
        .body(event.body.as_ref().clone())
        .send()
        .await?;
    Ok(response.status())
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub secrets: Vec<WebhookSecret>,
    pub duplicate_rate: f64,
    pub shuffle: bool,
    pub concurrency: usize,
    pub timeout: Duration,
    pub time_scale: f64,
}

/// Fans events out to every configured target, each with its own queue and task.
pub struct Dispatcher {
    targets: Vec<mpsc::UnboundedSender<Outgoing>>,
    stats: Arc<Stats>,
    duplicate_rate: f64,
    rng: Mutex<StdRng>,
}

impl Dispatcher {
    pub fn start(
        urls: &[String],
        settings: DeliverySettings,
        stats: Arc<Stats>,
        cancel: CancellationToken,
    ) -> Self {
        let client = reqwest::Client::builder()
            .user_agent("finch-webhooks-emulator")
            .build()
            .expect("an HTTP client can be built");
        let targets = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::unbounded_channel();
                let target = Target {
                    url: url.clone(),
                    client: client.clone(),
                    settings: settings.clone(),
                    stats: stats.clone(),
                    cancel: cancel.clone(),
                };
                tokio::spawn(target.run(rx));
                tx
            })
            .collect();
        Self {
            targets,
            stats,
            duplicate_rate: settings.duplicate_rate,
            rng: Mutex::new(StdRng::from_os_rng()),
        }
    }

    pub fn emit(&self, events: Vec<Outgoing>) {
        for event in events {
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, "webhook event");
            let duplicate = self.duplicate_rate > 0.0
                && self
                    .rng
                    .lock()
                    .expect("rng lock")
                    .random_bool(self.duplicate_rate.min(1.0));
            for target in &self.targets {
                Stats::bump(&self.stats.events_emitted);
                let _ = target.send(event.clone());
                if duplicate {
                    Stats::bump(&self.stats.webhooks_duplicated);
                    let _ = target.send(event.clone());
                }
            }
        }
    }
}

struct Target {
    url: String,
    client: reqwest::Client,
    settings: DeliverySettings,
    stats: Arc<Stats>,
    cancel: CancellationToken,
}

impl Target {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.settings.concurrency.max(1)));
        let mut rng = StdRng::from_os_rng();
        loop {
            let first = tokio::select! {
                () = this.cancel.cancelled() => return,
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let mut batch = vec![first];
            if this.settings.shuffle {
                tokio::time::sleep(SHUFFLE_WINDOW).await;
            }
            while let Ok(event) = rx.try_recv() {
                batch.push(event);
            }
            if this.settings.shuffle {
                batch.shuffle(&mut rng);
            }
            for event in batch {
                let permit = tokio::select! {
                    () = this.cancel.cancelled() => return,
                    permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                };
                let target = this.clone();
                tokio::spawn(async move {
                    let delivered = target.attempt(&event).await;
                    drop(permit);
                    if !delivered {
                        target.retry(event).await;
                    }
                });
            }
        }
    }

    async fn attempt(&self, event: &Outgoing) -> bool {
        Stats::bump(&self.stats.deliveries_attempted);
        let outcome = send_once(
            &self.client,
            &self.url,
            &self.settings.secrets,
            event,
            self.settings.timeout,
        )
        .await;
        match outcome {
            Ok(status) if status.is_success() => {
                Stats::bump(&self.stats.webhooks_delivered);
                true
            }
            Ok(status) => {
                tracing::debug!(event_id = %event.id, %status, "webhook delivery refused");
                false
            }
            Err(error) => {
                tracing::debug!(event_id = %event.id, error = %error, "webhook delivery failed");
                false
            }
        }
    }

    async fn retry(&self, event: Outgoing) {
        for delay in RETRY_SCHEDULE {
            let delay = delay.div_f64(self.settings.time_scale);
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            Stats::bump(&self.stats.webhooks_retried);
            if self.attempt(&event).await {
                return;
            }
        }
        Stats::bump(&self.stats.webhooks_failed);
        tracing::warn!(event_id = %event.id, url = %self.url, "webhook given up after the retry schedule");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_look_like_finch_ids() {
        let id = event_id();
        assert!(id.starts_with("msg_"));
        assert_eq!(id.len(), 31);
        assert_ne!(id, event_id());
    }

    #[test]
    fn payload_has_the_common_fields() {
        let source = EventSource {
            company_id: "c".into(),
            account_id: "a".into(),
            connection_id: "n".into(),
        };
        let event = Outgoing::new(&source, "directory.created", json!({"individual_id": "i"}));
        let body: Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(body["company_id"], "c");
        assert_eq!(body["account_id"], "a");
        assert_eq!(body["connection_id"], "n");
        assert_eq!(body["event_type"], "directory.created");
        assert_eq!(body["data"]["individual_id"], "i");
    }
}
