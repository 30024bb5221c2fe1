//! SIGTERM under load: the real binary stops accepting, finishes what is in
//! flight, and everything it answered 200 for is in Postgres and RabbitMQ.
//! The worker's SIGTERM and SIGKILL are in `worker_process.rs`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use finch_webhooks::queue::WORK_QUEUE;

use crate::helpers::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event_and_serves_no_5xx() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let port = free_port();
    let serve = Command::new(env!("CARGO_BIN_EXE_finch-webhooks"))
        .arg("serve")
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("FINCH_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("DATABASE_MIGRATE_ON_START", "true")
        .env("SHUTDOWN_TIMEOUT_SECS", "10")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(30),
        "serve ready with the broker",
        || async {
            match client.get(format!("{base}/readyz")).send().await {
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|r| r["rabbitmq"] == "connected"),
                Err(_) => false,
            }
        },
    )
    .await;

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ingress = TestIngress::remote(addr, env.pool().await);
    let ingress = Arc::new(ingress);
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let server_errors = Arc::new(Mutex::new(Vec::new()));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..32)
        .map(|sender| {
            let (ingress, acknowledged, server_errors, stop_sending) = (
                ingress.clone(),
                acknowledged.clone(),
                server_errors.clone(),
                stop_sending.clone(),
            );
            tokio::spawn(async move {
                let mut index = 0;
                while !stop_sending.load(Ordering::Relaxed) {
                    let event_id = format!("msg_term_{sender}_{index}");
                    index += 1;
                    match ingress
                        .try_deliver(&event_id, &event_body("test", "conn-term"))
                        .await
                    {
                        Ok(200) => {
                            acknowledged.lock().unwrap().insert(event_id);
                        }
                        Ok(status) if status >= 500 => {
                            server_errors.lock().unwrap().push((event_id, status))
                        }
                        Ok(_) => {}
                        // Refused or reset once the listener closed: Finch would retry.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();

    // Let load build up, then terminate in the middle of it.
    eventually(Duration::from_secs(30), "load under way", || async {
        acknowledged.lock().unwrap().len() >= 300
    })
    .await;
    let terminate = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(terminate.success());
    let status = tokio::task::spawn_blocking(move || serve.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    stop_sending.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(
        status.status.success(),
        "serve exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    let server_errors = server_errors.lock().unwrap().clone();
    assert!(
        server_errors.is_empty(),
        "5xx during shutdown: {server_errors:?}"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    let stored: BTreeSet<String> = sqlx::query_scalar("SELECT event_id FROM webhook_events")
        .fetch_all(&ingress.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );

    let published: BTreeSet<String> = take_all(&amqp, WORK_QUEUE)
        .await
        .into_iter()
        .filter_map(|m| {
            m.delivery
                .properties
                .message_id()
                .clone()
                .map(|id| id.to_string())
        })
        .collect();
    let unpublished: BTreeSet<String> =
        sqlx::query_scalar("SELECT event_id FROM webhook_events WHERE published_at IS NULL")
            .fetch_all(&ingress.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(
        unpublished.is_empty(),
        "the drain publishes everything it committed: {unpublished:?}"
    );
    let not_in_broker: Vec<_> = acknowledged.difference(&published).collect();
    assert!(
        not_in_broker.is_empty(),
        "acknowledged but not in RabbitMQ: {not_in_broker:?}"
    );
}
