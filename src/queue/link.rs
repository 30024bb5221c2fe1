//! Keeps one broker connection with a confirm channel alive, reconnecting with
//! backoff. Callers never wait for the broker: they ask for the current
//! publisher and get `None` while RabbitMQ is away.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{declare_topology, Backoff, Publisher};

/// How often a quiet connection is checked for having died silently.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct BrokerLink {
    /// The usable publisher, or `None` while disconnected; watchers wake on change.
    current: watch::Sender<Option<Publisher>>,
    /// Raised by callers whose publish failed, so the link checks itself at once.
    suspect: Arc<Notify>,
}

impl BrokerLink {
    /// Starts the connection task, which declares the topology with
    /// `retry_delays` on every connect; it ends when `shutdown` is cancelled.
    pub fn start(
        amqp_url: String,
        retry_delays: Vec<Duration>,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (current, _) = watch::channel(None);
        let link = Self {
            current,
            suspect: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(link.clone().maintain(amqp_url, retry_delays, shutdown));
        (link, task)
    }

    pub fn publisher(&self) -> Option<Publisher> {
        self.current.borrow().clone()
    }

    pub fn is_connected(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Watches the connection state (for relays that wait for the broker to return).
    pub fn subscribe(&self) -> watch::Receiver<Option<Publisher>> {
        self.current.subscribe()
    }

    /// Tells the link a publish failed; it verifies the connection right away.
    pub fn report_failure(&self) {
        self.suspect.notify_one();
    }

    async fn maintain(
        self,
        amqp_url: String,
        retry_delays: Vec<Duration>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            match self.connect(&amqp_url, &retry_delays).await {
                Ok((connection, publisher)) => {
                    tracing::info!("connected to RabbitMQ");
                    backoff.reset();
                    self.current.send_replace(Some(publisher.clone()));
                    let mut events = connection.events_listener();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => {
                                self.current.send_replace(None);
                                connection.close(200, "shutting down".into()).await.ok();
                                return;
                            }
                            event = events.next() => {
                                if matches!(event, None | Some(lapin::Event::Error(_))) {
                                    break;
                                }
                            }
                            () = self.suspect.notified() => {}
                            () = tokio::time::sleep(HEALTH_CHECK_EVERY) => {}
                        }
                        if !connection.status().connected() || !publisher.is_open() {
                            break;
                        }
                    }
                    self.current.send_replace(None);
                    tracing::warn!(
                        "lost the RabbitMQ connection; events wait in the outbox until it is back"
                    );
                    connection.close(200, "reconnecting".into()).await.ok();
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.next_delay().as_millis() as u64, "RabbitMQ unavailable");
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    async fn connect(
        &self,
        amqp_url: &str,
        retry_delays: &[Duration],
    ) -> lapin::Result<(lapin::Connection, Publisher)> {
        let connection = super::connect(amqp_url).await?;
        declare_topology(&connection, retry_delays).await?;
        let publisher = Publisher::open(&connection).await?;
        Ok((connection, publisher))
    }
}
