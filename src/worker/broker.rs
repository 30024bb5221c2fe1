//! Publishing from the worker: retries, dead letters and `finch.synced`
//! notifications, each confirmed by the broker before the caller proceeds.

use std::sync::RwLock;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};

use super::message::short;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ")]
    Disconnected,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for the message (returned as unroutable)")]
    Unroutable,
}

/// The current confirm-mode channel, replaced on reconnect.
#[derive(Default)]
pub struct Broker {
    channel: RwLock<Option<Channel>>,
}

impl Broker {
    pub fn set(&self, channel: Option<Channel>) {
        *self.channel.write().expect("broker lock") = channel;
    }

    pub fn is_connected(&self) -> bool {
        self.channel
            .read()
            .expect("broker lock")
            .as_ref()
            .is_some_and(|channel| channel.status().connected())
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    /// `mandatory` turns "no queue bound" into an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let channel = self
            .channel
            .read()
            .expect("broker lock")
            .clone()
            .ok_or(PublishError::Disconnected)?;
        let confirm = channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable);
        }
        Ok(())
    }
}
