//! Consumes the work queue and keeps the Postgres copy of Finch data fresh.
//!
//! ```text
//! finch.events.work ──► consume ──► route ──► scheduler lanes (product × connection,
//!                                     │          coalescing)
//!                                     │            │ dispatch per product: due work,
//!                       account, job handlers      │ shared rate budget, round robin
//!                                                  ▼
//!                                  fetch ─► commit (one transaction + outbox) ─► notify
//!                                     │
//!                                     ▼
//!               finalize: ack │ retry queue │ dead-letter  ─► webhook_events
//! ```
//!
//! Each file has one reason to change:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Context`] (what every part shares) and [`Application`] (start, stop) |
//! | [`consume`] | the work-queue consumer and its reconnects |
//! | [`message`] | one message's life: its waiters, its outcome ([`message::Failure`]) |
//! | [`action`] | what an event asks for, from its type and body |
//! | [`route`] | from a delivery to its work: scheduled reads or a handler; what a full sync or sweep reads |
//! | [`account`] | the `account.updated` handler |
//! | [`job`] | the `job.*` handler: a completed data sync records Finch's freshness, no request |
//! | [`scheduler`] | coalescing lanes per product and connection, events before sweeps, fair turns |
//! | [`dispatch`] | one loop per product sending due work out within the budget (sweeps below the reserve) |
//! | [`fetch`] | reading a batch from Finch, one file per product family |
//! | [`horizon`] | the retry horizon of each failure class, in one table |
//! | [`finch_failure`] | applying that table: scope pauses, parked connections, retries |
//! | [`sweep`] | the scheduler (one worker, by lease): reconciliation sweeps and resumes |
//! | [`commit`] | one transaction per batch, with its notifications |
//! | [`notify`] | publishing `finch.synced` notifications and sweeping their outbox |
//! | [`finalize`] | ack, retry or dead-letter each settled message, recorded on `webhook_events` |
//! | [`housekeeping`] | periodic chores: the outbox sweep, queue-depth samples |
//! | [`cache`] | a short-lived cache of connections and their tokens |

pub mod account;
pub mod action;
pub mod cache;
pub mod commit;
pub mod consume;
pub mod dispatch;
pub mod fetch;
pub mod finalize;
pub mod finch_failure;
pub mod horizon;
pub mod housekeeping;
pub mod job;
pub mod message;
pub mod notify;
pub mod route;
pub mod scheduler;
pub mod sweep;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WorkerConfig;
use crate::finch::FinchClient;
use crate::health::{self, Probe, Readiness};
use crate::metrics::{RequestLabels, WorkerMetrics};
use crate::queue::{Envelope, PublishError, Publisher};
use crate::store::budget::RateBudget;
use cache::ConnectionCache;
use scheduler::Scheduler;

/// How long a connection row (and its decrypted token) is reused.
const CONNECTION_CACHE_TTL: Duration = Duration::from_secs(1);

/// What every part of the worker shares.
pub struct Context {
    /// The copy, the connections, `webhook_events` and the shared budget.
    pub pool: PgPool,
    /// The Finch API; counts every request in the metrics.
    pub finch: FinchClient,
    /// Finch's per-application rate limits, shared with every other worker.
    pub budget: RateBudget,
    /// Rows and decrypted tokens reused briefly, so a burst reads each once.
    pub connections: ConnectionCache,
    /// Served at `/metrics`.
    pub metrics: Arc<WorkerMetrics>,
    /// The validated settings.
    pub config: WorkerConfig,
    /// The confirm channel on the consumer's connection; `None` while disconnected.
    pub publisher: watch::Sender<Option<Publisher>>,
    /// Collects requests per product and connection, so events share batches.
    pub scheduler: Scheduler,
    /// Caps concurrent Finch requests (`worker_max_in_flight`).
    pub in_flight: Arc<Semaphore>,
    /// Every spawned request and handler, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Stops dispatching new Finch requests.
    pub stop: CancellationToken,
    /// Whether the work queue is being consumed; `/readyz` requires it.
    consuming: AtomicBool,
}

impl Context {
    /// Publishes through the current connection's confirm channel.
    pub async fn publish(&self, envelope: Envelope<'_>) -> Result<(), PublishError> {
        let publisher = self
            .publisher
            .borrow()
            .clone()
            .ok_or(PublishError::Disconnected)?;
        publisher.publish(envelope).await
    }
}

