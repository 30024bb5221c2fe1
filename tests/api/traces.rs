//! Distributed tracing: one delivery is one trace, and its context travels
//! in the AMQP message for the worker to continue.

use std::time::Duration;

use finch_webhooks::queue::WORK_QUEUE;
use lapin::types::AMQPValue;
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::SpanData;

use crate::helpers::*;

fn trace_id_of(traceparent: &str) -> TraceId {
    let hex = traceparent
        .split('-')
        .nth(1)
        .expect("version-traceid-spanid-flags");
    TraceId::from_hex(hex).unwrap()
}

/// Every finished span of the trace whose request span carries `event_id`.
pub fn trace_of_event(event_id: &str) -> Vec<SpanData> {
    let spans = collected_spans().get_finished_spans().unwrap();
    let request = spans
        .iter()
        .find(|s| {
            s.name == "POST /webhooks/finch"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "event_id" && kv.value.as_str() == event_id)
        })
        .unwrap_or_else(|| panic!("no request span for {event_id}"));
    let trace = request.span_context.trace_id();
    spans
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

#[tokio::test]
async fn a_delivery_is_one_trace_from_request_to_confirmed_publish() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    ingress.wait_for_broker().await;
    let event_id = unique("msg_traced");
    let response = ingress
        .deliver(&event_id, &event_body("company.updated", "conn-t"))
        .await;
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(10), "published", || async {
        queue_len(&amqp, WORK_QUEUE).await == 1
    })
    .await;
    let message = take_all(&amqp, WORK_QUEUE).await.remove(0);
    let headers = message.delivery.properties.headers().clone().unwrap();
    let Some(AMQPValue::LongString(traceparent)) = headers.inner().get("traceparent") else {
        panic!("no traceparent header on the message");
    };
    let traceparent = traceparent.to_string();
    ingress.stop().await;

    let spans = trace_of_event(&event_id);
    let request = spans
        .iter()
        .find(|s| s.name == "POST /webhooks/finch")
        .unwrap();
    let commit = spans
        .iter()
        .find(|s| s.name == "commit webhook_events")
        .expect("commit span in the trace");
    let publish = spans
        .iter()
        .find(|s| s.name == "finch.events publish")
        .expect("publish span in the trace");
    assert_eq!(request.span_kind, SpanKind::Server);
    assert_eq!(commit.parent_span_id, request.span_context.span_id());
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, request.span_context.span_id());

    assert_eq!(
        trace_id_of(&traceparent),
        request.span_context.trace_id(),
        "the message carries the trace"
    );
    assert!(
        traceparent.contains(&publish.span_context.span_id().to_string()),
        "its parent is the publish span"
    );
}

#[tokio::test]
async fn one_webhook_is_one_trace_from_the_ingress_to_the_workers_finch_call() {
    use finch_emulator::{Emulator, EmulatorConfig};

    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 3,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let settings = crate::worker::worker_settings(&env, emulator.base_url(), &[]);
    let config = settings.worker().unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    let seeded = &emulator.connections()[0];
    let token = secrecy::SecretString::from(seeded.access_token.clone());
    finch_webhooks::ops::connections::add(&ingress.pool, &config.token_keys, &finch, &token)
        .await
        .unwrap();
    let worker = crate::worker::TestWorker::start(settings).await;

    let event_id = unique("msg_e2e");
    let response = ingress
        .deliver(
            &event_id,
            &event_body("company.updated", &seeded.connection_id),
        )
        .await;
    assert_eq!(response.status(), 200);
    eventually(
        Duration::from_secs(30),
        "the worker processed the event",
        || async { crate::worker::event_state(&ingress.pool, &event_id).await.0 },
    )
    .await;
    worker.stop().await;
    ingress.stop().await;

    let spans = trace_of_event(&event_id);
    let named = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no '{name}' span in the trace; have {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let publish = named("finch.events publish");
    let process = named("company.updated process");
    let batch = named("sync company");
    let call = named("GET company");
    let commit = named("commit finch data");
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        process.parent_span_id,
        publish.span_context.span_id(),
        "the worker continues the publish"
    );
    assert_eq!(batch.parent_span_id, process.span_context.span_id());
    assert_eq!(call.span_kind, SpanKind::Client);
    assert_eq!(call.parent_span_id, batch.span_context.span_id());
    assert_eq!(commit.parent_span_id, batch.span_context.span_id());
    let attribute = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute(call, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(call, "finch.product").as_deref(), Some("company"));
    assert!(attribute(call, "finch.request_id").is_some_and(|id| !id.is_empty()));
    assert_eq!(
        attribute(process, "connection_id").as_deref(),
        Some(seeded.connection_id.as_str())
    );
}
