//! `finch.synced`: announcing committed changes. A commit writes its
//! notifications to an outbox in the same transaction; they are published
//! right after it, and the sweep republishes any a crash or outage left.

use lapin::BasicProperties;

use super::Context;
use crate::queue::contract::JSON;
use crate::queue::publisher::short;
use crate::queue::{Envelope, SYNCED_EXCHANGE};
use crate::store::finch_data::{self, Notification};
use crate::telemetry::ErrorChain;

/// Notifications older than this are republished by the sweep.
const OUTBOX_STALE_SECS: f64 = 10.0;
/// Most notifications one sweep republishes.
const SWEEP_BATCH: i64 = 500;

/// Publishes committed notifications and removes them from the outbox.
pub(super) async fn publish(ctx: &Context, notifications: Vec<Notification>) {
    if notifications.is_empty() {
        return;
    }
    let mut published = Vec::with_capacity(notifications.len());
    for notification in &notifications {
        let body = notification.body.to_string();
        let sent = async {
            let properties = BasicProperties::default()
                .with_content_type(short("content type", JSON)?)
                .with_message_id(short("message id", &uuid::Uuid::new_v4().to_string())?)
                .with_timestamp(chrono::Utc::now().timestamp() as u64);
            ctx.publish(Envelope {
                exchange: SYNCED_EXCHANGE,
                routing_key: &notification.routing_key,
                // No subscriber yet is normal for a topic exchange.
                mandatory: false,
                body: body.as_bytes(),
                properties,
            })
            .await
        };
        match sent.await {
            Ok(()) => published.push(notification.id),
            Err(error) => {
                tracing::warn!(%error, "notification left in the outbox for the sweeper");
                break;
            }
        }
    }
    ctx.metrics.notifications.inc_by(published.len() as u64);
    if let Err(error) = finch_data::delete_notifications(&ctx.pool, &published).await {
        tracing::warn!(error = %ErrorChain(&error), "could not clear published notifications; they may be sent twice");
    }
}

/// Republishes notifications whose direct publish never happened.
pub(super) async fn sweep_outbox(ctx: &Context) {
    match finch_data::stale_notifications(&ctx.pool, OUTBOX_STALE_SECS, SWEEP_BATCH).await {
        Ok(stale) => publish(ctx, stale).await,
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "could not read the notification outbox");
        }
    }
}
