//! A local stand-in for the Finch API and its webhook delivery.
//!
//! Each connection has a provider state (the employer's payroll system, which
//! `/sandbox/*` changes) and a synced state (what `/employer/*` serves). A data
//! sync copies one to the other and emits one webhook per changed item, then
//! `job.data_sync_all.completed`, as Finch does.
//!
//! Run it with the `finch-emulator` binary, or in-process (tests, `dev`,
//! benchmarks):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use finch_emulator::{Emulator, EmulatorConfig};
//! let emulator = Emulator::start(EmulatorConfig::default()).await?;
//! let token = &emulator.connections()[0].access_token;
//! println!("{} {token}", emulator.base_url());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod args;
mod changelog;
mod churn;
pub mod cli;
mod clock;
mod control;
mod data;
mod error;
mod faults;
mod fleet;
mod management;
pub mod model;
mod ratelimit;
mod sandbox;
pub mod seed;
mod send;
mod spec;
mod state;
mod stats;
mod sync;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use rand::SeedableRng;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use args::EmulatorArgs;
pub use changelog::ChangeRecord;
pub use churn::Churn;
pub use control::{AddedConnection, EntitySnapshot, ProviderChange, Snapshot};
pub use error::ApiError;
pub use faults::{Fault, FaultKind, FaultScope};
pub use fleet::run as run_fleet;
pub use fleet::{populate as populate_fleet, rss_mib, FleetArgs, FleetMix};
pub use send::{send, SendArgs};
pub use spec::{ConnectionKind, ConnectionSpec, PayFrequency};
pub use stats::{StatsSnapshot, WebhookStats};
pub use webhooks::RETRY_SCHEDULE;

use clock::FinchClock;
use finch_core::signature::WebhookSecret;
use ratelimit::RateLimiter;
use state::{Shared, World};
use stats::Stats;
use webhooks::{DeliverySettings, Dispatcher};

/// The client id printed at start-up unless `--client-id` says otherwise.
pub const DEFAULT_CLIENT_ID: &str = "8c1a7f3e-5b2d-4e6f-9a0c-e3a1f0c4b2d9";
pub const DEFAULT_CLIENT_SECRET: &str = "finch-emulator-client-secret";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4010";

/// Every knob of the emulator. `Default` suits in-process tests: an
/// ephemeral port, two seeded connections, no faults and no webhook targets.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Port 0 picks a free port; `RunningEmulator::base_url` tells which.
    pub listen: SocketAddr,
    /// Base URL put in `job_url`s when the emulator is reached through another
    /// address (a container, a tunnel); defaults to the bound address.
    pub public_url: Option<String>,
    /// Application credentials for `/auth/token` and Basic-auth sandbox endpoints.
    pub client_id: String,
    pub client_secret: String,
    /// Where webhooks go; every event goes to each.
    pub webhook_urls: Vec<String>,
    /// Base64 secrets to sign with (several, as during rotation); one is
    /// generated when empty.
    pub webhook_secrets: Vec<String>,
    /// Connections seeded at start, each with a token printed in the banner.
    pub connections: usize,
    pub employees: usize,
    pub seed: u64,
    /// Seeded connections get bi-weekly payments from this date to today.
    pub history_start: NaiveDate,
    /// Finch time runs this many times faster than the wall clock: sync
    /// durations, pay-statement delays, refresh cadences, rate-limit windows,
    /// `Retry-After` and the webhook retry schedule all follow it.
    pub time_scale: f64,
    /// Finch time at start; now if unset.
    pub start_at: Option<DateTime<Utc>>,
    /// Finch time moves only through `advance` (`POST /_emulator/clock/advance`).
    pub freeze_clock: bool,
    /// Finch's refresh cadence of automated connections made from a spec.
    pub automated_refresh: Duration,
    /// Finch's refresh cadence of assisted connections made from a spec.
    pub assisted_refresh: Duration,
    /// How fast people change at the provider between refreshes.
    pub churn: Churn,
    /// Multiplies the per-product rate limits; 0 turns them off.
    pub rate_limit_scale: f64,
    /// Added to every `/employer/*` request.
    pub latency: Duration,
    /// Share of `/employer/*` requests answered 500 `server_error`.
    pub error_rate: f64,
    /// Share of `/employer/*` requests answered 502 `upstream_provider_error`.
    pub upstream_error_rate: f64,
    /// How long (Finch time) a newly synced payment's statements answer 202.
    pub pay_statement_delay: Duration,
    /// How long (Finch time) a `data_sync_all` job runs.
    pub sync_duration: Duration,
    /// Scheduled syncs of every connected connection (Finch time); none if unset.
    pub sync_interval: Option<Duration>,
    /// Forced refreshes each connection may start per hour; 0 for unlimited.
    pub refreshes_per_hour: u32,
    /// Share of events delivered twice.
    pub duplicate_rate: f64,
    /// Deliver events in random order instead of as emitted.
    pub shuffle: bool,
    /// Deliveries in flight per target.
    pub delivery_concurrency: usize,
    /// A delivery not answered within this counts as failed and is retried.
    pub webhook_timeout: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            webhook_urls: Vec::new(),
            webhook_secrets: Vec::new(),
            connections: 2,
            employees: 20,
            seed: 42,
            history_start: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            time_scale: 1.0,
            start_at: None,
            freeze_clock: false,
            automated_refresh: Duration::from_secs(24 * 3600),
            assisted_refresh: Duration::from_secs(7 * 24 * 3600),
            churn: Churn::default(),
            rate_limit_scale: 1.0,
            latency: Duration::ZERO,
            error_rate: 0.0,
            upstream_error_rate: 0.0,
            pay_statement_delay: Duration::from_secs(30),
            sync_duration: Duration::from_secs(2),
            sync_interval: None,
            refreshes_per_hour: 10,
            duplicate_rate: 0.0,
            shuffle: false,
            delivery_concurrency: 4,
            webhook_timeout: Duration::from_secs(15),
        }
    }
}

