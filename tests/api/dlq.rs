//! The dead-letter tooling against real RabbitMQ and Postgres: listing that
//! disturbs nothing, filters, replay identity and kill-safety, rate, purge,
//! the CLI binary and the admin API.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use finch_webhooks::ops::dlq::{self, ReplayOptions};
use finch_webhooks::ops::{events, Filter, Selection};
use finch_webhooks::queue::{DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, WORK_QUEUE};
use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use rand::Rng as _;
use serde_json::Value;

use crate::helpers::*;

const ADMIN_TOKEN: &str = "an-admin-token-long-enough";

/// A dead letter as the worker writes it.
#[derive(Clone)]
struct Letter {
    id: String,
    event_type: Option<&'static str>,
    connection: Option<String>,
    reason: &'static str,
    dead_lettered_at: chrono::DateTime<chrono::Utc>,
}

impl Letter {
    fn new(
        id: impl Into<String>,
        event_type: &'static str,
        connection: &str,
        reason: &'static str,
    ) -> Self {
        Self {
            id: id.into(),
            event_type: Some(event_type),
            connection: Some(connection.to_owned()),
            reason,
            dead_lettered_at: chrono::Utc::now(),
        }
    }

    fn body(&self) -> String {
        event_body(
            self.event_type.unwrap_or("unknown"),
            self.connection.as_deref().unwrap_or(""),
        )
    }

    fn properties(&self) -> BasicProperties {
        let long = |value: &str| AMQPValue::LongString(LongString::from(value));
        let mut headers = FieldTable::default();
        if let Some(connection) = &self.connection {
            headers.insert("connection_id".into(), long(connection));
        }
        headers.insert("dead_letter_reason".into(), long(self.reason));
        headers.insert(
            "dead_lettered_at".into(),
            long(&self.dead_lettered_at.to_rfc3339()),
        );
        headers.insert("attempts".into(), AMQPValue::LongLongInt(3));
        headers.insert("http_status".into(), AMQPValue::LongLongInt(401));
        headers.insert("finch_code".into(), long("reauthenticate_user"));
        headers.insert("finch_request_id".into(), long("req_123"));
        headers.insert("last_error".into(), long("Finch answered 401"));
        headers.insert(
            "error_history".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                long("timeout"),
                long("Finch answered 401"),
            ])),
        );
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(self.id.as_str()))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_timestamp(self.dead_lettered_at.timestamp() as u64)
            .with_headers(headers);
        if let Some(event_type) = self.event_type {
            properties = properties.with_type(ShortString::from(event_type));
        }
        properties
    }
}

