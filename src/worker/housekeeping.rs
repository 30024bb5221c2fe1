//! Periodic chores: the notification outbox sweep and the queue-depth
//! samples of the metrics.

use std::sync::Arc;
use std::time::Duration;

use super::{notify, Context};
use crate::metrics::QueueLabel;
use crate::queue::{self, retry_queue_name, WORK_QUEUE};

/// How often the chores run.
const EVERY: Duration = Duration::from_secs(5);

/// Republishes notifications whose direct publish never happened, and
/// samples queue depths for the metrics.
pub(super) async fn run(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        notify::sweep_outbox(&ctx).await;
        sample_queue_depths(&ctx).await;
    }
}

async fn sample_queue_depths(ctx: &Context) {
    let Ok(connection) = queue::connect(ctx.config.amqp_url.expose()).await else {
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
        // A missing queue closes the channel it was asked on: one per queue.
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        if let Ok(ready) = queue::ready_messages(&channel, &name).await {
            ctx.metrics
                .queue_depth
                .get_or_create(&QueueLabel {
                    queue: name.clone(),
                })
                .set(i64::from(ready));
        }
        channel.close(200, "sampled".into()).await.ok();
    }
    connection.close(200, "sampled".into()).await.ok();
}
