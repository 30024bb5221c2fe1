//! Consumes the work queue and keeps the Postgres copy of Finch data fresh.
//!
//! ```text
//! finch.events.work ──► intake ──► lanes (product × connection, coalescing)
//!                                     │ dispatcher per product: due work,
//!                                     │ shared rate budget, round robin
//!                                     ▼
//!                         Finch request ─► one transaction (+ outbox)
//!                                     │
//!                                     ▼
//!               finalizer: ack │ retry queue │ dead-letter  ─► webhook_events
//! ```

pub mod broker;
pub mod cache;
pub mod finalize;
pub mod message;
pub mod metrics;
pub mod scheduler;
pub mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt as _;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::WorkerConfig;
use crate::finch::FinchClient;
use crate::queue::{self, retry_queue_name, SYNCED_EXCHANGE, WORK_QUEUE};
use crate::store::budget::RateBudget;
use crate::store::connections;
use crate::store::finch_data::{self, Notification};
use cache::ConnectionCache;
use message::{reasons, Action, Failure, Message};
use metrics::{RequestLabels, WorkerMetrics};
use scheduler::{Scheduler, Target};

/// How long a connection row (and its decrypted token) is reused.
const CONNECTION_CACHE_TTL: Duration = Duration::from_secs(1);
/// Notifications older than this are republished by the sweeper.
const OUTBOX_STALE_SECS: f64 = 10.0;

/// What every part of the worker shares.
pub struct Context {
    pub pool: PgPool,
    pub finch: FinchClient,
    pub budget: RateBudget,
    pub connections: ConnectionCache,
    pub metrics: Arc<WorkerMetrics>,
    pub config: WorkerConfig,
    pub broker: broker::Broker,
    pub scheduler: Scheduler,
    pub in_flight: Arc<Semaphore>,
    pub tracker: TaskTracker,
    /// Stops dispatching new Finch requests.
    pub stop: CancellationToken,
    consuming: AtomicBool,
}

pub struct Application {
    listener: TcpListener,
    ctx: Arc<Context>,
}