/// Dead-letters `letters` as the worker would, in order, waiting for every confirm.
async fn dead_letter(amqp: &lapin::Connection, letters: &[Letter]) {
    let channel = amqp.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::with_capacity(letters.len());
    for letter in letters {
        confirms.push(
            channel
                .basic_publish(
                    DEAD_LETTER_EXCHANGE.into(),
                    letter.reason.into(),
                    BasicPublishOptions::default(),
                    letter.body().as_bytes(),
                    letter.properties(),
                )
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
    channel.close(200, "done".into()).await.ok();
}

fn ids(messages: &[lapin::message::BasicGetMessage]) -> Vec<String> {
    messages
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
        .collect()
}

/// Takes every message of `queue` and returns their ids; faster than
/// `take_all` for thousands of messages, since it does not ask one at a time.
async fn drain_ids(amqp: &lapin::Connection, queue: &str) -> Vec<String> {
    let count = queue_len(amqp, queue).await as usize;
    let channel = amqp.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let delivery = consumer.next().await.unwrap().unwrap();
        ids.push(
            delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    channel.close(200, "drained".into()).await.ok();
    ids
}

fn filter(filter: Filter) -> Selection {
    filter.resolve(chrono::Utc::now()).unwrap()
}

/// A varied DLQ: three connections, two types, three reasons, in a known order.
fn mixed_letters(count: usize) -> Vec<Letter> {
    (0..count)
        .map(|n| {
            let event_type = ["employment.updated", "directory.created"][n % 2];
            let connection = ["conn-a", "conn-b", "conn-c"][n % 3];
            let reason = [
                "reauthenticate_user",
                "unknown_connection",
                "retries_exhausted",
            ][n % 5 % 3];
            Letter::new(format!("evt_{n:04}"), event_type, connection, reason)
        })
        .collect()
}

#[tokio::test]
async fn dlq_listing_shows_every_message_and_disturbs_nothing() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let letters = mixed_letters(40);
    dead_letter(&amqp, &letters).await;

    let everything = dlq::list(&amqp, &Selection::default()).await.unwrap();
    assert_eq!((everything.in_queue, everything.matched), (40, 40));
    let listed: Vec<_> = everything
        .messages
        .iter()
        .map(|m| m.event_id.clone().unwrap())
        .collect();
    let expected: Vec<_> = letters.iter().map(|l| l.id.clone()).collect();
    assert_eq!(listed, expected, "listing is in queue order");
    let mut by_reason = BTreeMap::new();
    for letter in &letters {
        *by_reason.entry(letter.reason.to_owned()).or_insert(0u64) += 1;
    }
    assert_eq!(everything.by_reason, by_reason);
    let first = &everything.messages[0];
    assert_eq!(first.connection_id.as_deref(), Some("conn-a"));
    assert_eq!((first.attempts, first.http_status), (Some(3), Some(401)));

    // A limit caps the lines, not the counts.
    let limited = dlq::list(
        &amqp,
        &filter(Filter {
            reason: Some("unknown_connection".into()),
            limit: Some(3),
            ..Filter::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(limited.messages.len(), 3);
    assert_eq!(limited.matched, by_reason["unknown_connection"]);

    // Listing again sees the same, and the queue still holds everything in order.
    let again = dlq::list(&amqp, &Selection::default()).await.unwrap();
    assert_eq!(again.matched, 40);
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 40);
    assert_eq!(ids(&take_all(&amqp, DEAD_LETTER_QUEUE).await), expected);
}

#[tokio::test]
async fn dlq_filters_select_exactly_the_matching_messages_and_leave_the_rest_in_order() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    let mut letters = mixed_letters(60);
    // Ten that died a day ago, for --since.
    for letter in letters.iter_mut().skip(50) {
        letter.dead_lettered_at -= chrono::Duration::days(1);
    }
    dead_letter(&amqp, &letters).await;

    let replay_filter = filter(Filter {
        connection: Some("conn-b".into()),
        reason: Some("unknown_connection".into()),
        since: Some("2h".into()),
        ..Filter::default()
    });
    let report = dlq::replay(&amqp, Some(&pool), &replay_filter, ReplayOptions::default())
        .await
        .unwrap();
    let replayed: Vec<String> = letters
        .iter()
        .take(50)
        .filter(|l| l.connection.as_deref() == Some("conn-b") && l.reason == "unknown_connection")
        .map(|l| l.id.clone())
        .collect();
    assert!(!replayed.is_empty());
    assert_eq!(report.replayed, replayed.len() as u64);
    assert_eq!(report.matched, replayed.len() as u64);
    assert_eq!(
        ids(&take_all(&amqp, WORK_QUEUE).await),
        replayed,
        "exactly the matching ones, in order"
    );

    let purge_filter = filter(Filter {
        event_type: Some("directory.created".into()),
        limit: Some(5),
        ..Filter::default()
    });
    let purged = dlq::purge(&amqp, Some(&pool), &purge_filter).await.unwrap();
    assert_eq!(purged.purged, 5);
    let purged_ids: Vec<String> = letters
        .iter()
        .filter(|l| !replayed.contains(&l.id) && l.event_type == Some("directory.created"))
        .take(5)
        .map(|l| l.id.clone())
        .collect();

    let rest: Vec<String> = letters
        .iter()
        .map(|l| l.id.clone())
        .filter(|id| !replayed.contains(id) && !purged_ids.contains(id))
        .collect();
    assert_eq!(
        ids(&take_all(&amqp, DEAD_LETTER_QUEUE).await),
        rest,
        "the rest stay, in order"
    );
}

#[tokio::test]
async fn dlq_replay_keeps_identity_and_headers_and_counts_the_replay() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    let letter = Letter::new(
        "evt_identity",
        "employment.updated",
        "conn-1",
        "reauthenticate_user",
    );
    sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, connection_id, finch_timestamp, body,
                                     published_at, dead_lettered_at, dead_letter_reason, attempts, replay_count)
         VALUES ($1, 'employment.updated', 'conn-1', now(), $2, now(), now(), 'reauthenticate_user', 3, 1)",
    )
    .bind(&letter.id)
    .bind(letter.body().as_bytes())
    .execute(&pool)
    .await
    .unwrap();
    dead_letter(&amqp, std::slice::from_ref(&letter)).await;

    let dry = dlq::replay(
        &amqp,
        Some(&pool),
        &Selection::default(),
        ReplayOptions {
            dry_run: true,
            rate: None,
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.matched, dry.replayed), (1, 0));
    assert_eq!(
        queue_len(&amqp, WORK_QUEUE).await,
        0,
        "a dry run publishes nothing"
    );

    let report = dlq::replay(
        &amqp,
        Some(&pool),
        &Selection::default(),
        ReplayOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.replayed, 1);
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);

    let messages = take_all(&amqp, WORK_QUEUE).await;
    let delivery = &messages[0].delivery;
    let properties = &delivery.properties;
    assert_eq!(delivery.exchange.as_str(), EVENTS_EXCHANGE);
    assert_eq!(delivery.routing_key.as_str(), "employment.updated");
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        "evt_identity"
    );
    assert_eq!(
        properties.kind().as_ref().unwrap().as_str(),
        "employment.updated"
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(delivery.data, letter.body().as_bytes());
    let headers = properties.headers().as_ref().unwrap().inner();
    assert_eq!(
        headers.get("replay_count"),
        Some(&AMQPValue::LongLongInt(1))
    );
    assert!(headers.contains_key("replayed_at"));
    assert_eq!(
        headers.get("connection_id"),
        Some(&AMQPValue::LongString(LongString::from("conn-1")))
    );
    assert!(
        headers.contains_key("error_history"),
        "history travels with the event"
    );

    let record = events::show(&pool, "evt_identity").await.unwrap().unwrap();
    assert_eq!(record.replay_count, 2);
    assert!(record.last_replayed_at.is_some());
    assert_eq!(record.current_stage(), events::Stage::Replayed);
}