impl EmulatorConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.time_scale.is_finite() && self.time_scale > 0.0,
            "time scale must be a positive number"
        );
        anyhow::ensure!(
            self.rate_limit_scale.is_finite() && self.rate_limit_scale >= 0.0,
            "rate limit scale must be zero or positive"
        );
        for (name, rate) in [
            ("error rate", self.error_rate),
            ("upstream error rate", self.upstream_error_rate),
            ("duplicate rate", self.duplicate_rate),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "{name} must be between 0 and 1"
            );
        }
        anyhow::ensure!(
            self.error_rate + self.upstream_error_rate <= 1.0,
            "error rate and upstream error rate add up to more than 1"
        );
        for url in &self.webhook_urls {
            url::Url::parse(url).with_context(|| format!("webhook URL {url:?}"))?;
        }
        Ok(())
    }
}

/// A connection made at start-up, with what a developer needs to use it.
#[derive(Debug, Clone)]
pub struct SeededConnection {
    pub connection_id: String,
    pub company_id: String,
    pub account_id: String,
    /// Seeded connections have one entity.
    pub entity_id: String,
    pub company_name: String,
    pub provider_id: String,
    pub access_token: String,
    /// Single-use code for `POST /auth/token`; more from `POST /_emulator/authorize`.
    pub authorization_code: String,
}

pub struct Emulator;

