//! Shared test harness: a fresh Postgres database and a fresh RabbitMQ vhost
//! per test (real servers, never mocks), an in-process ingress on port 0, a
//! TCP proxy that can cut a connection to simulate an outage, and signing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use finch_webhooks::config::Settings;
use finch_webhooks::ingress::{Application, Clock};
use finch_webhooks::signature::{signature_header, WebhookSecret};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use sqlx::{Connection as _, PgPool};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Postgres server the tests create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// RabbitMQ AMQP address (host:port) and management API base URL.
pub fn rabbitmq_amqp_addr() -> String {
    std::env::var("TEST_RABBITMQ_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

pub fn rabbitmq_management_url() -> String {
    std::env::var("TEST_RABBITMQ_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// A secret in the form the Finch dashboard shows.
pub const SECRET: &str = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";
/// A second secret, for rotation tests.
pub const NEW_SECRET: &str = "c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Spans of every test in this binary, collected in memory. A process-wide
/// subscriber is used because per-thread subscribers miss spans whose
/// callsites another thread already cached as uninteresting; tests tell
/// their spans apart by trace id.
pub fn collected_spans() -> &'static InMemorySpanExporter {
    static SPANS: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    let (exporter, _provider) = SPANS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        tracing_subscriber::registry()
            .with(finch_webhooks::telemetry::layer_for(&provider))
            .try_init()
            .ok();
        (exporter, provider)
    });
    exporter
}

/// An isolated database and vhost, removed when dropped.
pub struct TestEnv {
    pub database_url: String,
    pub amqp_url: String,
    pub database: String,
    pub vhost: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        collected_spans();
        let database = unique("fw_test");
        let vhost = unique("fw_test");
        let database_url = format!("{}/{database}", postgres_server_url());
        let http = reqwest::Client::new();
        let management = rabbitmq_management_url();
        http.put(format!("{management}/api/vhosts/{vhost}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .expect("creating a RabbitMQ vhost (is the management plugin enabled?)");
        http.put(format!("{management}/api/permissions/{vhost}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .expect("granting guest access to the test vhost");
        let amqp_url = format!("amqp://guest:guest@{}/{vhost}", rabbitmq_amqp_addr());
        Self {
            database_url,
            amqp_url,
            database,
            vhost,
        }
    }

    /// A pool on the test database, which is created and migrated.
    pub async fn pool(&self) -> PgPool {
        finch_webhooks::store::create_database_if_missing(&self.database_url)
            .await
            .expect("test database created");
        let pool = finch_webhooks::store::connect(&self.database_url, 5)
            .await
            .expect("test database");
        finch_webhooks::store::migrate(&pool)
            .await
            .expect("migrations");
        pool
    }

    /// A connection to the test vhost, whose topology is declared as
    /// `migrate` would with this environment's settings.
    pub async fn amqp(&self) -> lapin::Connection {
        self.amqp_with(&self.settings(&[])).await
    }

    /// A connection to the test vhost, with the topology `settings` declare.
    pub async fn amqp_with(&self, settings: &Settings) -> lapin::Connection {
        let connection = finch_webhooks::queue::connect(&self.amqp_url)
            .await
            .expect("test vhost connection");
        let retry_delays = settings.retry_delays().expect("valid retry delays");
        finch_webhooks::queue::declare_topology(&connection, &retry_delays)
            .await
            .expect("topology");
        connection
    }

    /// Settings pointing at this environment, with extra overrides.
    pub fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("database_url", self.database_url.as_str()),
            ("amqp_url", self.amqp_url.as_str()),
            ("listen_addr", "127.0.0.1:0"),
            ("admin_listen_addr", "127.0.0.1:0"),
            ("finch_webhook_secret", SECRET),
            ("outbox_poll_interval_ms", "100"),
            ("outbox_grace_ms", "300"),
            ("shutdown_timeout_secs", "10"),
            ("database_migrate_on_start", "true"),
        ];
        all.extend_from_slice(overrides);
        Settings::with_overrides(&all).expect("test settings")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let database = self.database.clone();
        let vhost = self.vhost.clone();
        // Cleanup needs async I/O but Drop is synchronous: a short-lived
        // thread with its own runtime does it without blocking the test's.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server_url()))
                        .await
                {
                    let statement = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                    sqlx::query(&statement).execute(&mut admin).await.ok();
                }
                reqwest::Client::new()
                    .delete(format!("{}/api/vhosts/{vhost}", rabbitmq_management_url()))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .ok();
            });
        });
        cleanup.join().ok();
    }
}