#[tokio::test]
async fn dlq_replay_leaves_a_message_no_queue_takes_in_the_dlq_and_says_why() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let letter = Letter::new(
        "evt_unroutable",
        "employment.updated",
        "conn-1",
        "retries_exhausted",
    );
    dead_letter(&amqp, std::slice::from_ref(&letter)).await;
    // With the work queue unbound, no queue takes any event type.
    let channel = amqp.create_channel().await.unwrap();
    channel
        .queue_unbind(
            WORK_QUEUE.into(),
            EVENTS_EXCHANGE.into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let report = dlq::replay(&amqp, None, &Selection::default(), ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!((report.matched, report.replayed, report.skipped), (1, 0, 1));
    assert_eq!(
        report.skipped_messages[0].event_id.as_deref(),
        Some("evt_unroutable")
    );
    assert!(
        report.skipped_messages[0].why.starts_with("unroutable"),
        "{}",
        report.skipped_messages[0].why
    );
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 1);

    // Declaring the topology again, as every role does on connect, restores the binding.
    let redeclared = env.amqp().await;
    redeclared.close(200, "declared".into()).await.ok();
    let report = dlq::replay(&amqp, None, &Selection::default(), ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!((report.replayed, report.skipped), (1, 0));
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);
    assert_eq!(ids(&take_all(&amqp, WORK_QUEUE).await), ["evt_unroutable"]);
}

