//! The sweep scheduler: one worker at a time (by a lease row) queues a
//! reconciliation of every connection on its cadence, and resumes parked
//! connections whose wait is over.
//!
//! Automated connections are swept every `sweep_every`, each at a slot
//! spread evenly over the cadence. Assisted connections get no data events:
//! at each of their slots, spread over `assisted_check_every`, their
//! `/introspect` is read, and a new `last_successful_sync` (Finch's weekly
//! refresh) queues a sweep. A sweep is a message on the work
//! queue like any event, so any worker runs it; its reads are background
//! work that takes only the budget events leave (see [`dispatch`](super::dispatch)).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::route;
use super::Context;
use crate::queue::contract::SWEEP_EVENT_TYPE;
use crate::queue::OutgoingEvent;
use crate::store::sweeps::{self, Due};
use crate::store::{connections, lease, parking, StoreError};
use crate::telemetry::ErrorChain;

/// The lease that makes one worker the scheduler.
const LEASE: &str = "sweep_scheduler";
/// Most resumes one tick handles.
const RESUMES_PER_TICK: i64 = 100;

/// Runs until the worker stops; schedules only while this worker holds the lease.
pub(super) async fn run(ctx: Arc<Context>) {
    let holder = format!(
        "worker-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let fleet = &ctx.config.fleet;
    let mut tick = tokio::time::interval(fleet.scheduler_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ctx.stop.cancelled() => break,
        }
        match lease::hold(&ctx.pool, LEASE, &holder, fleet.scheduler_lease).await {
            Ok(true) => {
                if !leading {
                    tracing::info!(%holder, "this worker now runs the sweep scheduler");
                }
                leading = true;
            }
            Ok(false) => {
                leading = false;
                continue;
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not renew the scheduler lease");
                continue;
            }
        }
        if let Err(error) = tick_once(&ctx).await {
            tracing::warn!(error = %ErrorChain(&error), "sweep scheduler tick failed");
        }
    }
    if leading {
        lease::release(&ctx.pool, LEASE, &holder).await.ok();
    }
}

async fn tick_once(ctx: &Context) -> Result<(), StoreError> {
    for connection_id in parking::due_resumes(&ctx.pool, RESUMES_PER_TICK).await? {
        if route::resume(ctx, &connection_id, "its wait is over")
            .await
            .is_ok()
        {
            queue_sweep(ctx, &connection_id).await;
        }
    }
    let fleet = &ctx.config.fleet;
    sweeps::assign_slots(&ctx.pool, fleet.sweep_every, fleet.assisted_check_every).await?;
    // The slots are spread evenly; twice the even share lets a backlog
    // (after downtime) drain without a spike.
    let (automated, assisted) = sweeps::scheduled(&ctx.pool).await?;
    let tick = fleet.scheduler_tick.as_secs_f64();
    let even_share = automated.max(0) as f64 * tick / fleet.sweep_every.as_secs_f64()
        + assisted.max(0) as f64 * tick / fleet.assisted_check_every.as_secs_f64();
    let per_tick = (even_share * 2.0).ceil() as i64 + 1;
    for due in sweeps::due(&ctx.pool, per_tick).await? {
        if due.kind == "assisted" {
            check_assisted(ctx, &due).await?;
        } else if queue_sweep(ctx, &due.connection_id).await {
            sweeps::advance(&ctx.pool, &due.connection_id, fleet.sweep_every, None).await?;
        }
    }
    Ok(())
}

/// An assisted connection is swept after each of Finch's refreshes, which
/// its `/introspect` shows. Finch's refresh times are compared only with
/// each other, never with our clock.
async fn check_assisted(ctx: &Context, due: &Due) -> Result<(), StoreError> {
    let every = ctx.config.fleet.assisted_check_every;
    let connection = match ctx.connections.get(&due.connection_id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return Ok(()),
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), connection_id = %due.connection_id, "cannot check the assisted connection");
            return sweeps::advance(&ctx.pool, &due.connection_id, every, None).await;
        }
    };
    let refreshed = match ctx.finch.introspect(&connection.token).await {
        Ok(info) => {
            let last = info.last_successful_sync();
            connections::record_introspection(
                &ctx.pool,
                &due.connection_id,
                info.kind(),
                &info.entity_ids(),
                last,
            )
            .await?;
            last.filter(|refresh| due.swept_finch_sync_at.is_none_or(|swept| *refresh > swept))
        }
        Err(error) => {
            tracing::warn!(%error, connection_id = %due.connection_id, "could not introspect the assisted connection");
            None
        }
    };
    let Some(refresh) = refreshed else {
        return sweeps::advance(&ctx.pool, &due.connection_id, every, None).await;
    };
    if !queue_sweep(ctx, &due.connection_id).await {
        // Asked again at the next tick.
        return Ok(());
    }
    sweeps::advance(&ctx.pool, &due.connection_id, every, Some(refresh)).await
}

/// Queues a sweep message for any worker to run; false if the broker did
/// not take it (the slot stays due).
async fn queue_sweep(ctx: &Context, connection_id: &str) -> bool {
    let Some(publisher) = ctx.publisher.borrow().clone() else {
        tracing::warn!(
            connection_id,
            "no broker connection; the sweep waits for the next tick"
        );
        return false;
    };
    let body = json!({
        "connection_id": connection_id,
        "event_type": SWEEP_EVENT_TYPE,
        "data": null,
    });
    let event = OutgoingEvent {
        event_id: format!("sweep_{}", uuid::Uuid::new_v4().simple()),
        event_type: Some(SWEEP_EVENT_TYPE.to_owned()),
        connection_id: Some(connection_id.to_owned()),
        body: Bytes::from(body.to_string()),
        dead_letter_reason: None,
        traceparent: None,
    };
    let mut queued = true;
    for outcome in publisher.publish_all(std::slice::from_ref(&event)).await {
        if let Err(error) = outcome {
            tracing::warn!(%error, connection_id, "could not queue a sweep");
            queued = false;
        }
    }
    queued
}