impl Application {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool =
            crate::store::connect(&config.database_url, config.database_max_connections).await?;
        crate::store::migrate(&pool).await?;
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
                config.token_key.clone(),
                CONNECTION_CACHE_TTL,
            ),
            pool,
            finch,
            budget,
            metrics,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            broker: broker::Broker::default(),
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
        let server = axum::serve(listener, router(ctx.clone())).with_graceful_shutdown({
            let stop = http_stop.clone();
            async move { stop.cancelled().await }
        });
        let server = tokio::spawn(async move { server.await });

        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let finalizer_stop = CancellationToken::new();
        let finalizer = tokio::spawn(finalize::run(ctx.clone(), done_rx, finalizer_stop.clone()));
        let dispatchers: Vec<_> = crate::finch::Product::ALL
            .iter()
            .map(|product| tokio::spawn(sync::dispatch(ctx.clone(), ctx.scheduler.lane(*product))))
            .collect();
        let housekeeping = tokio::spawn(housekeeping(ctx.clone()));
        let stop_intake = CancellationToken::new();
        let consumer = tokio::spawn(consume(ctx.clone(), done_tx, stop_intake.clone()));

        shutdown.await;
        tracing::info!("worker stopping: no new events, finishing in-flight requests");
        stop_intake.cancel();
        // Kept open until the finalizer is done: acks need the channel.
        let connection = consumer.await.ok().flatten();
        ctx.stop.cancel();
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
        ctx.broker.set(None);
        if let Some(connection) = connection {
            connection.close(200, "worker stopping".into()).await.ok();
        }
        http_stop.cancel();
        server.await.ok();
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Connects, declares the topology and consumes, reconnecting with backoff
/// until `stop` fires. Messages held on a lost connection are redelivered
/// by the broker; processing them again is harmless.
async fn consume(
    ctx: Arc<Context>,
    done: mpsc::UnboundedSender<Arc<Message>>,
    stop: CancellationToken,
) -> Option<lapin::Connection> {
    let mut retry_in = Duration::from_millis(200);
    while !stop.is_cancelled() {
        match open_consumer(&ctx).await {
            Ok((connection, channel, mut consumer)) => {
                retry_in = Duration::from_millis(200);
                ctx.consuming.store(true, Ordering::Relaxed);
                tracing::info!(
                    queue = WORK_QUEUE,
                    prefetch = ctx.config.prefetch,
                    "consuming"
                );
                loop {
                    tokio::select! {
                        () = stop.cancelled() => {
                            channel
                                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                                .await
                                .ok();
                            ctx.consuming.store(false, Ordering::Relaxed);
                            return Some(connection);
                        }
                        delivery = consumer.next() => match delivery {
                            Some(Ok(delivery)) => intake(&ctx, delivery, &done).await,
                            Some(Err(error)) => {
                                tracing::warn!(%error, "consumer failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                ctx.consuming.store(false, Ordering::Relaxed);
                ctx.broker.set(None);
                tracing::warn!("lost the RabbitMQ consumer; reconnecting");
                connection.close(200, "reconnecting".into()).await.ok();
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, "RabbitMQ unavailable");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(retry_in) => {}
        }
        retry_in = (retry_in * 2).min(Duration::from_secs(5));
    }
    None
}

async fn open_consumer(
    ctx: &Context,
) -> lapin::Result<(lapin::Connection, lapin::Channel, lapin::Consumer)> {
    let connection = queue::connect(&ctx.config.amqp_url).await?;
    queue::declare_topology(&connection, &ctx.config.retry_delays).await?;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    ctx.broker.set(Some(publish));
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(ctx.config.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            WORK_QUEUE.into(),
            "finch-webhooks-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}

/// Routes one delivery to the work it needs.
async fn intake(
    ctx: &Arc<Context>,
    delivery: lapin::message::Delivery,
    done: &mpsc::UnboundedSender<Arc<Message>>,
) {
    let (message, parsed) = Message::from_delivery(delivery, done.clone());
    let Some(body) = parsed
        .body
        .filter(|_| !parsed.event_id.is_empty() && !parsed.event_type.is_empty())
    else {
        return message.settle(Err(Failure::dead_letter(
            reasons::UNPARSEABLE,
            "not a Finch event: no id, no type or a body that is not JSON",
        )));
    };
    let action = match message::classify(&parsed.event_type, &body) {
        Ok(action) => action,
        Err(problem) => {
            return message.settle(Err(Failure::dead_letter(reasons::UNPARSEABLE, problem)));
        }
    };
    message.set_label(action.label());
    if !action.needs_connection() {
        return message.settle(Ok(()));
    }
    let Some(connection_id) = parsed.connection_id else {
        return message.settle(Err(Failure::dead_letter(
            reasons::UNKNOWN_CONNECTION,
            "the event names no connection",
        )));
    };
    let connection = match ctx.connections.get(&connection_id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => {
            return message.settle(Err(Failure::dead_letter(
                reasons::UNKNOWN_CONNECTION,
                "no access token is stored for this connection",
            )));
        }
        Err(error) => return message.settle(Err(Failure::retry(error.to_string()))),
    };
    let row = &connection.row;
    match action {
        Action::AccountUpdated { status } => {
            message.attach(1);
            let span = message.span.clone();
            ctx.tracker.spawn(
                account_updated(ctx.clone(), connection.clone(), message.clone(), status)
                    .instrument(span),
            );
        }
        Action::Job {
            job_id,
            manual,
            kind,
        } => {
            message.attach(1);
            let span = message.span.clone();
            ctx.tracker.spawn(
                job(
                    ctx.clone(),
                    connection.clone(),
                    message.clone(),
                    job_id,
                    manual,
                    kind,
                )
                .instrument(span),
            );
        }
        // Events for a connection Finch cannot serve are acknowledged: the
        // full sync that follows its reconnection reads everything anyway.
        _ if row.is_parked() => message.note(format!("skipped: connection is {}", row.status)),
        Action::FullSync => sync::submit_full_sync(ctx, row, &message),
        Action::Company => {
            ctx.scheduler.submit(
                crate::finch::Product::Company,
                &connection_id,
                Target::Whole { follow: false },
                &message,
            );
        }
        Action::Directory => {
            ctx.scheduler.submit(
                crate::finch::Product::Directory,
                &connection_id,
                Target::Whole { follow: false },
                &message,
            );
        }
        Action::Individual { individual_id } => {
            ctx.scheduler.submit(
                crate::finch::Product::Individual,
                &connection_id,
                Target::Items(vec![individual_id]),
                &message,
            );
        }
        Action::Employment { individual_id } => {
            ctx.scheduler.submit(
                crate::finch::Product::Employment,
                &connection_id,
                Target::Items(vec![individual_id]),
                &message,
            );
        }
        Action::Payment { pay_date } => {
            let (start, end) = sync::payment_window(ctx, pay_date);
            ctx.scheduler.submit(
                crate::finch::Product::Payment,
                &connection_id,
                Target::Range {
                    start,
                    end,
                    follow: false,
                },
                &message,
            );
        }
        Action::PayStatement { payment_id } => {
            ctx.scheduler.submit(
                crate::finch::Product::PayStatement,
                &connection_id,
                Target::Items(vec![payment_id]),
                &message,
            );
        }
        Action::Record => {}
    }
    // Releases the intake's own hold on the message.
    message.settle(Ok(()));
}

/// `account.updated`: events arrive out of order, so the status comes from
/// `/introspect`, not from the event; `connected` starts a full sync.
async fn account_updated(
    ctx: Arc<Context>,
    connection: Arc<connections::Connection>,
    message: Arc<Message>,
    event_status: Option<String>,
) {
    let id = connection.row.connection_id.clone();
    let outcome = match ctx.finch.introspect(&connection.token).await {
        Ok(info) => {
            let status = info.status().to_owned();
            let updated = connections::update_details(
                &ctx.pool,
                &id,
                info.provider(),
                &info.products,
                &status,
            )
            .await;
            ctx.connections.invalidate(&id);
            match updated {
                Ok(()) => {
                    tracing::info!(connection_id = %id, status = %status, "connection status updated");
                    if status == "connected" {
                        match connections::find(&ctx.pool, &id).await {
                            Ok(Some(row)) => sync::submit_full_sync(&ctx, &row, &message),
                            Ok(None) => message.note("connection removed meanwhile"),
                            Err(error) => {
                                message.settle(Err(Failure::retry(error.to_string())));
                                return;
                            }
                        }
                    }
                    Ok(())
                }
                Err(error) => Err(Failure::retry(error.to_string())),
            }
        }
        Err(error) if error.class() == crate::finch::ErrorClass::Retry => {
            Err(Failure::from_finch(&error))
        }
        Err(error) => {
            // The token no longer works: the event's status is all we know.
            let status = event_status.unwrap_or_else(|| "reauth".to_owned());
            tracing::warn!(connection_id = %id, %status, %error, "introspection refused; using the event's status");
            ctx.connections.invalidate(&id);
            connections::set_status(&ctx.pool, &id, &status, Some(&error.to_string()))
                .await
                .map_err(|error| Failure::retry(error.to_string()))
        }
    };
    message.settle(outcome);
}

/// `job.*`: reads the job; a completed data sync means a full refetch.
async fn job(
    ctx: Arc<Context>,
    connection: Arc<connections::Connection>,
    message: Arc<Message>,
    job_id: String,
    manual: bool,
    kind: String,
) {
    let row = &connection.row;
    let response = match ctx.finch.job(&connection.token, manual, &job_id).await {
        Ok(response) => response,
        Err(error) => {
            sync::handle_side_effects(&ctx, None, row, &error).await;
            return message.settle(Err(Failure::from_finch(&error)));
        }
    };
    if let Err(error) = finch_data::record_job(
        &ctx.pool,
        &row.connection_id,
        &job_id,
        &kind,
        &response.body,
    )
    .await
    {
        return message.settle(Err(Failure::retry(error.to_string())));
    }
    let status = response
        .body
        .get("status")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let outcome = if manual {
        Ok(())
    } else {
        match status.as_str() {
            "complete" if row.is_parked() => {
                message.note(format!("skipped: connection is {}", row.status));
                Ok(())
            }
            "complete" => {
                sync::submit_full_sync(&ctx, row, &message);
                Ok(())
            }
            "pending" | "in_progress" => {
                Err(Failure::retry(format!("job {job_id} is still {status}")))
            }
            _ => {
                let note = format!("job {job_id} ended {status}");
                tracing::warn!(connection_id = %row.connection_id, %job_id, %status, "Finch job did not complete");
                let new_status = if status == "reauth_error" {
                    "reauth"
                } else {
                    row.status.as_str()
                };
                if let Err(error) =
                    connections::set_status(&ctx.pool, &row.connection_id, new_status, Some(&note))
                        .await
                {
                    tracing::warn!(%error, "could not record the job result");
                }
                ctx.connections.invalidate(&row.connection_id);
                message.note(note);
                Ok(())
            }
        }
    };
    message.settle(outcome);
}

/// Publishes committed notifications and removes them from the outbox.
pub async fn publish_notifications(ctx: &Context, notifications: Vec<Notification>) {
    if notifications.is_empty() {
        return;
    }
    let mut published = Vec::with_capacity(notifications.len());
    for notification in &notifications {
        let properties = BasicProperties::default()
            .with_content_type(message::short("application/json"))
            .with_message_id(message::short(&uuid::Uuid::new_v4().to_string()))
            .with_timestamp(chrono::Utc::now().timestamp() as u64);
        let body = notification.body.to_string();
        // Not mandatory: no subscriber yet is normal for a topic exchange.
        match ctx
            .broker
            .publish(
                SYNCED_EXCHANGE,
                &notification.routing_key,
                body.as_bytes(),
                properties,
                false,
            )
            .await
        {
            Ok(()) => published.push(notification.id),
            Err(error) => {
                tracing::warn!(%error, "notification left in the outbox for the sweeper");
                break;
            }
        }
    }
    ctx.metrics.notifications.inc_by(published.len() as u64);
    if let Err(error) = finch_data::delete_notifications(&ctx.pool, &published).await {
        tracing::warn!(%error, "could not clear published notifications; they may be sent twice");
    }
}

/// Republishes notifications whose direct publish never happened, and
/// samples queue depths for the metrics.
async fn housekeeping(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match finch_data::stale_notifications(&ctx.pool, OUTBOX_STALE_SECS, 500).await {
            Ok(stale) => publish_notifications(&ctx, stale).await,
            Err(error) => tracing::warn!(%error, "could not read the notification outbox"),
        }
        sample_queue_depths(&ctx).await;
    }
}

async fn sample_queue_depths(ctx: &Context) {
    let Ok(connection) = queue::connect(&ctx.config.amqp_url).await else {
        return;
    };
    let mut queues = vec![WORK_QUEUE.to_owned(), queue::DEAD_LETTER_QUEUE.to_owned()];
    queues.extend(
        ctx.config
            .retry_delays
            .iter()
            .map(|delay| retry_queue_name(*delay)),
    );
    for name in queues {
        // A failed passive declare closes its channel: one channel per queue.
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if let Ok(declared) = channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
        {
            ctx.metrics
                .queue_depth
                .get_or_create(&metrics::QueueLabel {
                    queue: name.clone(),
                })
                .set(i64::from(declared.message_count()));
        }
        channel.close(200, "sampled".into()).await.ok();
    }
    connection.close(200, "sampled".into()).await.ok();
}

fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readiness))
        .route("/metrics", get(render_metrics))
        .with_state(ctx)
}

async fn readiness(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&ctx.pool),
    )
    .await
    .is_ok_and(|result| result.is_ok());
    let consuming = ctx.consuming.load(Ordering::Relaxed);
    let ready = postgres && consuming;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "postgres": if postgres { "ok" } else { "unreachable" },
            "rabbitmq": if consuming { "consuming" } else { "disconnected" },
        })),
    )
}

async fn render_metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}
