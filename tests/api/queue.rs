//! The AMQP layer against a real broker: the topology follows the settings
//! wherever it is declared, and the publisher's verdicts.

use std::process::Command;

use bytes::Bytes;
use finch_webhooks::queue::{
    Envelope, OutgoingEvent, PublishError, Publisher, DEAD_LETTER_QUEUE, RETRY_QUEUE_PREFIX,
    SYNCED_EXCHANGE, WORK_QUEUE,
};
use lapin::BasicProperties;

use crate::helpers::{binary, queue_len, rabbitmq_management_url, unique, TestEnv, TestIngress};

/// The retry queues of the test vhost, with their TTLs in milliseconds.
async fn retry_queues(env: &TestEnv) -> Vec<(String, i64)> {
    let queues: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!(
            "{}/api/queues/{}?columns=name,arguments",
            rabbitmq_management_url(),
            env.vhost
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .expect("listing the vhost's queues")
        .json()
        .await
        .unwrap();
    let mut retry: Vec<(String, i64)> = queues
        .iter()
        .filter_map(|queue| {
            let name = queue["name"].as_str()?;
            name.starts_with(RETRY_QUEUE_PREFIX).then(|| {
                let ttl = queue["arguments"]["x-message-ttl"].as_i64().unwrap_or(-1);
                (name.to_owned(), ttl)
            })
        })
        .collect();
    retry.sort();
    retry
}

#[tokio::test]
async fn migrate_declares_exactly_the_retry_queues_of_the_configured_delays() {
    let env = TestEnv::new().await;
    let output = Command::new(env!("CARGO_BIN_EXE_finch-webhooks"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("WORKER_RETRY_DELAYS", "7s,3m")
        .output()
        .expect("binary runs");
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(retry_queues(&env).await, seven_seconds_and_three_minutes());
}

/// The queues of `WORKER_RETRY_DELAYS=7s,3m`.
fn seven_seconds_and_three_minutes() -> [(String, i64); 2] {
    [
        ("finch.events.retry.3m".to_owned(), 180_000),
        ("finch.events.retry.7s".to_owned(), 7_000),
    ]
}

#[tokio::test]
async fn the_dlq_commands_declare_exactly_the_retry_queues_of_the_configured_delays() {
    let env = TestEnv::new().await;
    let output = binary(&env)
        .args(["dlq", "list", "--json"])
        .env("WORKER_RETRY_DELAYS", "7s,3m")
        .output()
        .await
        .expect("binary runs");
    assert!(
        output.status.success(),
        "dlq list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(retry_queues(&env).await, seven_seconds_and_three_minutes());
}

#[tokio::test]
async fn the_admin_api_declares_exactly_the_retry_queues_of_the_configured_delays() {
    const ADMIN_TOKEN: &str = "an-admin-token-long-enough";
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(
        &env,
        &[
            ("admin_token", ADMIN_TOKEN),
            ("worker_retry_delays", "7s,3m"),
        ],
    )
    .await;
    ingress.wait_for_broker().await;
    // The ingress declared the ladder on connecting; anything else is the admin API's.
    assert_eq!(retry_queues(&env).await, seven_seconds_and_three_minutes());
    let response = ingress
        .client
        .get(ingress.admin_url("/admin/dlq"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(retry_queues(&env).await, seven_seconds_and_three_minutes());
    ingress.stop().await;
}

#[tokio::test]
async fn a_value_too_long_for_amqp_is_dead_lettered_as_invalid_envelope_and_the_rest_of_the_batch_is_confirmed(
) {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let publisher = Publisher::open(&amqp).await.unwrap();
    let event = |event_type: String| OutgoingEvent {
        event_id: unique("evt"),
        event_type: Some(event_type),
        connection_id: Some("conn".to_owned()),
        body: Bytes::from_static(b"{}"),
        dead_letter_reason: None,
        traceparent: None,
    };
    let too_long = format!("individual.{}", "x".repeat(300));
    let events = [
        event("individual.updated".to_owned()),
        event(too_long),
        event("directory.created".to_owned()),
    ];
    let results = publisher.publish_all(&events).await;
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 2);
    assert_eq!(
        queue_len(&amqp, DEAD_LETTER_QUEUE).await,
        1,
        "the event that cannot be routed is dead-lettered, not lost"
    );
    assert!(
        publisher.is_open(),
        "a value too long for AMQP leaves the channel usable"
    );
}

#[tokio::test]
async fn a_mandatory_message_no_queue_takes_is_unroutable_and_an_optional_one_is_confirmed() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let publisher = Publisher::open(&amqp).await.unwrap();
    let envelope = |mandatory| Envelope {
        // Nobody subscribed to finch.synced in a fresh vhost.
        exchange: SYNCED_EXCHANGE,
        routing_key: "company.updated",
        mandatory,
        body: b"{}",
        properties: BasicProperties::default(),
    };
    assert!(matches!(
        publisher.publish(envelope(true)).await,
        Err(PublishError::Unroutable)
    ));
    publisher
        .publish(envelope(false))
        .await
        .expect("an optional message may go nowhere");
}
