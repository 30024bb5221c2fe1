//! The work queue's consumer: connects, declares the topology, opens the
//! confirm channel the worker publishes on, and hands each delivery to
//! [`route`], reconnecting with backoff until stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt as _;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::Message;
use super::{route, Context};
use crate::queue::{self, Backoff, Publisher, WORK_QUEUE};

/// The consumer's connection and channel, handed back at a stop: the
/// messages it holds are acknowledged on that channel, so it must outlive
/// the drain (dropping its last handle closes it and requeues them all).
pub(super) struct Held {
    pub connection: lapin::Connection,
    pub channel: lapin::Channel,
}

/// Connects, declares the topology and consumes, reconnecting with backoff
/// until `stop` fires. Messages held on a lost connection are redelivered
/// by the broker; processing them again is harmless.
pub(super) async fn run(
    ctx: Arc<Context>,
    done: mpsc::UnboundedSender<Arc<Message>>,
    stop: CancellationToken,
) -> Option<Held> {
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        match open_consumer(&ctx).await {
            Ok((connection, channel, mut consumer)) => {
                backoff.reset();
                let consuming = Consuming::start(&ctx.consuming);
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
                            drop(consuming);
                            return Some(Held { connection, channel });
                        }
                        delivery = consumer.next() => match delivery {
                            Some(Ok(delivery)) => route::intake(&ctx, delivery, &done).await,
                            Some(Err(error)) => {
                                tracing::warn!(%error, "consumer failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                drop(consuming);
                ctx.publisher.send_replace(None);
                tracing::warn!("lost the RabbitMQ consumer; reconnecting");
                connection.close(200, "reconnecting".into()).await.ok();
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.next_delay().as_millis() as u64, "RabbitMQ unavailable");
            }
        }
        if !backoff.wait(&stop).await {
            return None;
        }
    }
    None
}

/// Marks the work queue as consumed while it lives; dropped however the
/// consumer loop ends, a panic included, so `/readyz` never reports a
/// consumer that has stopped.
struct Consuming<'a>(&'a AtomicBool);

impl<'a> Consuming<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for Consuming<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

async fn open_consumer(
    ctx: &Context,
) -> lapin::Result<(lapin::Connection, lapin::Channel, lapin::Consumer)> {
    let connection = queue::connect(ctx.config.amqp_url.expose()).await?;
    queue::declare_topology(&connection, &ctx.config.retry_delays).await?;
    ctx.publisher
        .send_replace(Some(Publisher::open(&connection).await?));
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
