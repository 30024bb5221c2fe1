//! The admin API and `/metrics` live on their own listener: the public port
//! answers 404 for them, the admin port serves them, and a client that keeps
//! presenting wrong tokens is refused with 429, logged once, not per attempt.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

const ADMIN_TOKEN: &str = "an-admin-token-long-enough";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_public_port_serves_only_the_webhook_and_health_and_the_admin_port_the_rest() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[("admin_token", ADMIN_TOKEN)]).await;
    let client = &ingress.client;

    for path in ["/admin/dlq", "/admin/openapi.json", "/metrics"] {
        let public = status(client.get(ingress.url(path)).bearer_auth(ADMIN_TOKEN)).await;
        assert_eq!(public, 404, "public port, GET {path}");
        let admin = status(client.get(ingress.admin_url(path)).bearer_auth(ADMIN_TOKEN)).await;
        assert_eq!(admin, 200, "admin port, GET {path}");
    }
    let replay = client
        .post(ingress.url("/admin/dlq/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}));
    assert_eq!(status(replay).await, 404, "public port, POST replay");

    let metrics = client
        .get(ingress.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("finch_webhooks_ingress_duplicates_total"),
        "{metrics}"
    );

    for path in ["/healthz", "/readyz"] {
        assert_eq!(status(client.get(ingress.url(path))).await, 200, "{path}");
    }
    let delivered = ingress
        .deliver(&unique("evt"), &event_body("test", "conn-admin"))
        .await;
    assert_eq!(delivered.status(), 200, "the public port takes deliveries");
    let on_admin_port = client
        .post(ingress.admin_url("/webhooks/finch"))
        .body(event_body("test", "conn-admin"));
    assert_eq!(
        status(on_admin_port).await,
        404,
        "no deliveries on the admin port"
    );
    assert_eq!(row_count(&ingress.pool).await, 1);
    ingress.stop().await;
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_port_without_an_admin_token() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let client = &ingress.client;
    assert_eq!(status(client.get(ingress.admin_url("/metrics"))).await, 200);
    assert_eq!(status(client.get(ingress.url("/metrics"))).await, 404);
    assert_eq!(
        status(
            client
                .get(ingress.admin_url("/admin/dlq"))
                .bearer_auth(ADMIN_TOKEN)
        )
        .await,
        404,
        "no token set: no admin API"
    );
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_admin_tokens_get_429_per_client_and_one_log_line() {
    let env = TestEnv::new().await;
    env.pool().await;
    let (port, admin_port) = (free_port(), free_port());
    let serve = binary(&env)
        .arg("serve")
        .env("FINCH_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("0.0.0.0:{admin_port}"))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ADMIN_AUTH_FAILURES_PER_MINUTE", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let admin = format!("http://127.0.0.1:{admin_port}/admin/dlq");
    let attacker = reqwest::Client::new();
    eventually(Duration::from_secs(30), "admin port up", || async {
        attacker.get(&admin).send().await.is_ok()
    })
    .await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(status(attacker.get(&admin).bearer_auth("wrong-token-guess-0001")).await);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429, 429],
        "three wrong tokens a minute"
    );
    let refused = attacker
        .get(&admin)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        429,
        "a refused client is not let in by a right guess"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");

    // Another client (another loopback address) is not held back by the first.
    let operator = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let own = format!("http://127.0.0.2:{admin_port}/admin/openapi.json");
    assert_eq!(
        status(operator.get(&own).bearer_auth(ADMIN_TOKEN)).await,
        200
    );

    for _ in 0..40 {
        let guess = attacker.get(&admin).bearer_auth("wrong-token-guess-0002");
        assert_eq!(status(guess).await, 429);
    }

    let pid = serve.id().expect("running").to_string();
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(terminated.success());
    let output = serve.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let admin_lines = stderr
        .lines()
        .filter(|line| line.contains("admin API"))
        .count();
    assert_eq!(
        admin_lines, 1,
        "46 failures in one minute are one log line so far: {stderr}"
    );
    assert!(!stderr.contains("wrong-token-guess"), "{stderr}");
}
