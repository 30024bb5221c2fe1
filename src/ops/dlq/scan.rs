//! Reading the DLQ without disturbing it.
//!
//! AMQP has no "peek", so a scan consumes with manual acknowledgement and an
//! unlimited prefetch, so every message can be held at once, and stops after the
//! number of messages the queue held when it started (later arrivals are
//! not its business). What the caller acknowledges leaves the queue;
//! everything else goes back when the scan closes its channel.
//!
//! The scan returns what it kept by closing its channel. The DLQ is a
//! classic queue because that is what makes this work at any depth: a
//! quorum queue hands a consumer at most 65,535 unacknowledged messages
//! (2,000 with an unlimited prefetch on RabbitMQ 3.10), and puts explicitly
//! nacked messages back in an order of its own; a classic queue returns them
//! to their original positions (measured; see docs/operations.md). Redelivered
//! flags do not matter: the DLQ has no delivery limit.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use crate::queue::{ready_messages, DEAD_LETTER_QUEUE};

/// How long a scan waits for the next delivery before concluding that the
/// messages it was told about were taken by someone else.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long closing waits for the broker to make returned messages ready
/// again, so that the next operation sees all of them.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Scan {
    /// Holds the deliveries; closing it returns what was not acknowledged.
    channel: Channel,
    /// Outlives `channel`, to watch the returned messages become ready.
    control: Channel,
    consumer: Consumer,
    queue: String,
    /// Ready messages when the scan began: the most it will deliver.
    expected: u32,
    delivered: u32,
    /// Messages the caller acknowledged, which will not come back.
    settled: u32,
}

impl Scan {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        Self::open_queue(connection, DEAD_LETTER_QUEUE).await
    }

    pub async fn open_queue(connection: &Connection, queue: &str) -> lapin::Result<Self> {
        let control = connection.create_channel().await?;
        let expected = ready_messages(&control, queue).await?;
        let channel = connection.create_channel().await?;
        // 0 = no prefetch limit: the whole backlog must be in flight at once,
        // since nothing that stays may be acknowledged to make room.
        channel.basic_qos(0, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "finch-webhooks-dlq".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            control,
            consumer,
            queue: queue.to_owned(),
            expected,
            delivered: 0,
            settled: 0,
        })
    }

    /// Messages in the queue when the scan started.
    pub fn expected(&self) -> u32 {
        self.expected
    }

    /// The next message in queue order, or `None` once every message present
    /// at the start has been seen.
    pub async fn next(&mut self) -> lapin::Result<Option<Delivery>> {
        if self.delivered >= self.expected {
            return Ok(None);
        }
        match tokio::time::timeout(IDLE_TIMEOUT, self.consumer.next()).await {
            Ok(Some(delivery)) => {
                self.delivered += 1;
                Ok(Some(delivery?))
            }
            Ok(None) => Ok(None),
            Err(_) => {
                tracing::warn!(
                    expected = self.expected,
                    seen = self.delivered,
                    "stopped waiting for DLQ messages; another consumer may hold some"
                );
                Ok(None)
            }
        }
    }

    /// Acknowledges `delivery`: it leaves the queue for good.
    pub async fn remove(&mut self, delivery: &Delivery) -> lapin::Result<()> {
        delivery
            .acker
            .ack(lapin::options::BasicAckOptions::default())
            .await?;
        self.settled += 1;
        Ok(())
    }

    /// Returns every message not removed to the queue, in order, and waits
    /// until the broker shows them as ready again.
    pub async fn finish(self) -> lapin::Result<()> {
        let Self {
            channel,
            control,
            consumer,
            queue,
            expected,
            delivered,
            settled,
        } = self;
        // Cancelled and confirmed before the channel closes: dropping an
        // active consumer sends its cancel from a background task, which can
        // reach the broker after the close, and the broker answers a method
        // on a closed channel by closing the whole connection.
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        drop(consumer);
        channel.close(200, "scan finished".into()).await?;
        if delivered > settled {
            // Others may consume meanwhile, so this is a bounded wait, not a check.
            let wanted = expected.saturating_sub(settled);
            let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
            while tokio::time::Instant::now() < deadline
                && ready_messages(&control, &queue).await? < wanted
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        control.close(200, "scan finished".into()).await.ok();
        Ok(())
    }
}