#[tokio::test]
async fn dlq_broker_dead_letters_take_their_reason_from_x_death_and_replay_cleanly() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let channel = amqp.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            EVENTS_EXCHANGE.into(),
            "directory.created".into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default()
                .with_message_id(ShortString::from("evt_rejected"))
                .with_type(ShortString::from("directory.created")),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A consumer that gives up on a message without requeueing it is what
    // the broker dead-letters itself, like the delivery limit.
    let mut consumer = channel
        .basic_consume(
            WORK_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    channel.close(200, "done".into()).await.ok();
    eventually(
        Duration::from_secs(10),
        "rejected message in the DLQ",
        || async { queue_len(&amqp, DEAD_LETTER_QUEUE).await == 1 },
    )
    .await;

    let listing = dlq::list(&amqp, &Selection::default()).await.unwrap();
    let letter = &listing.messages[0];
    assert_eq!(letter.reason, "rejected");
    assert_eq!(letter.reason_source, dlq::message::ReasonSource::Broker);
    assert!(letter.dead_lettered_at.is_some());

    let report = dlq::replay(&amqp, None, &Selection::default(), ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(report.replayed, 1);
    let messages = take_all(&amqp, WORK_QUEUE).await;
    let headers = messages[0]
        .delivery
        .properties
        .headers()
        .as_ref()
        .unwrap()
        .inner();
    assert!(
        !headers.contains_key("x-death"),
        "broker history of the last trip is dropped"
    );
    assert_eq!(
        headers.get("replay_count"),
        Some(&AMQPValue::LongLongInt(1))
    );
}

#[tokio::test]
async fn dlq_cli_shows_an_unparseable_event_and_never_replays_it() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let amqp = env.amqp().await;
    let body = "{\"truncated\": ";
    assert_eq!(ingress.deliver("evt_garbled", body).await.status(), 200);
    eventually(
        Duration::from_secs(10),
        "unparseable event in the DLQ",
        || async { queue_len(&amqp, DEAD_LETTER_QUEUE).await == 1 },
    )
    .await;

    let (ok, out, err) = run(&env, &["dlq", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("evt_garbled") && out.contains("unparseable"),
        "{out}"
    );
    assert!(
        !out.contains("truncated"),
        "list never prints bodies: {out}"
    );

    let (ok, out, err) = run(&env, &["dlq", "show", "evt_garbled", "--json"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["copies"][0]["reason"], "unparseable");
    assert_eq!(shown["copies"][0]["body"], body);
    assert_eq!(shown["event"]["stage"], "dead_lettered");

    let (ok, out, err) = run(&env, &["events", "show", "evt_garbled"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("dead-lettered") && out.contains("unparseable"),
        "{out}"
    );

    let (ok, out, err) = run(&env, &["dlq", "replay", "--json"]).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["replayed"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        queue_len(&amqp, DEAD_LETTER_QUEUE).await,
        1,
        "it stays for an operator"
    );

    let (ok, _, err) = run(&env, &["dlq", "purge", "--reason", "unparseable"]).await;
    assert!(
        !ok && err.contains("--yes") && err.contains("1 message"),
        "{err}"
    );
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 1);
    let (ok, out, err) = run(&env, &["dlq", "purge", "--reason", "unparseable", "--yes"]).await;
    assert!(ok && out.contains("Purged 1"), "{out}{err}");
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);
    let (ok, out, _) = run(&env, &["events", "show", "evt_garbled", "--json"]).await;
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["stage"],
        "purged"
    );
    ingress.stop().await;
}

