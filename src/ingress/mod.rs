//! The HTTP ingress: the endpoint registered in the Finch dashboard, plus
//! health, readiness and metrics ([`crate::health`]), and the admin API when
//! a token is set.

pub mod error;
pub mod pipeline;
pub mod tally;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::IngressConfig;
use crate::health::{self, Probe, Readiness};
use crate::metrics::IngressMetrics;
use crate::queue::BrokerLink;
use crate::signature::Verifier;
use crate::store;
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
    pub retry_after_secs: u64,
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
    /// Background commit, publish and relay tasks, drained at shutdown.
    pipeline: Pipeline,
    /// Ends the broker connection task once the pipeline has drained.
    stop_link: CancellationToken,
    link_task: JoinHandle<()>,
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
        let pool = store::connect(&config.database_url, config.database_max_connections).await?;
        store::migrate(&pool).await?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen_addr))?;

        let metrics = Arc::new(IngressMetrics::new());
        let stop_link = CancellationToken::new();
        let (link, link_task) = BrokerLink::start(
            config.amqp_url.clone(),
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
        let admin = config.admin_token.as_ref().map(|token| {
            crate::admin::router(
                token,
                config.amqp_url.clone(),
                config.retry_delays.clone(),
                pool.clone(),
                config.console.clone(),
            )
        });
        let state = AppState {
            verifier: Arc::new(config.verifier),
            intake,
            pool: pool.clone(),
            link,
            metrics,
            tally: tally::Tally::start(pool.clone()),
            max_body_bytes: config.max_body_bytes,
            retry_after_secs: config.retry_after_secs,
            clock,
        };
        let router = match admin {
            Some(admin) => router(state).merge(admin),
            None => router(state),
        };
        Ok(Self {
            listener,
            router,
            pipeline,
            stop_link,
            link_task,
            shutdown_timeout: config.shutdown_timeout,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
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
            pipeline,
            stop_link,
            link_task,
            shutdown_timeout,
            pool: _,
        } = self;
        let stopping = CancellationToken::new();
        let server = axum::serve(listener, router).with_graceful_shutdown({
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        });
        let server = tokio::spawn(async move { server.await });
        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => result??,
            () = stopping.cancelled() => {
                match tokio::time::timeout(shutdown_timeout, &mut server).await {
                    Ok(result) => result??,
                    Err(_) => {
                        tracing::warn!("in-flight requests still running at the shutdown timeout; closing them");
                        // Dropping the server drops the router, which lets the pipeline drain.
                        server.abort();
                    }
                }
            }
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
            post(webhook::receive).fallback(|| async { error::IngressError::MethodNotAllowed }),
        )
        .with_state(state.clone())
        .merge(health::router(Arc::new(state)))
}

/// Ready while Postgres answers: events can then be made durable, and the
/// outbox covers a missing broker. Broker state and backlog are reported.
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
        Readiness::new()
            .require("postgres", postgres, "ok", "unreachable")
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
