//! Keeps one broker connection with a confirm channel alive, reconnecting with
//! backoff. Callers never wait for the broker: they ask for the current
//! publisher and get `None` while RabbitMQ is away.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{declare_topology, Publisher};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
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
    /// Starts the connection task; it ends when `shutdown` is cancelled.
    pub fn start(amqp_url: String, shutdown: CancellationToken) -> (Self, JoinHandle<()>) {
        let (current, _) = watch::channel(None);
        let link = Self {
            current,
            suspect: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(link.clone().maintain(amqp_url, shutdown));
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

    async fn maintain(self, amqp_url: String, shutdown: CancellationToken) {
        let mut retry_in = FIRST_RETRY;
        while !shutdown.is_cancelled() {
            match self.connect(&amqp_url).await {
                Ok((connection, publisher)) => {
                    tracing::info!("connected to RabbitMQ");
                    retry_in = FIRST_RETRY;
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
                    tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, "RabbitMQ unavailable");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry_in) => {}
            }
            retry_in = (retry_in * 2).min(LONGEST_RETRY);
        }
    }

    async fn connect(&self, amqp_url: &str) -> lapin::Result<(lapin::Connection, Publisher)> {
        let connection = super::connect(amqp_url).await?;
        declare_topology(&connection, &super::DEFAULT_RETRY_DELAYS).await?;
        let publisher = Publisher::open(&connection).await?;
        Ok((connection, publisher))
    }
}