#[tokio::test]
async fn dlq_replay_rate_is_honoured_within_ten_percent() {
    const RATE: u32 = 200;
    const COUNT: usize = 600;
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let letters: Vec<Letter> = (0..COUNT)
        .map(|n| {
            Letter::new(
                format!("evt_{n}"),
                "employment.updated",
                "conn-1",
                "retries_exhausted",
            )
        })
        .collect();
    dead_letter(&amqp, &letters).await;

    // Arrivals are timed at the work queue, independently of the replayer.
    let watcher = amqp.create_channel().await.unwrap();
    let mut arrivals = watcher
        .basic_consume(
            WORK_QUEUE.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let timing = tokio::spawn(async move {
        let mut times = Vec::with_capacity(COUNT);
        while times.len() < COUNT {
            arrivals.next().await.unwrap().unwrap();
            times.push(Instant::now());
        }
        times
    });
    let report = dlq::replay(
        &amqp,
        None,
        &Selection::default(),
        ReplayOptions {
            dry_run: false,
            rate: Some(RATE),
        },
    )
    .await
    .unwrap();
    assert_eq!(report.replayed, COUNT as u64);
    let times = tokio::time::timeout(Duration::from_secs(30), timing)
        .await
        .unwrap()
        .unwrap();
    let span = times[COUNT - 1] - times[0];
    let observed = (COUNT - 1) as f64 / span.as_secs_f64();
    println!("--rate {RATE}: observed {observed:.1} msg/s at the work queue");
    assert!(
        (observed - f64::from(RATE)).abs() <= f64::from(RATE) * 0.1,
        "observed {observed:.1} msg/s for --rate {RATE}"
    );
}

#[tokio::test]
async fn dlq_replay_killed_midway_loses_nothing_and_a_second_run_finishes() {
    const COUNT: usize = 10_000;
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    env.pool().await;
    let letters: Vec<Letter> = (0..COUNT)
        .map(|n| {
            Letter::new(
                format!("evt_{n:05}"),
                "employment.updated",
                "conn-1",
                "reauthenticate_user",
            )
        })
        .collect();
    dead_letter(&amqp, &letters).await;
    let all: HashSet<String> = letters.iter().map(|l| l.id.clone()).collect();

    // Paced so the kill lands while it is busy; the threshold is random.
    let kill_after = rand::rng().random_range(500..8_000);
    let mut child = binary(&env)
        .args(["dlq", "replay", "--rate", "4000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "replay under way", || async {
        queue_len(&amqp, WORK_QUEUE).await >= kill_after
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL: no chance to clean up
    let status = child.wait().await.unwrap();
    assert!(
        !status.success(),
        "the replay was killed before it finished"
    );

    // The broker returns what the dead process held once it sees the connection gone.
    eventually(
        Duration::from_secs(30),
        "unacknowledged messages returned",
        || async {
            queue_len(&amqp, WORK_QUEUE).await + queue_len(&amqp, DEAD_LETTER_QUEUE).await
                >= COUNT as u32
        },
    )
    .await;
    let processed: HashSet<String> = drain_ids(&amqp, WORK_QUEUE).await.into_iter().collect();
    let listing = dlq::list(&amqp, &Selection::default()).await.unwrap();
    let waiting: HashSet<String> = listing
        .messages
        .iter()
        .filter_map(|m| m.event_id.clone())
        .collect();
    assert!(
        !processed.is_empty() && !waiting.is_empty(),
        "killed mid-way"
    );
    let seen: HashSet<String> = processed.union(&waiting).cloned().collect();
    assert_eq!(seen, all, "every event is processed or still in the DLQ");
    println!(
        "killed after {} replayed; {} still in the DLQ; {} in both",
        processed.len(),
        waiting.len(),
        processed.intersection(&waiting).count()
    );

    let (ok, _, err) = run(&env, &["dlq", "replay"]).await;
    assert!(ok, "{err}");
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);
    let finished: HashSet<String> = drain_ids(&amqp, WORK_QUEUE).await.into_iter().collect();
    assert_eq!(
        finished, waiting,
        "the second run replays exactly what was left"
    );
}

async fn admin_get(ingress: &TestIngress, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = ingress.client.get(ingress.admin_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dlq_admin_api_needs_the_right_token() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[("admin_token", ADMIN_TOKEN)]).await;
    dead_letter(&amqp, &mixed_letters(6)).await;

    for path in [
        "/admin/dlq",
        "/admin/openapi.json",
        "/admin/events/evt_0001",
    ] {
        let (status, body) = admin_get(&ingress, path, None).await;
        assert_eq!(
            (status, &body),
            (401, &serde_json::json!({"error": "unauthorized"})),
            "{path}"
        );
        let (status, _) = admin_get(&ingress, path, Some("an-admin-token-long-enougH")).await;
        assert_eq!(status, 401, "wrong token on {path}");
    }
    let response = ingress
        .client
        .get(ingress.admin_url("/admin/dlq"))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "only bearer tokens");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let (status, listing) =
        admin_get(&ingress, "/admin/dlq?connection=conn-a", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(listing["matched"], 2);
    assert_eq!(listing["in_queue"], 6);
    let (status, body) = admin_get(&ingress, "/admin/dlq?since=someday", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (400, Some("invalid_request"), Some("since"))
    );

    let (status, shown) = admin_get(&ingress, "/admin/dlq/evt_0001", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(shown["copies"][0]["connection_id"], "conn-b");
    assert_eq!(shown["copies"][0]["body"]["connection_id"], "conn-b");
    let (status, _) = admin_get(&ingress, "/admin/dlq/evt_missing", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);
    let (status, _) = admin_get(&ingress, "/admin/events/evt_missing", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);

    let post = |path: &str, body: Value| {
        ingress
            .client
            .post(ingress.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let response = post(
        "/admin/dlq/replay",
        serde_json::json!({"conection": "conn-a"}),
    )
    .await
    .unwrap();
    assert_eq!(
        response.status(),
        400,
        "a misspelt filter must not widen a replay"
    );
    let response = post(
        "/admin/dlq/replay",
        serde_json::json!({"connection": "conn-a"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["replayed"], 2);
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 2);

    let response = post(
        "/admin/dlq/purge",
        serde_json::json!({"connection": "conn-b"}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "confirmation_required");
    let response = post(
        "/admin/dlq/purge",
        serde_json::json!({"connection": "conn-b", "confirm": true}),
    )
    .await
    .unwrap();
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["purged"], 2);
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 2);

    let (status, document) = admin_get(&ingress, "/admin/openapi.json", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    for path in [
        "/admin/dlq",
        "/admin/dlq/{event_id}",
        "/admin/dlq/replay",
        "/admin/dlq/purge",
        "/admin/events/{event_id}",
    ] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    ingress.stop().await;
}

#[tokio::test]
async fn admin_api_answers_500_for_a_query_bug_and_503_when_postgres_is_cut() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let postgres = "127.0.0.1:5432";
    let outage = Outage::proxy(postgres).await;
    let database_via_proxy = outage.rewrite(&env.database_url, postgres);
    let ingress = TestIngress::start(
        &env,
        &[
            ("admin_token", ADMIN_TOKEN),
            ("database_url", database_via_proxy.as_str()),
        ],
    )
    .await;
    assert_eq!(
        ingress
            .deliver("evt_stored", &event_body("company.updated", "conn-1"))
            .await
            .status(),
        200
    );
    let (status, _) = admin_get(&ingress, "/admin/events/evt_stored", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);

    // A bug, not an outage: the table the query reads is not there.
    sqlx::query("ALTER TABLE webhook_events RENAME TO renamed_webhook_events")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = admin_get(&ingress, "/admin/events/evt_stored", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, body),
        (500, serde_json::json!({"error": "internal_error"}))
    );
    sqlx::query("ALTER TABLE renamed_webhook_events RENAME TO webhook_events")
        .execute(&pool)
        .await
        .unwrap();

    outage.set_up(false);
    let (status, body) = admin_get(&ingress, "/admin/events/evt_stored", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (status, body),
        (503, serde_json::json!({"error": "database_unavailable"}))
    );
    outage.set_up(true);
    eventually(
        Duration::from_secs(15),
        "answered after recovery",
        || async {
            admin_get(&ingress, "/admin/events/evt_stored", Some(ADMIN_TOKEN))
                .await
                .0
                == 200
        },
    )
    .await;
}

#[tokio::test]
async fn dlq_admin_api_is_absent_without_a_token() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    for path in ["/admin/dlq", "/admin/openapi.json"] {
        let (status, _) = admin_get(&ingress, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 404, "{path}");
    }
    let response = ingress
        .client
        .post(ingress.admin_url("/admin/dlq/replay"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    ingress.stop().await;
}

#[tokio::test]
async fn dlq_unknown_connection_is_replayed_after_the_connection_is_added() {
    use finch_emulator::{Emulator, EmulatorConfig};

    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 3,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let seeded = emulator.connections()[0].clone();
    let worker = crate::worker::TestWorker::start(crate::worker::worker_settings(
        &env,
        emulator.base_url(),
        &[],
    ))
    .await;

    // No token is held for the connection yet: the event is dead-lettered.
    let event_id = unique("msg_unknown");
    let body = crate::helpers::event_body("company.updated", &seeded.connection_id);
    assert_eq!(ingress.deliver(&event_id, &body).await.status(), 200);
    eventually(
        Duration::from_secs(30),
        "dead-lettered as unknown_connection",
        || async {
            crate::worker::event_state(&ingress.pool, &event_id)
                .await
                .1
                .as_deref()
                == Some("unknown_connection")
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "one message in the DLQ",
        || async { queue_len(&amqp, DEAD_LETTER_QUEUE).await == 1 },
    )
    .await;

    // The operator adds the connection, then replays what waited for it.
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), &seeded.access_token).unwrap();
    let finch_env = [
        ("FINCH_TOKEN_KEY", crate::worker::TOKEN_KEY),
        ("FINCH_API_BASE_URL", emulator.base_url()),
    ];
    let added = binary(&env)
        .envs(finch_env)
        .args(["connections", "add", "--access-token-file"])
        .arg(token_file.path())
        .output()
        .await
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let printed = String::from_utf8_lossy(&added.stdout).into_owned()
        + &String::from_utf8_lossy(&added.stderr);
    assert!(
        !printed.contains(&seeded.access_token),
        "the token is never printed"
    );

    let (replayed, stdout, stderr) = run(
        &env,
        &["dlq", "replay", "--connection", &seeded.connection_id],
    )
    .await;
    assert!(replayed, "{stdout}{stderr}");
    eventually(
        Duration::from_secs(30),
        "processed after the replay",
        || async { crate::worker::event_state(&ingress.pool, &event_id).await.0 },
    )
    .await;
    assert_eq!(
        queue_len(&amqp, DEAD_LETTER_QUEUE).await,
        0,
        "it left the DLQ"
    );
    let company: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finch_company WHERE connection_id = $1")
            .bind(&seeded.connection_id)
            .fetch_one(&ingress.pool)
            .await
            .unwrap();
    assert_eq!(company, 1, "the replay refetched the company");
    let replays: i32 =
        sqlx::query_scalar("SELECT replay_count FROM webhook_events WHERE event_id = $1")
            .bind(&event_id)
            .fetch_one(&ingress.pool)
            .await
            .unwrap();
    assert_eq!(replays, 1);
    worker.stop().await;
}
