//! Hostile and unlucky input: what each gets from the ingress and the worker,
//! and that none of it stalls the pipeline.

use std::time::Duration;

use finch_webhooks::queue::contract::Headers as _;
use finch_webhooks::queue::{DEAD_LETTER_QUEUE, WORK_QUEUE};
use finch_webhooks::signature::{WebhookSecret, MAX_SIGNATURE_ENTRIES};

use crate::helpers::*;

/// `count` entries, the valid signature last, so only a verifier that looks
/// at every entry finds it.
fn signature_list(event_id: &str, timestamp: i64, body: &str, count: usize) -> String {
    let good = WebhookSecret::parse(SECRET)
        .unwrap()
        .sign(event_id, timestamp, body.as_bytes());
    let mut entries = vec!["v1,bm90IHRoZSBzaWduYXR1cmU=".to_owned(); count - 1];
    entries.push(good);
    entries.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_header_over_the_entry_cap_is_a_400_and_stores_nothing() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("directory.created", "conn-cap");
    let timestamp = now();

    let at_cap = signature_list("msg_cap_ok", timestamp, &body, MAX_SIGNATURE_ENTRIES);
    let response = ingress
        .deliver_raw("msg_cap_ok", &timestamp.to_string(), &at_cap, body.clone())
        .await;
    assert_eq!(response.status(), 200, "{MAX_SIGNATURE_ENTRIES} entries");

    for count in [MAX_SIGNATURE_ENTRIES + 1, 300] {
        let over = signature_list("msg_cap_over", timestamp, &body, count);
        let response = ingress
            .deliver_raw("msg_cap_over", &timestamp.to_string(), &over, body.clone())
            .await;
        assert_eq!(response.status(), 400, "{count} entries");
        let refusal: serde_json::Value = response.json().await.unwrap();
        assert_eq!(refusal["error"], "malformed_header", "{count} entries");
        assert_eq!(refusal["header"], "finch-signature", "{count} entries");
    }
    assert_eq!(
        row_count(&ingress.pool).await,
        1,
        "only the delivery at the cap is stored"
    );
}

/// A signed Finch event whose event type is longer than any AMQP routing
/// key: answered 200, stored, dead-lettered under its own reason, and the
/// outbox keeps moving for the events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_too_long_to_route_is_dead_lettered_and_the_outbox_keeps_moving() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    ingress.wait_for_broker().await;

    let long_type = format!("directory.{}", "x".repeat(290));
    let long_connection = "c".repeat(300);
    let oversized = [
        ("msg_long_type", event_body(&long_type, "conn-long")),
        (
            "msg_long_connection",
            event_body("directory.created", &long_connection),
        ),
    ];
    for (event_id, body) in &oversized {
        let response = ingress.deliver(event_id, body).await;
        assert_eq!(response.status(), 200, "{event_id}");
        let receipt: serde_json::Value = response.json().await.unwrap();
        assert_eq!(receipt["status"], "accepted", "{event_id}");
        assert_eq!(
            receipt["dead_letter_reason"], "invalid_envelope",
            "{event_id}"
        );
    }
    let response = ingress
        .deliver(
            "msg_after_long",
            &event_body("directory.created", "conn-ok"),
        )
        .await;
    assert_eq!(response.status(), 200);

    eventually(
        Duration::from_secs(10),
        "outbox_backlog back to 0",
        || async {
            let ready: serde_json::Value = ingress
                .client
                .get(ingress.url("/readyz"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ready["outbox_backlog"] == 0
        },
    )
    .await;
    let mut dead = take_all(&amqp, DEAD_LETTER_QUEUE).await;
    dead.sort_by_key(|message| message.delivery.properties.message_id().clone());
    let dead_ids: Vec<String> = dead
        .iter()
        .map(|message| {
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(dead_ids, ["msg_long_connection", "msg_long_type"]);
    for message in &dead {
        assert_eq!(message.delivery.routing_key.as_str(), "invalid_envelope");
        let table = message.delivery.properties.headers().clone().unwrap();
        assert_eq!(
            table.text("dead_letter_reason").as_deref(),
            Some("invalid_envelope")
        );
    }
    let work = take_all(&amqp, WORK_QUEUE).await;
    let work_ids: Vec<String> = work
        .iter()
        .map(|message| {
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        work_ids,
        ["msg_after_long"],
        "the next event is still published"
    );
    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT event_id, dead_letter_reason FROM webhook_events ORDER BY event_id")
            .fetch_all(&ingress.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            ("msg_after_long".to_owned(), None),
            (
                "msg_long_connection".to_owned(),
                Some("invalid_envelope".to_owned())
            ),
            (
                "msg_long_type".to_owned(),
                Some("invalid_envelope".to_owned())
            ),
        ]
    );
}
