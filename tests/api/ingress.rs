//! The ingress against real Postgres and RabbitMQ: every verification rule,
//! dedupe, durability before 200, and the outbox across broker outages.

use std::sync::Arc;
use std::time::Duration;

use finch_webhooks::queue::{DEAD_LETTER_QUEUE, WORK_QUEUE};
use finch_webhooks::signature::WebhookSecret;
use lapin::types::AMQPValue;
use serde_json::Value;

use crate::helpers::*;

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

fn header_str(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn signed_event_is_stored_then_published_with_its_identity() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("directory.created", "conn-1");

    let (status, reply) = json(ingress.deliver("msg_first", &body).await).await;
    assert_eq!(
        (status, reply),
        (200, serde_json::json!({"status": "accepted"}))
    );

    let row: (Option<String>, Option<String>, Vec<u8>) = sqlx::query_as(
        "SELECT event_type, connection_id, body FROM webhook_events WHERE event_id = 'msg_first'",
    )
    .fetch_one(&ingress.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            Some("directory.created".into()),
            Some("conn-1".into()),
            body.clone().into_bytes()
        )
    );

    let amqp = env.amqp().await;
    eventually(Duration::from_secs(10), "message in work queue", || async {
        queue_len(&amqp, WORK_QUEUE).await == 1
    })
    .await;
    let messages = take_all(&amqp, WORK_QUEUE).await;
    let message = &messages[0];
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("msg_first")
    );
    assert_eq!(
        properties.kind().as_ref().map(|kind| kind.as_str()),
        Some("directory.created")
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        header_str(message, "connection_id").as_deref(),
        Some("conn-1")
    );
    assert_eq!(message.delivery.routing_key.as_str(), "directory.created");
    assert_eq!(
        message.delivery.data,
        body.as_bytes(),
        "raw body, byte for byte"
    );

    eventually(Duration::from_secs(5), "row marked published", || async {
        sqlx::query_scalar::<_, bool>("SELECT published_at IS NOT NULL FROM webhook_events")
            .fetch_one(&ingress.pool)
            .await
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn redelivery_is_a_duplicate_stored_and_published_once() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("individual.updated", "conn-1");

    let first = json(ingress.deliver("msg_dup", &body).await).await;
    let second = json(ingress.deliver("msg_dup", &body).await).await;
    assert_eq!(first, (200, serde_json::json!({"status": "accepted"})));
    assert_eq!(second, (200, serde_json::json!({"status": "duplicate"})));

    let amqp = env.amqp().await;
    eventually(Duration::from_secs(10), "one message published", || async {
        queue_len(&amqp, WORK_QUEUE).await == 1
    })
    .await;
    // Give a second publish (which must not happen) time to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 1);
    assert_eq!(row_count(&ingress.pool).await, 1);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_id_store_one_row_and_one_message() {
    let env = TestEnv::new().await;
    let ingress = Arc::new(TestIngress::start(&env, &[]).await);
    let body = event_body("pay_statement.created", "conn-1");

    let deliveries = (0..200).map(|_| {
        let ingress = ingress.clone();
        let body = body.clone();
        tokio::spawn(async move { json(ingress.deliver("msg_same", &body).await).await })
    });
    let replies = futures::future::join_all(deliveries).await;
    let statuses: Vec<String> = replies
        .into_iter()
        .map(|reply| {
            let (status, body) = reply.unwrap();
            assert_eq!(status, 200);
            body["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| *s == "accepted").count(), 1);
    assert_eq!(statuses.iter().filter(|s| *s == "duplicate").count(), 199);
    assert_eq!(row_count(&ingress.pool).await, 1);

    let amqp = env.amqp().await;
    eventually(Duration::from_secs(10), "one message", || async {
        queue_len(&amqp, WORK_QUEUE).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 1);
}

#[tokio::test]
async fn each_missing_or_malformed_header_is_a_400_naming_it_and_stores_nothing() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("company.updated", "conn-1");
    let ts = now();
    let good = WebhookSecret::parse(SECRET)
        .unwrap()
        .sign("msg_h", ts, body.as_bytes());

    for missing in ["finch-event-id", "finch-timestamp", "finch-signature"] {
        let mut request = ingress
            .client
            .post(ingress.url("/webhooks/finch"))
            .body(body.clone());
        for (name, value) in [
            ("finch-event-id", "msg_h".to_owned()),
            ("finch-timestamp", ts.to_string()),
            ("finch-signature", good.clone()),
        ] {
            if name != missing {
                request = request.header(name, value);
            }
        }
        let (status, reply) = json(request.send().await.unwrap()).await;
        assert_eq!(status, 400, "without {missing}");
        assert_eq!(
            reply,
            serde_json::json!({"error": "missing_header", "header": missing})
        );
    }

    // Header names are case-insensitive.
    let response = ingress
        .client
        .post(ingress.url("/webhooks/finch"))
        .header("FINCH-EVENT-ID", "msg_h")
        .header("Finch-Timestamp", ts.to_string())
        .header("finch-SIGNATURE", good.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for bad_timestamp in ["yesterday", "1688737757.5", "", "1e9"] {
        let (status, reply) = json(
            ingress
                .deliver_raw("msg_t", bad_timestamp, &good, body.clone())
                .await,
        )
        .await;
        let expected_error = if bad_timestamp.is_empty() {
            "missing_header"
        } else {
            "malformed_header"
        };
        assert_eq!(status, 400, "timestamp {bad_timestamp:?}");
        assert_eq!(reply["error"], expected_error);
    }
    let long_id = "m".repeat(300);
    let (status, reply) = json(
        ingress
            .deliver_raw(&long_id, &ts.to_string(), &good, body.clone())
            .await,
    )
    .await;
    assert_eq!(
        (status, reply["header"].as_str()),
        (400, Some("finch-event-id"))
    );

    assert_eq!(
        row_count(&ingress.pool).await,
        1,
        "only the case-insensitive delivery was stored"
    );
}

#[tokio::test]
async fn signatures_that_do_not_match_are_401_and_store_nothing() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("employment.updated", "conn-1");
    let ts = now();
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let good = secret.sign("msg_s", ts, body.as_bytes());
    let good_b64 = good.strip_prefix("v1,").unwrap();

    let cases = [
        (
            "wrong secret",
            WebhookSecret::parse(NEW_SECRET)
                .unwrap()
                .sign("msg_s", ts, body.as_bytes()),
        ),
        ("bad base64", "v1,@@not-base64@@".to_owned()),
        ("v2 only", format!("v2,{good_b64}")),
        ("no version", good_b64.to_owned()),
        (
            "signature of another event id",
            secret.sign("msg_other", ts, body.as_bytes()),
        ),
        (
            "signature of another timestamp",
            secret.sign("msg_s", ts - 1, body.as_bytes()),
        ),
    ];
    for (case, signature) in cases {
        let (status, reply) = json(
            ingress
                .deliver_raw("msg_s", &ts.to_string(), &signature, body.clone())
                .await,
        )
        .await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (401, Some("invalid_signature")),
            "{case}"
        );
    }

    // A one-byte change in the body breaks the signature.
    let mut tampered = body.clone().into_bytes();
    let position = tampered.iter().position(|b| *b == b'e').unwrap();
    tampered[position] = b'E';
    let (status, _) = json(
        ingress
            .deliver_raw("msg_s", &ts.to_string(), &good, tampered)
            .await,
    )
    .await;
    assert_eq!(status, 401, "one changed byte");

    assert_eq!(row_count(&ingress.pool).await, 0);
    let metrics = ingress
        .client
        .get(ingress.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "finch_webhooks_ingress_verification_failures_total{reason=\"invalid_signature\"} 7"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn signature_lists_rotation_and_mixed_versions() {
    let env = TestEnv::new().await;
    // The service trusts both the old and the new secret while rotating.
    let both = format!("{SECRET},whsec_{NEW_SECRET}");
    let ingress = TestIngress::start(&env, &[("finch_webhook_secret", both.as_str())]).await;
    let body = event_body("directory.updated", "conn-1");
    let ts = now();
    let old = WebhookSecret::parse(SECRET).unwrap();
    let new = WebhookSecret::parse(NEW_SECRET).unwrap();
    let unknown = WebhookSecret::parse("dW5rbm93bi1zZWNyZXQ=").unwrap();

    let sign = |secret: &WebhookSecret, id: &str| secret.sign(id, ts, body.as_bytes());
    let v2 = |secret: &WebhookSecret, id: &str| sign(secret, id).replacen("v1,", "v2,", 1);
    let cases: Vec<(&str, String, u16)> = vec![
        ("old secret only", sign(&old, "msg_r1"), 200),
        ("new secret only", sign(&new, "msg_r2"), 200),
        (
            "both, as Finch sends during rotation",
            format!("{} {}", sign(&old, "msg_r3"), sign(&new, "msg_r3")),
            200,
        ),
        (
            "unknown then valid",
            format!("{} {}", sign(&unknown, "msg_r4"), sign(&new, "msg_r4")),
            200,
        ),
        (
            "v2 then v1",
            format!("{} {}", v2(&old, "msg_r5"), sign(&old, "msg_r5")),
            200,
        ),
        (
            "malformed entries skipped",
            format!("junk v1 v1,a,b  {}", sign(&new, "msg_r6")),
            200,
        ),
        (
            "valid digests labelled v2 only",
            format!("{} {}", v2(&old, "msg_r7"), v2(&new, "msg_r7")),
            401,
        ),
        (
            "v2 valid, v1 wrong",
            format!("{} {}", v2(&old, "msg_r8"), sign(&unknown, "msg_r8")),
            401,
        ),
    ];
    for (case, signature, expected) in cases {
        let id = signature_id(case);
        let response = ingress
            .deliver_raw(id, &ts.to_string(), &signature, body.clone())
            .await;
        assert_eq!(response.status().as_u16(), expected, "{case}");
    }
    assert_eq!(row_count(&ingress.pool).await, 6);

    fn signature_id(case: &str) -> &'static str {
        match case {
            "old secret only" => "msg_r1",
            "new secret only" => "msg_r2",
            "both, as Finch sends during rotation" => "msg_r3",
            "unknown then valid" => "msg_r4",
            "v2 then v1" => "msg_r5",
            "malformed entries skipped" => "msg_r6",
            "valid digests labelled v2 only" => "msg_r7",
            _ => "msg_r8",
        }
    }
}

#[tokio::test]
async fn timestamps_are_accepted_exactly_at_the_tolerance_and_refused_just_past_it() {
    let env = TestEnv::new().await;
    // Time is pinned so the boundary is exact, not subject to the clock ticking mid-test.
    let pinned = 1_800_000_000;
    let clock = Arc::new(move || pinned);
    let ingress = TestIngress::start_with(env.settings(&[]), Some(clock)).await;
    let body = event_body("company.updated", "conn-1");

    let cases = [
        ("exactly 300 s old", pinned - 300, 200, None),
        ("exactly 300 s ahead", pinned + 300, 200, None),
        ("301 s old", pinned - 301, 401, Some("timestamp_too_old")),
        ("301 s ahead", pinned + 301, 401, Some("timestamp_too_new")),
    ];
    for (index, (case, ts, expected, error)) in cases.into_iter().enumerate() {
        let id = format!("msg_ts{index}");
        let (status, reply) = json(ingress.deliver_signed(&id, ts, &body, &[SECRET]).await).await;
        assert_eq!(status, expected, "{case}");
        assert_eq!(reply["error"].as_str(), error, "{case}");
    }
    assert_eq!(row_count(&ingress.pool).await, 2);
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_declared_or_streamed() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[("max_body_bytes", "1024")]).await;
    let big = format!(
        "{{\"event_type\":\"test\",\"pad\":\"{}\"}}",
        "x".repeat(2048)
    );

    let (status, reply) = json(ingress.deliver("msg_big", &big).await).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Chunked, with no Content-Length: refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; 512])).collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let signature = secret.sign("msg_stream", now(), b"irrelevant");
    let response = ingress
        .deliver_raw("msg_stream", &now().to_string(), &signature, stream)
        .await;
    assert_eq!(response.status(), 413);

    // At the limit is fine.
    let fits = format!(
        "{{\"event_type\":\"test\",\"pad\":\"{}\"}}",
        "x".repeat(1024 - 30)
    );
    assert_eq!(fits.len(), 1024);
    assert_eq!(ingress.deliver("msg_fits", &fits).await.status(), 200);
    assert_eq!(row_count(&ingress.pool).await, 1);
}

#[tokio::test]
async fn signed_bodies_that_are_not_events_are_stored_and_dead_lettered_with_200() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let bodies = [
        "[1,2,3]",
        "{\"data\":{}}",
        "not json at all",
        "{\"event_type\":7}",
    ];
    for (index, body) in bodies.iter().enumerate() {
        let (status, reply) = json(ingress.deliver(&format!("msg_bad{index}"), body).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            reply,
            serde_json::json!({"status": "accepted", "dead_letter_reason": "unparseable"})
        );
    }
    let stored: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, dead_letter_reason FROM webhook_events ORDER BY event_id",
    )
    .fetch_all(&ingress.pool)
    .await
    .unwrap();
    assert_eq!(stored, vec![(None, Some("unparseable".to_owned())); 4]);

    let amqp = env.amqp().await;
    eventually(
        Duration::from_secs(10),
        "dead-lettered messages",
        || async { queue_len(&amqp, DEAD_LETTER_QUEUE).await == 4 },
    )
    .await;
    let messages = take_all(&amqp, DEAD_LETTER_QUEUE).await;
    for message in &messages {
        assert_eq!(
            header_str(message, "dead_letter_reason").as_deref(),
            Some("unparseable")
        );
    }
    let mut delivered: Vec<Vec<u8>> = messages.into_iter().map(|m| m.delivery.data).collect();
    let mut sent: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
    delivered.sort();
    sent.sort();
    assert_eq!(delivered, sent);
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0);
}