impl Emulator {
    /// Binds the listen address, seeds the connections and starts serving.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let base_url = config.public_url.clone().map_or_else(
            || {
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    addr.ip().to_string()
                };
                format!("http://{host}:{}", addr.port())
            },
            |url| url.trim_end_matches('/').to_owned(),
        );

        let mut secret_texts = config.webhook_secrets.clone();
        if secret_texts.is_empty() {
            secret_texts.push(WebhookSecret::generate().1);
        }
        let secrets = secret_texts
            .iter()
            .map(|s| WebhookSecret::parse(s).map_err(|e| anyhow::anyhow!("webhook secret: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let dispatcher = Dispatcher::start(
            &config.webhook_urls,
            DeliverySettings {
                secrets,
                duplicate_rate: config.duplicate_rate,
                shuffle: config.shuffle,
                concurrency: config.delivery_concurrency,
                timeout: config.webhook_timeout,
                time_scale: config.time_scale,
            },
            stats.clone(),
            cancel.clone(),
        );
        let clock = FinchClock::new(
            config.start_at.unwrap_or_else(Utc::now),
            config.time_scale,
            config.freeze_clock,
        );
        let shared = Arc::new(Shared {
            clock,
            faults: Default::default(),
            changes: Default::default(),
            limiter: RateLimiter::new(config.rate_limit_scale),
            fault_rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed ^ 0xFA17)),
            config,
            base_url,
            stats,
            dispatcher,
            world: Mutex::new(World::default()),
            refreshes_stopped: Default::default(),
            cancel: cancel.clone(),
        });

        let connections = shared
            .seed_connections()
            .into_iter()
            .map(|created| {
                let authorization_code = shared
                    .issue_code(&created.connection_id)
                    .expect("the connection was just created");
                let provider_id = shared.world().connections[&created.connection_id]
                    .provider_id
                    .clone();
                SeededConnection {
                    connection_id: created.connection_id,
                    company_id: created.company_id,
                    account_id: created.account_id,
                    entity_id: created.entity_ids[0].clone(),
                    company_name: created.company_name,
                    provider_id,
                    access_token: created.access_token,
                    authorization_code,
                }
            })
            .collect();
        shared.start_ticker();

        let app = api::router(shared.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Ok(RunningEmulator {
            shared,
            addr,
            connections,
            webhook_secrets: secret_texts,
            server,
        })
    }
}

/// A started emulator. Dropping it does not stop it; call `shutdown`.
pub struct RunningEmulator {
    pub(crate) shared: Arc<Shared>,
    addr: SocketAddr,
    connections: Vec<SeededConnection>,
    webhook_secrets: Vec<String>,
    server: JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    pub fn connections(&self) -> &[SeededConnection] {
        &self.connections
    }

    /// The secrets deliveries are signed with, base64 as Finch's dashboard shows them.
    pub fn webhook_secrets(&self) -> &[String] {
        &self.webhook_secrets
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Starts a `data_sync_all` job for a connection, outside the hourly
    /// quota, and returns its job id.
    pub fn sync(&self, connection_id: &str) -> anyhow::Result<String> {
        match self.shared.enqueue_sync(connection_id, false) {
            Ok(ticket) => Ok(ticket.job_id),
            Err(_) => anyhow::bail!("no connection {connection_id}"),
        }
    }

    /// Finch time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// Moves Finch time forward by `by` and runs everything due meanwhile
    /// (refreshes, first syncs, sync jobs), emitting their webhooks.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        self.shared.advance(by)
    }

    /// Runs Finch time `scale` times faster than the wall clock from now on;
    /// 0 freezes it (it then moves only by `advance`).
    pub fn set_time_scale(&self, scale: f64) {
        self.shared.clock.set_rate(scale);
    }

    pub fn time_scale(&self) -> f64 {
        self.shared.clock.rate()
    }

    /// Multiplies Finch's rate limits by `scale` from now on; 0 turns them off.
    pub fn set_rate_limit_scale(&self, scale: f64) {
        self.shared.limiter.set_scale(scale);
    }

    /// Finch's scheduled refreshes stop: no more churn, payrolls or daily
    /// jobs, so a benchmark can wait for what was announced to drain.
    pub fn stop_refreshes(&self) {
        self.shared.stop_refreshes();
    }

    /// When each connection's next scheduled refresh runs (Finch time);
    /// connections without one (stopped, disconnected) are absent.
    pub fn next_refreshes(&self) -> HashMap<String, DateTime<Utc>> {
        self.shared.next_refreshes()
    }

    /// Each synced connection's `Finch-Data-Retrieved`, which moves with
    /// every refresh of Finch's.
    pub fn data_retrieved(&self) -> HashMap<String, DateTime<Utc>> {
        self.shared.data_retrieved()
    }

    /// Webhook deliveries produced and not yet delivered or given up on.
    pub fn webhooks_pending(&self) -> u64 {
        self.stats().webhooks.pending()
    }