/// The service binary, pointed at this environment; killed if the test drops it.
pub fn binary(env: &TestEnv) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_finch-webhooks"));
    command
        .env_remove("FINCH_WEBHOOKS_CONFIG")
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_MIGRATE_ON_START", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion: whether it succeeded, its stdout and its stderr.
pub async fn run(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let output = binary(env)
        .args(args)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Finch-shaped event body.
pub fn event_body(event_type: &str, connection_id: &str) -> String {
    serde_json::json!({
        "company_id": "720be419-0293-4d32-a707-32179b0827ab",
        "account_id": "fa872170-b49d-4fb5-aa39-fb1515db0925",
        "connection_id": connection_id,
        "event_type": event_type,
        "data": { "individual_id": "59dcedb1-75a4-446c-8ece-4f9ccd53a1f9" }
    })
    .to_string()
}

/// An ingress running in this process on an ephemeral port.
pub struct TestIngress {
    pub addr: SocketAddr,
    /// The admin listener (admin API and `/metrics`); unknown for a remote ingress.
    pub admin_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    pub pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestIngress {
    pub async fn start(env: &TestEnv, overrides: &[(&str, &str)]) -> Self {
        Self::start_with(env.settings(overrides), None).await
    }

    pub async fn start_with(settings: Settings, clock: Option<Clock>) -> Self {
        let config = settings.ingress().expect("valid ingress config");
        let app = match clock {
            Some(clock) => Application::build_with_clock(config, clock).await,
            None => Application::build(config).await,
        }
        .expect("ingress starts");
        let addr = app.local_addr();
        let admin_addr = Some(app.admin_addr());
        let pool = app.pool().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            stopped.await.ok();
        }));
        Self {
            addr,
            admin_addr,
            client: reqwest::Client::new(),
            pool,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A handle on an ingress running elsewhere (another process), for its client helpers.
    pub fn remote(addr: SocketAddr, pool: PgPool) -> Self {
        Self {
            addr,
            admin_addr: None,
            client: reqwest::Client::new(),
            pool,
            stop: None,
            task: None,
        }
    }

    /// Like [`TestIngress::deliver`], but a connection failure is an error, not a panic.
    pub async fn try_deliver(&self, event_id: &str, body: &str) -> Result<u16, reqwest::Error> {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let timestamp = now();
        let response = self
            .client
            .post(self.url("/webhooks/finch"))
            .header("finch-event-id", event_id)
            .header("finch-timestamp", timestamp.to_string())
            .header(
                "finch-signature",
                secret.sign(event_id, timestamp, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("an ingress started by this test");
        format!("http://{admin}{path}")
    }

    /// Delivers `body` signed with `secrets` as Finch would, stamped `timestamp`.
    pub async fn deliver_signed(
        &self,
        event_id: &str,
        timestamp: i64,
        body: &str,
        secrets: &[&str],
    ) -> reqwest::Response {
        let secrets: Vec<WebhookSecret> = secrets
            .iter()
            .map(|s| WebhookSecret::parse(s).unwrap())
            .collect();
        let signature = signature_header(&secrets, event_id, timestamp, body.as_bytes());
        self.deliver_raw(
            event_id,
            &timestamp.to_string(),
            &signature,
            body.to_owned(),
        )
        .await
    }

    /// Delivers `body` signed now with the default secret.
    pub async fn deliver(&self, event_id: &str, body: &str) -> reqwest::Response {
        self.deliver_signed(event_id, now(), body, &[SECRET]).await
    }

    pub async fn deliver_raw(
        &self,
        event_id: &str,
        timestamp: &str,
        signature: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/webhooks/finch"))
            .header("content-type", "application/json")
            .header("finch-event-id", event_id)
            .header("finch-timestamp", timestamp)
            .header("finch-signature", signature)
            .body(body)
            .send()
            .await
            .expect("request reaches the ingress")
    }

    /// Waits until `/readyz` reports the broker connected.
    pub async fn wait_for_broker(&self) {
        eventually(
            Duration::from_secs(10),
            "ingress connected to RabbitMQ",
            || async {
                let Ok(response) = self.client.get(self.url("/readyz")).send().await else {
                    return false;
                };
                response
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|ready| ready["rabbitmq"] == "connected")
            },
        )
        .await;
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("ingress task")
                .expect("ingress stops cleanly");
        }
    }
}

impl Drop for TestIngress {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// Polls `check` until it returns true, or panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ready messages in a queue.
pub async fn queue_len(connection: &lapin::Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.unwrap();
    let ready = finch_webhooks::queue::ready_messages(&channel, queue)
        .await
        .expect("queue exists");
    channel.close(200, "done".into()).await.ok();
    ready
}

/// Takes (and acknowledges) every message in a queue.
pub async fn take_all(
    connection: &lapin::Connection,
    queue: &str,
) -> Vec<lapin::message::BasicGetMessage> {
    let channel = connection.create_channel().await.unwrap();
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        messages.push(message);
    }
    channel.close(200, "done".into()).await.ok();
    messages
}

pub async fn row_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A TCP forwarder that can be switched off to simulate an unreachable
/// server: off drops live connections and refuses new ones.
pub struct Outage {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Outage {
    pub async fn proxy(target: &str) -> Self {
        let target: SocketAddr = target.parse().expect("target host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let task = tokio::spawn({
            let up = up.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !*up.borrow() {
                        continue;
                    }
                    let mut down = up.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        Self { addr, up, task }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// `url` with its host:port replaced by this proxy.
    pub fn rewrite(&self, url: &str, target: &str) -> String {
        url.replacen(target, &self.addr.to_string(), 1)
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}