#[tokio::test]
async fn while_rabbitmq_is_down_events_get_200_and_are_published_when_it_returns() {
    let env = TestEnv::new().await;
    let broker = rabbitmq_amqp_addr();
    let outage = Outage::proxy(&broker).await;
    let amqp_via_proxy = outage.rewrite(&env.amqp_url, &broker);
    let ingress = TestIngress::start(&env, &[("amqp_url", amqp_via_proxy.as_str())]).await;
    let amqp = env.amqp().await;

    // Wait until the ingress is connected, then cut the broker off.
    ingress.wait_for_broker().await;
    outage.set_up(false);

    for index in 0..50 {
        let response = ingress
            .deliver(
                &format!("msg_out{index}"),
                &event_body("individual.updated", "c"),
            )
            .await;
        assert_eq!(response.status(), 200, "delivery {index} during the outage");
    }
    assert_eq!(row_count(&ingress.pool).await, 50);
    let ready: Value = ingress
        .client
        .get(ingress.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["status"], "ready",
        "Postgres is enough to accept events"
    );
    assert_eq!(
        queue_len(&amqp, WORK_QUEUE).await,
        0,
        "nothing reached the broker during the outage"
    );

    outage.set_up(true);
    eventually(
        Duration::from_secs(30),
        "all 50 published after the broker returned",
        || async { queue_len(&amqp, WORK_QUEUE).await == 50 },
    )
    .await;
    eventually(Duration::from_secs(10), "outbox empty", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM webhook_events WHERE published_at IS NULL",
        )
        .fetch_one(&ingress.pool)
        .await
        .unwrap()
            == 0
    })
    .await;
    let ids: std::collections::BTreeSet<String> = take_all(&amqp, WORK_QUEUE)
        .await
        .into_iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 50, "each event once");
}