    /// Adds a connection with its own kind, size, entities and payroll calendar.
    pub fn add_connection(&self, spec: ConnectionSpec) -> anyhow::Result<AddedConnection> {
        self.shared
            .add_spec_connection(&spec)
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Fails the requests in `scope` with `kind` for `lasting` (Finch time) from now.
    pub fn inject_fault(&self, scope: FaultScope, kind: FaultKind, lasting: Duration) {
        self.shared.inject_fault(scope, kind, lasting);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The item webhooks of the connection's next `changes` changes are lost.
    pub fn lose_webhooks(&self, connection_id: &str, changes: usize) -> anyhow::Result<()> {
        self.shared
            .lose_webhooks(connection_id, changes)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Changes the provider; visible after the next sync or refresh. Returns
    /// the id of what it created (a hire, a payment).
    pub fn change_provider(
        &self,
        connection_id: &str,
        change: ProviderChange,
    ) -> anyhow::Result<Option<String>> {
        self.shared
            .change_provider(connection_id, &change)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Every person and payment gets a new id, served at once without item
    /// webhooks; returns a new access token (the old one keeps working).
    pub fn reconnect_with_new_ids(&self, connection_id: &str) -> anyhow::Result<String> {
        self.shared
            .reconnect_with_new_ids(connection_id)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// What `/employer/*` serves for the connection now, every entity and product.
    pub fn snapshot(&self, connection_id: &str) -> anyhow::Result<Snapshot> {
        self.shared
            .snapshot(connection_id)
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Changes at Finch after position `since` (0 for all).
    pub fn change_log(&self, since: u64) -> Vec<ChangeRecord> {
        self.shared.changes.since(since)
    }

    /// Every connection id, in order of creation.
    pub fn connection_ids(&self) -> Vec<String> {
        self.shared.connection_ids()
    }

    /// Sends a `test` event for a connection (the first one if `None`) to every target.
    pub fn send_test_webhook(&self, connection_id: Option<&str>) -> Option<String> {
        self.shared.emit_test(connection_id)
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        self.shutdown().await;
        Ok(())
    }

    /// Stops serving and abandons queued deliveries.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "emulator server stopped with an error"),
            Ok(_) => {}
            Err(_) => tracing::warn!("emulator server did not stop within 5 s"),
        }
    }

    /// The start-up banner: where to point things, and the credentials to use.
    /// The only place tokens are ever printed.
    pub fn banner(&self) -> String {
        let mut out = String::new();
        let base = self.base_url();
        out.push_str(&format!("Finch emulator listening on {base}\n\n"));
        out.push_str(&format!("  client id:      {}\n", self.client_id()));
        out.push_str(&format!("  client secret:  {}\n", self.client_secret()));
        for secret in &self.webhook_secrets {
            out.push_str(&format!("  webhook secret: {secret}\n"));
        }
        let targets = &self.shared.config.webhook_urls;
        if targets.is_empty() {
            out.push_str("  webhooks:       no --webhook-url given; events are not delivered\n");
        }
        for url in targets {
            out.push_str(&format!("  webhooks to:    {url}\n"));
        }
        out.push_str("\nSeeded connections:\n");
        for c in &self.connections {
            out.push_str(&format!(
                "  {} ({}, {} employees)\n    connection id:      {}\n    access token:       {}\n    authorization code: {} (single use, POST /auth/token)\n",
                c.company_name, c.provider_id, self.shared.config.employees, c.connection_id, c.access_token, c.authorization_code
            ));
        }
        out.push_str(&format!(
            "\nOfficial SDK: Finch(access_token=..., base_url=\"{base}\", client_id=..., client_secret=...)\n\
             Stats: GET {base}/_emulator/stats\n"
        ));
        out
    }
}

impl Shared {
    /// Constant-time so the emulator does not teach bad habits.
    pub fn client_matches(&self, id: &str, secret: &str) -> bool {
        let id_ok = id.as_bytes().ct_eq(self.config.client_id.as_bytes());
        let secret_ok = secret
            .as_bytes()
            .ct_eq(self.config.client_secret.as_bytes());
        bool::from(id_ok & secret_ok)
    }
}

/// `finch-emulator` (and `finch-webhooks emulator`): start, print the banner, serve until signalled.
pub async fn run(args: EmulatorArgs, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let emulator = Emulator::start(config).await?;
    println!("{}", emulator.banner());
    emulator.run_until(signal).await
}
