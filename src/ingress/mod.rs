//! The HTTP ingress: the endpoint registered in the Finch dashboard, plus
//! health and readiness ([`crate::health`]) on the public port; metrics and
//! the admin API on a second, private port ([`crate::admin::router`]).

pub mod error;
pub mod listener;
pub mod pipeline;
pub mod tally;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::config::IngressConfig;
use crate::health::{self, Probe, Readiness};
use crate::metrics::IngressMetrics;
use crate::queue::BrokerLink;
use crate::signature::Verifier;
use crate::store;
use listener::ConnectionLimits;
use pipeline::{Intake, Pipeline, PipelineSettings};

/// What every handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub verifier: Arc<Verifier>,
    pub intake: Intake,
    pub pool: PgPool,
    pub link: BrokerLink,
    pub metrics: Arc<IngressMetrics>,
    /// Per-minute answer counts the console's overview reads.
    pub tally: tally::Tally,
    pub max_body_bytes: usize,
    /// A delivery not answered this long after its headers gets 408.
    pub request_timeout: Duration,
    pub retry_after_secs: u64,
    /// Whether the outbox relay runs; not ready while it does not.
    pub relay_running: Arc<AtomicBool>,
    /// Wall clock in unix seconds; replaceable so tests can pin time.
    pub clock: Clock,
}

/// Source of the current unix time in seconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The real wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

/// A bound, ready-to-run ingress. Binding happens in [`Application::build`]
/// so that tests can ask for port 0 and read the real port before running.
pub struct Application {
    /// Bound before running so the port is known (and taken) early.
    listener: TcpListener,
    /// Routes with their state; moved into the server when it runs.
    router: Router,
    /// The private port of the admin API and `/metrics`.
    admin_listener: TcpListener,
    /// Its routes, from [`crate::admin::router`].
    admin_router: Router,
    /// Background commit, publish and relay tasks, drained at shutdown.
    pipeline: Pipeline,
    /// Ends the broker connection task once the pipeline has drained.
    stop_link: CancellationToken,
    link_task: JoinHandle<()>,
    /// What slow or hostile clients may hold of the listener.
    connection_limits: ConnectionLimits,
    /// Bounds how long in-flight requests may hold up a shutdown.
    shutdown_timeout: Duration,
    /// Kept for tests that inspect the store directly.
    pool: PgPool,
}

impl Application {
    /// Connects to Postgres (creating and migrating the database), starts the
    /// broker link (which may come up later), and binds the listener.
    pub async fn build(config: IngressConfig) -> anyhow::Result<Self> {
        Self::build_with_clock(config, system_clock()).await
    }

    /// As [`Application::build`], judging timestamps by `clock`.
    pub async fn build_with_clock(config: IngressConfig, clock: Clock) -> anyhow::Result<Self> {
        let pool = store::open(
            config.database_url.expose(),
            config.database_max_connections,
            config.migrate_on_start,
        )
        .await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr))?;
        let admin_listener =
            TcpListener::bind(config.admin_listen_addr)
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "cannot listen on {} (ADMIN_LISTEN_ADDR): {error}",
                        config.admin_listen_addr
                    )
                })?;

        let metrics = Arc::new(IngressMetrics::new());
        let stop_link = CancellationToken::new();
        let (link, link_task) = BrokerLink::start(
            config.amqp_url.expose().to_owned(),
            config.retry_delays.clone(),
            stop_link.clone(),
        );
        let (intake, pipeline) = Pipeline::start(
            pool.clone(),
            link.clone(),
            metrics.clone(),
            PipelineSettings {
                batch_max: config.ingest_batch_max,
                outbox_poll_interval: config.outbox_poll_interval,
                outbox_grace: config.outbox_grace,
            },
        );
        let admin_settings = crate::admin::AdminSettings {
            token: config.admin_token.clone(),
            amqp_url: config.amqp_url.clone(),
            retry_delays: config.retry_delays.clone(),
            auth_failures_per_minute: config.admin_auth_failures_per_minute,
            console: config.console.clone(),
        };
        let state = AppState {
            verifier: Arc::new(config.verifier),
            intake,
            pool: pool.clone(),
            link,
            metrics,
            tally: tally::Tally::start(pool.clone()),
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            retry_after_secs: config.retry_after_secs,
            relay_running: pipeline.relay_running(),
            clock,
        };
        let admin_router = crate::admin::router(
            admin_settings,
            pool.clone(),
            health::metrics_router(Arc::new(state.clone())),
        );
        Ok(Self {
            listener,
            router: router(state),
            admin_listener,
            admin_router,
            pipeline,
            stop_link,
            link_task,
            connection_limits: config.connection_limits,
            shutdown_timeout: config.shutdown_timeout,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the admin API and `/metrics` answer.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish (up to the shutdown timeout), commits and publishes
    /// what is queued, and closes the broker connection.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            admin_listener,
            admin_router,
            pipeline,
            stop_link,
            link_task,
            connection_limits,
            shutdown_timeout,
            pool: _,
        } = self;
        let stopping = CancellationToken::new();
        // Admin requests hold no deliveries: they stop with the public port.
        let admin_server = axum::serve(
            admin_listener,
            admin_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown({
            let stopping = stopping.clone();
            async move { stopping.cancelled().await }
        });
        let mut admin_server = tokio::spawn(async move { admin_server.await });
        listener::serve(
            listener,
            router,
            connection_limits,
            {
                let stopping = stopping.clone();
                async move {
                    shutdown.await;
                    stopping.cancel();
                }
            },
            shutdown_timeout,
        )
        .await;
        stopping.cancel();
        if tokio::time::timeout(shutdown_timeout, &mut admin_server)
            .await
            .is_err()
        {
            tracing::warn!("admin requests still running at the shutdown timeout; closing them");
            // Its `/metrics` holds an Intake too: the pipeline drains once it is gone.
            admin_server.abort();
        }
        // The router (and with it every Intake) is gone: the writers flush and stop.
        if tokio::time::timeout(shutdown_timeout, pipeline.drain())
            .await
            .is_err()
        {
            tracing::warn!("pipeline did not drain in time; unpublished events stay in the outbox");
        }
        stop_link.cancel();
        link_task.await.ok();
        tracing::info!("ingress stopped");
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/finch",
            post(webhook::receive)
                .fallback(|| async { error::IngressError::MethodNotAllowed })
                // The whole delivery, body included: a client trickling its
                // body holds a connection and up to max_body_bytes until then.
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    state.request_timeout,
                )),
        )
        .with_state(state.clone())
        .merge(health::router(Arc::new(state)))
}

/// Ready while Postgres answers and the outbox relay runs: events can then
/// be made durable, and the outbox covers a missing broker. Broker state
/// and backlog are reported.
impl Probe for AppState {
    async fn readiness(&self) -> Readiness {
        let postgres = health::postgres_answers(&self.pool).await;
        let backlog = if postgres {
            store::events::outbox_backlog(&self.pool).await.ok()
        } else {
            None
        };
        let rabbitmq = if self.link.is_connected() {
            "connected"
        } else {
            "disconnected"
        };
        let relay = self.relay_running.load(Ordering::Relaxed);
        Readiness::new()
            .require("postgres", postgres, "ok", "unreachable")
            .require("outbox_relay", relay, "running", "stopped")
            .report("rabbitmq", rabbitmq)
            .report("outbox_backlog", backlog)
    }

    fn metrics(&self) -> String {
        self.metrics
            .broker_connected
            .set(i64::from(self.link.is_connected()));
        self.metrics.render()
    }
}
