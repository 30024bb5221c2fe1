//! How many messages wait in a queue.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Channel;

/// Ready messages in `queue` (not those delivered and unacknowledged), by a
/// passive declare. A queue that does not exist is an error, and the broker
/// closes `channel` with it: give each queue that may be missing a channel
/// of its own.
pub async fn ready_messages(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}