pub struct Application {
    listener: TcpListener,
    ctx: Arc<Context>,
}

impl Application {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool = crate::store::open(
            config.database_url.expose(),
            config.database_max_connections,
            config.migrate_on_start,
        )
        .await?;
        let budget = RateBudget::new(pool.clone(), &config.rate_limits);
        budget.prepare().await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr))?;
        let metrics = Arc::new(WorkerMetrics::new());
        let finch = FinchClient::new(&config.finch).with_observer({
            let metrics = metrics.clone();
            Arc::new(move |endpoint: &str, status: Option<u16>| {
                metrics
                    .finch_requests
                    .get_or_create(&RequestLabels {
                        endpoint: endpoint.to_owned(),
                        status: status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                    })
                    .inc();
            })
        });
        let ctx = Arc::new(Context {
            connections: ConnectionCache::new(
                pool.clone(),
                config.token_keys.clone(),
                CONNECTION_CACHE_TTL,
            ),
            pool,
            finch,
            budget,
            metrics,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            publisher: watch::Sender::new(None),
            scheduler: Scheduler::new(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            consuming: AtomicBool::new(false),
        });
        Ok(Self { listener, ctx })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.ctx.metrics.clone()
    }

    /// Consumes until `shutdown` resolves; then stops consuming, lets
    /// in-flight requests finish and their messages be settled (up to the
    /// shutdown timeout), and closes the broker connection, which returns
    /// every message not yet acknowledged to the queue.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { listener, ctx } = self;
        let http_stop = CancellationToken::new();
        // A private port: health and metrics together, as Prometheus and the kubelet expect.
        let routes = health::router(ctx.clone()).merge(health::metrics_router(ctx.clone()));
        let server = axum::serve(listener, routes).with_graceful_shutdown({
            let stop = http_stop.clone();
            async move { stop.cancelled().await }
        });
        let server = tokio::spawn(async move { server.await });

        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let finalizer_stop = CancellationToken::new();
        let finalizer = tokio::spawn(finalize::run(ctx.clone(), done_rx, finalizer_stop.clone()));
        let dispatchers: Vec<_> = crate::finch::Product::ALL
            .iter()
            .map(|product| tokio::spawn(dispatch::run(ctx.clone(), ctx.scheduler.lane(*product))))
            .collect();
        let housekeeping = tokio::spawn(housekeeping::run(ctx.clone()));
        let sweeper = tokio::spawn(sweep::run(ctx.clone()));
        let stop_intake = CancellationToken::new();
        let consumer = tokio::spawn(consume::run(ctx.clone(), done_tx, stop_intake.clone()));

        shutdown.await;
        tracing::info!("worker stopping: no new events, finishing in-flight requests");
        stop_intake.cancel();
        // Kept open until the finalizer is done: acks need the channel.
        let held = consumer.await.ok().flatten();
        ctx.stop.cancel();
        sweeper.await.ok();
        for dispatcher in dispatchers {
            dispatcher.await.ok();
        }
        ctx.tracker.close();
        let deadline = ctx.config.shutdown_timeout;
        if tokio::time::timeout(deadline, ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Finch requests still running at the shutdown timeout");
        }
        finalizer_stop.cancel();
        if tokio::time::timeout(deadline, finalizer).await.is_err() {
            tracing::warn!(
                "some settled events were not finalized in time; they will be redelivered"
            );
        }
        housekeeping.abort();
        ctx.publisher.send_replace(None);
        if let Some(held) = held {
            held.channel.close(200, "worker stopping".into()).await.ok();
            held.connection
                .close(200, "worker stopping".into())
                .await
                .ok();
        }
        http_stop.cancel();
        server.await.ok();
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Ready while Postgres answers and the work queue is being consumed.
impl Probe for Context {
    async fn readiness(&self) -> Readiness {
        let postgres = health::postgres_answers(&self.pool).await;
        let consuming = self.consuming.load(Ordering::Relaxed);
        Readiness::new()
            .require("postgres", postgres, "ok", "unreachable")
            .require("rabbitmq", consuming, "consuming", "disconnected")
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }
}