#[tokio::test]
async fn when_postgres_is_unreachable_deliveries_get_503_and_nothing_is_acknowledged() {
    let env = TestEnv::new().await;
    env.pool().await; // create and migrate before the outage
    let postgres = "127.0.0.1:5432";
    let outage = Outage::proxy(postgres).await;
    let database_via_proxy = outage.rewrite(&env.database_url, postgres);
    let ingress = TestIngress::start(&env, &[("database_url", database_via_proxy.as_str())]).await;
    let body = event_body("company.updated", "conn-1");

    outage.set_up(false);
    let response = ingress.deliver("msg_pg", &body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"error": "temporarily_unavailable"})
    );
    let ready = ingress
        .client
        .get(ingress.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    let amqp = env.amqp().await;
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0);

    // Finch retries; now it is stored, which proves the first attempt was not.
    outage.set_up(true);
    eventually(
        Duration::from_secs(15),
        "accepted after recovery",
        || async {
            let response = ingress.deliver("msg_pg", &body).await;
            response.status() == 200
                && response.json::<Value>().await.unwrap()
                    == serde_json::json!({"status": "accepted"})
        },
    )
    .await;
}

#[tokio::test]
async fn a_query_bug_answers_500_with_a_generic_body_and_an_outage_503() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let postgres = "127.0.0.1:5432";
    let outage = Outage::proxy(postgres).await;
    let database_via_proxy = outage.rewrite(&env.database_url, postgres);
    let ingress = TestIngress::start(&env, &[("database_url", database_via_proxy.as_str())]).await;
    let body = event_body("company.updated", "conn-1");

    // A bug, not an outage: the insert names a column the table no longer has.
    sqlx::query("ALTER TABLE webhook_events RENAME COLUMN traceparent TO renamed_traceparent")
        .execute(&pool)
        .await
        .unwrap();
    let response = ingress.deliver("msg_bug", &body).await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("retry-after").is_none());
    let reply = response.text().await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        serde_json::json!({"error": "internal_error"}),
        "nothing about the database reaches the client: {reply}"
    );
    sqlx::query("ALTER TABLE webhook_events RENAME COLUMN renamed_traceparent TO traceparent")
        .execute(&pool)
        .await
        .unwrap();

    outage.set_up(false);
    let (status, reply) = json(ingress.deliver("msg_bug", &body).await).await;
    assert_eq!(
        (status, reply),
        (503, serde_json::json!({"error": "temporarily_unavailable"}))
    );
    assert_eq!(row_count(&pool).await, 0, "neither attempt stored it");

    outage.set_up(true);
    eventually(
        Duration::from_secs(15),
        "accepted after recovery",
        || async { ingress.deliver("msg_bug", &body).await.status() == 200 },
    )
    .await;
    assert_eq!(row_count(&pool).await, 1);
}

#[tokio::test]
async fn other_methods_get_405_and_health_endpoints_answer() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = ingress
            .client
            .request(method.clone(), ingress.url("/webhooks/finch"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "method_not_allowed"
        );
    }
    let health = ingress
        .client
        .get(ingress.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    eventually(Duration::from_secs(10), "ready with broker connected", || async {
        let ready: Value = ingress.client.get(ingress.url("/readyz")).send().await.unwrap().json().await.unwrap();
        ready == serde_json::json!({"status": "ready", "postgres": "ok", "outbox_relay": "running", "rabbitmq": "connected", "outbox_backlog": 0})
    })
    .await;

    ingress.deliver("msg_m1", &event_body("test", "c")).await;
    ingress.deliver("msg_m1", &event_body("test", "c")).await;
    let metrics = ingress
        .client
        .get(ingress.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "finch_webhooks_ingress_requests_total{outcome=\"accepted\"} 1",
        "finch_webhooks_ingress_requests_total{outcome=\"duplicate\"} 1",
        "finch_webhooks_ingress_duplicates_total 1",
        "finch_webhooks_ingress_request_duration_seconds_count",
        "finch_webhooks_ingress_outbox_backlog",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn graceful_stop_commits_and_publishes_what_was_accepted() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    ingress.wait_for_broker().await;
    for index in 0..20 {
        let response = ingress
            .deliver(&format!("msg_stop{index}"), &event_body("test", "c"))
            .await;
        assert_eq!(response.status(), 200);
    }
    let pool = ingress.pool.clone();
    ingress.stop().await;
    assert_eq!(row_count(&pool).await, 20);
    let amqp = env.amqp().await;
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 20);
}
