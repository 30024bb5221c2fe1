//! `bench fleet`: a fleet of employer connections over simulated days. The
//! emulator runs Finch time `--time-scale` times faster than the wall clock,
//! with Finch's real per-minute limits on that clock; the ingress and the
//! workers run here with every duration setting divided by the same scale,
//! so requests per simulated day and staleness in simulated minutes mean
//! what they would in production.
//!
//! The run has three phases. Warm-up: the Finch clock stands still and its
//! limits are off while every connection's first sync lands, because a
//! fleet joins once and the question is what keeping it fresh costs.
//! Measurement: `--days` simulated days of Finch's refreshes, payrolls,
//! hires and edits, webhooks and sweeps, on the real budget. Drain: refreshes
//! stop and what was announced is given time to land; then every mirror
//! table is compared with what the emulator serves.

mod diff;
mod report;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use finch_emulator::{ConnectionKind, Emulator, EmulatorConfig, FleetMix, RunningEmulator};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::finch::{FinchClient, Product};
use crate::queue::contract::RESYNC_EVENT_TYPE;
use crate::queue::{OutgoingEvent, Publisher};
use crate::store::events::{self, NewEvent};

use watch::{Observations, Watch};

const BENCH_TOKEN_KEY: &str = "YmVuY2gtb25seS10b2tlbi1rZXktMzItYnl0ZXMtISE=";
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Employer connections, in the emulator's default fleet mix.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Simulated days measured.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Finch seconds per wall second; every duration setting is divided by it.
    #[arg(long, default_value_t = 200.0)]
    pub time_scale: f64,
    /// Worker replicas sharing the budget and the sweep scheduler.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Days of payment history each connection starts with (first sync only).
    #[arg(long, default_value_t = 365)]
    pub history_days: u32,
    /// Connections whose next change loses its webhooks, for sweeps to repair.
    #[arg(long, default_value_t = 20)]
    pub lost_webhooks: usize,
    /// Seeds the fleet, so runs can be repeated.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Simulated days the drain may take at most once refreshes stop.
    #[arg(long, default_value_t = 1.5)]
    pub drain_days: f64,
    /// Management API of the RabbitMQ the run gets a vhost of its own on.
    #[arg(long, default_value = "http://guest:guest@127.0.0.1:15672")]
    pub rabbitmq_management_url: String,
}

pub async fn run(args: FleetArgs, settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.days > 0, "--days must be at least 1");
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale >= 1.0,
        "--time-scale must be at least 1"
    );
    anyhow::ensure!(args.workers > 0, "--workers must be at least 1");
    let stage = Stage::build(&args, settings).await?;
    let outcome = stage.measure(&args).await;
    let finished = stage.finish().await;
    let report = outcome?;
    finished?;
    println!("{report}");
    Ok(())
}

/// Everything one run owns: its emulator, database, vhost and processes.
struct Stage {
    /// Shared with the notification consumer, which stamps Finch time.
    emulator: Arc<RunningEmulator>,
    pool: PgPool,
    /// Settings of the measured phase (compressed durations, real limits).
    settings: Settings,
    /// The warm-up's: the same without limits or sweeps.
    unlimited: Settings,
    database_url: String,
    vhost: Vhost,
    /// Connection id -> kind, as registered.
    kinds: HashMap<String, ConnectionKind>,
}

impl Stage {
    async fn build(args: &FleetArgs, settings: &Settings) -> anyhow::Result<Self> {
        let vhost = Vhost::create(&args.rabbitmq_management_url, &settings.amqp_url()?).await?;
        let mut database = url::Url::parse(&settings.database_url()?)?;
        database.set_path(&format!("finch_fleet_{}", uuid::Uuid::new_v4().simple()));
        let database_url = database.to_string();
        crate::store::create_database_if_missing(&database_url).await?;
        let pool = crate::store::connect(&database_url, 8).await?;
        crate::store::migrate(&pool).await?;

        let webhook_secret = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            rand::random::<[u8; 32]>(),
        );
        // A free port for the ingress, known before the emulator starts so
        // that it knows where to deliver.
        let ingress_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let ingress_addr = ingress_listener.local_addr()?;
        drop(ingress_listener);

        let started = Instant::now();
        // Finch time ends before the wall clock's today, so no date the
        // worker derives from Finch's headers lies in its future.
        let start_at = Utc::now() - chrono::Duration::days(i64::from(args.days) + 3);
        let emulator = Emulator::start(EmulatorConfig {
            connections: 0,
            freeze_clock: true,
            time_scale: args.time_scale,
            start_at: Some(start_at),
            rate_limit_scale: 0.0,
            churn: finch_emulator::Churn::realistic(),
            webhook_urls: vec![format!("http://{ingress_addr}/webhooks/finch")],
            webhook_secrets: vec![webhook_secret.clone()],
            seed: args.seed,
            ..EmulatorConfig::default()
        })
        .await?;
        let mix = FleetMix {
            history_days: args.history_days,
            ..FleetMix::default()
        };
        let fleet = finch_emulator::populate_fleet(&emulator, &mix, args.connections, args.seed)?;
        eprintln!(
            "bench fleet: {} connections seeded in {:.0}s",
            fleet.len(),
            started.elapsed().as_secs_f64()
        );

        let ingress_addr = ingress_addr.to_string();
        let overrides = vec![
            ("database_url", database_url.as_str()),
            ("amqp_url", vhost.amqp_url.as_str()),
            ("finch_api_base_url", emulator.base_url()),
            ("finch_webhook_secret", webhook_secret.as_str()),
            ("listen_addr", ingress_addr.as_str()),
        ];
        let measured = compressed_settings(args.time_scale, &overrides)?;
        let mut unlimited_overrides = overrides.clone();
        unlimited_overrides.extend([
            ("rate_limit_company", "1000000"),
            ("rate_limit_directory", "1000000"),
            ("rate_limit_individual", "1000000"),
            ("rate_limit_employment", "1000000"),
            ("rate_limit_payment", "1000000"),
            ("rate_limit_pay_statement", "1000000"),
            ("sweep_every", "3650d"),
            ("assisted_check_every", "3650d"),
        ]);
        let unlimited = compressed_settings(args.time_scale, &unlimited_overrides)?;
        // Declared as `migrate` would before a deploy, so the ingress's
        // first depth probes find the queues.
        let amqp = crate::queue::connect(&vhost.amqp_url).await?;
        crate::queue::declare_topology(&amqp, &measured.retry_delays()?).await?;
        amqp.close(200, "declared".into()).await.ok();
        let mut kinds = HashMap::new();
        let worker = measured.worker()?;
        let finch = FinchClient::new(&worker.finch);
        for added in &fleet {
            let token = SecretString::from(added.access_token.clone());
            crate::ops::connections::add(&pool, &worker.token_keys, &finch, &token)
                .await
                .with_context(|| format!("registering {}", added.connection_id))?;
        }
        let specs = mix.specs(args.connections, args.seed);
        for (added, spec) in fleet.iter().zip(&specs) {
            kinds.insert(added.connection_id.clone(), spec.kind);
        }
        Ok(Self {
            emulator: Arc::new(emulator),
            pool,
            settings: measured,
            unlimited,
            database_url,
            vhost,
            kinds,
        })
    }

    /// First syncs of the whole fleet, on a frozen clock without limits.
    async fn warm_up(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let workers = Workers::start(&self.unlimited, 2).await?;
        let total = self.queue_first_syncs().await?;
        // Done when every first sync and every webhook of the connections'
        // creation (`account.updated`) has been handled.
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let tally = events::tally(&self.pool).await?;
            anyhow::ensure!(
                tally.dead_lettered == 0,
                "{} events were dead-lettered during the warm-up",
                tally.dead_lettered
            );
            if tally.stored >= total
                && tally.processed + tally.dead_lettered == tally.stored
                && self.emulator.webhooks_pending() == 0
                && self.vhost.queued_messages().await? == 0
            {
                break;
            }
        }
        workers.stop().await?;
        // The measured workers give every connection a fresh slot on the
        // compressed cadence.
        sqlx::query(
            "UPDATE connections SET next_sweep_at = NULL, last_swept_at = NULL,
                 swept_finch_sync_at = NULL",
        )
        .execute(&self.pool)
        .await?;
        eprintln!(
            "bench fleet: first syncs of {total} connections in {:.0}s ({} Finch requests)",
            started.elapsed().as_secs_f64(),
            self.emulator.stats().data_requests.values().sum::<u64>()
        );
        Ok(())
    }

    async fn queue_first_syncs(&self) -> anyhow::Result<i64> {
        let connection = crate::queue::connect(&self.settings.amqp_url()?).await?;
        crate::queue::declare_topology(&connection, &self.settings.retry_delays()?).await?;
        let publisher = Publisher::open(&connection).await?;
        let ids: Vec<&String> = self.kinds.keys().collect();
        for chunk in ids.chunks(500) {
            let mut stored = Vec::new();
            let mut outgoing = Vec::new();
            for connection_id in chunk {
                let event_id = format!("resync_{}", uuid::Uuid::new_v4().simple());
                let body = Bytes::from(
                    json!({
                        "connection_id": connection_id,
                        "event_type": RESYNC_EVENT_TYPE,
                        "data": null,
                    })
                    .to_string(),
                );
                stored.push(NewEvent {
                    event_id: event_id.clone(),
                    event_type: Some(RESYNC_EVENT_TYPE.to_owned()),
                    connection_id: Some((*connection_id).clone()),
                    finch_timestamp: Utc::now().timestamp(),
                    body: body.clone(),
                    dead_letter_reason: None,
                    traceparent: None,
                });
                outgoing.push(OutgoingEvent {
                    event_id,
                    event_type: Some(RESYNC_EVENT_TYPE.to_owned()),
                    connection_id: Some((*connection_id).clone()),
                    body,
                    dead_letter_reason: None,
                    traceparent: None,
                });
            }
            events::insert_batch(&self.pool, &stored).await?;
            for result in publisher.publish_all(&outgoing).await {
                result?;
            }
        }
        connection.close(200, "queued".into()).await.ok();
        Ok(ids.len() as i64)
    }

    /// Picks connections whose next changes lose their webhooks: automated
    /// ones large enough to change daily, whose sweep slot comes after the
    /// first day and before the measured period ends, so the repair is seen.
    async fn lose_webhooks(&self, args: &FleetArgs, measure_start: Instant) -> Vec<String> {
        let mut chosen = Vec::new();
        let mut candidates: Vec<(String, f64)> = sqlx::query_as(
            "SELECT connection_id, extract(epoch FROM next_sweep_at - now())::float8
             FROM connections WHERE kind = 'automated' AND next_sweep_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let wall_day = DAY.as_secs_f64() / args.time_scale;
        let elapsed = measure_start.elapsed().as_secs_f64();
        candidates.retain(|(_, wait)| {
            let at = elapsed + wait;
            at > 1.5 * wall_day && at < (f64::from(args.days) - 0.5) * wall_day
        });
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        for (connection_id, _) in candidates {
            if chosen.len() >= args.lost_webhooks {
                break;
            }
            let large_enough = self
                .emulator
                .snapshot(&connection_id)
                .map(|s| s.entities.iter().map(|e| e.directory.len()).sum::<usize>() >= 40)
                .unwrap_or(false);
            if large_enough && self.emulator.lose_webhooks(&connection_id, 1).is_ok() {
                chosen.push(connection_id);
            }
        }
        chosen
    }

    async fn measure(&self, args: &FleetArgs) -> anyhow::Result<String> {
        let ingress = Ingress::start(&self.settings).await?;
        self.warm_up().await?;
        let workers = Workers::start(&self.settings, args.workers).await?;
        let watch = Watch::start(&self.settings, &self.emulator, &self.kinds).await?;
        // Slots are assigned by the first scheduler tick; wait for them.
        loop {
            let unassigned: i64 =
                sqlx::query_scalar("SELECT count(*) FROM connections WHERE next_sweep_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?;
            if unassigned == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let requests_before = self.emulator.stats();
        let changes_before = self.emulator.change_log(0).len() as u64;
        let measure_start = Instant::now();
        let finch_start = self.emulator.now();
        let lost = self.lose_webhooks(args, measure_start).await;
        self.emulator.set_rate_limit_scale(1.0);
        self.emulator.set_time_scale(args.time_scale);
        eprintln!(
            "bench fleet: measuring {} simulated days from {finch_start} ({:.0}s of wall time); {} connections lose webhooks",
            args.days,
            DAY.as_secs_f64() * f64::from(args.days) / args.time_scale,
            lost.len()
        );

        let finch_end = finch_start + chrono::Duration::days(i64::from(args.days));
        let mut observations = Observations::new(finch_start, &requests_before);
        let mut last_progress = finch_start;
        while self.emulator.now() < finch_end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            watch
                .sample(&self.emulator, &self.pool, &mut observations)
                .await?;
            let now = self.emulator.now();
            if now - last_progress >= chrono::Duration::days(1) {
                last_progress = now;
                eprintln!(
                    "bench fleet: day {:.1}: {} Finch requests, {} changes, {} notifications",
                    (now - finch_start).num_minutes() as f64 / 1440.0,
                    observations.requests_total(),
                    self.emulator.change_log(changes_before).len(),
                    watch.notifications()
                );
            }
        }
        observations.close_measurement(self.emulator.now());
        self.emulator.stop_refreshes();

        let drain_until =
            finch_end + chrono::Duration::seconds((args.drain_days * 86_400.0) as i64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            watch
                .sample(&self.emulator, &self.pool, &mut observations)
                .await?;
            let changes = self.emulator.change_log(changes_before);
            let unresolved = watch.unresolved(&changes);
            let idle = self.emulator.webhooks_pending() == 0
                && self.vhost.queued_messages().await.unwrap_or(u64::MAX) == 0;
            // Long enough for the check after the last assisted refresh.
            let judged = self.emulator.now() >= finch_end + chrono::Duration::hours(25);
            if (unresolved == 0 && idle && judged) || self.emulator.now() >= drain_until {
                break;
            }
        }
        let drained_at = self.emulator.now();
        self.emulator.set_time_scale(0.0);
        // Before the ingress stops, when what is still queued gets given up.
        let webhooks = self.emulator.stats().webhooks;
        workers.stop().await?;
        ingress.stop().await?;

        let changes = self.emulator.change_log(changes_before);
        let staleness = watch.staleness(&changes);
        let sweeps = watch.sweeps_on_time(finch_start, finch_end, 7 * DAY, DAY);
        let dead_letters = events::tally(&self.pool).await?.dead_lettered;
        let diff = diff::mirror_against_emulator(&self.pool, &self.emulator, &self.kinds).await?;
        let assisted = self
            .kinds
            .values()
            .filter(|kind| **kind == ConnectionKind::Assisted)
            .count();
        Ok(observations.report(&report::Inputs {
            args,
            kinds: (self.kinds.len() - assisted, assisted),
            changes: changes.len(),
            staleness: &staleness,
            sweeps: &sweeps,
            dead_letters,
            diff: &diff,
            drain: drained_at - finch_end,
            lost: lost.len(),
            webhooks: &webhooks,
        }))
    }

    async fn finish(self) -> anyhow::Result<()> {
        if let Ok(emulator) = Arc::try_unwrap(self.emulator) {
            emulator.shutdown().await;
        }
        self.pool.close().await;
        let mut admin_url = url::Url::parse(&self.database_url)?;
        let name = admin_url.path().trim_start_matches('/').to_owned();
        admin_url.set_path("postgres");
        let admin = crate::store::connect(admin_url.as_str(), 1).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&admin)
            .await?;
        admin.close().await;
        self.vhost.delete().await
    }
}

/// The measured phase's settings: every duration divided by the time scale,
/// so the worker's cadences, windows and backoffs run on Finch time.
fn compressed_settings(time_scale: f64, overrides: &[(&str, &str)]) -> anyhow::Result<Settings> {
    let scaled = |finch: Duration| {
        format!(
            "{}ms",
            (finch.as_secs_f64() * 1000.0 / time_scale).ceil().max(1.0)
        )
    };
    let minutes = |m: u64| scaled(Duration::from_secs(m * 60));
    let retry_delays = ["5s", "30s", "2m", "10m", "30m"]
        .iter()
        .map(|d| scaled(humantime::parse_duration(d).expect("a fixed duration")))
        .collect::<Vec<_>>()
        .join(",");
    let window_ms = ((60_000.0 / time_scale).round().max(1.0) as u64).to_string();
    let margin_ms = ((1_500.0 / time_scale).round() as u64).to_string();
    let mut all: Vec<(String, String)> = vec![
        ("finch_token_key".into(), BENCH_TOKEN_KEY.into()),
        ("worker_listen_addr".into(), "127.0.0.1:0".into()),
        ("admin_listen_addr".into(), "127.0.0.1:0".into()),
        ("log_format".into(), "json".into()),
        ("rate_limit_window_ms".into(), window_ms),
        ("rate_limit_margin_ms".into(), margin_ms),
        ("rate_limit_pause_secs".into(), "1".into()),
        ("worker_retry_delays".into(), retry_delays),
        ("sweep_every".into(), scaled(7 * DAY)),
        ("assisted_check_every".into(), scaled(DAY)),
        ("scheduler_tick_ms".into(), "100".into()),
        ("pending_backoff".into(), minutes(10)),
        ("pending_horizon".into(), scaled(14 * DAY)),
        ("server_error_backoff".into(), minutes(15)),
        ("server_error_horizon".into(), scaled(3 * DAY)),
        ("park_backoff_max".into(), minutes(360)),
        ("upstream_pause".into(), minutes(5)),
        ("ip_pause".into(), minutes(60)),
        // Bursts arrive within milliseconds of each other here; a window
        // of a second would be minutes of Finch time.
        ("coalesce_window_ms".into(), "100".into()),
        ("coalesce_max_ms".into(), "500".into()),
        ("outbox_poll_interval_ms".into(), "100".into()),
    ];
    all.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let borrowed: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok(Settings::with_overrides(&borrowed)?)
}

/// Worker replicas running in this process.
struct Workers {
    running: Vec<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

impl Workers {
    async fn start(settings: &Settings, replicas: usize) -> anyhow::Result<Self> {
        let mut running = Vec::new();
        for _ in 0..replicas {
            let app = crate::worker::Application::build(settings.worker()?).await?;
            let stop = CancellationToken::new();
            let task = tokio::spawn(app.run_until({
                let stop = stop.clone();
                async move { stop.cancelled().await }
            }));
            running.push((stop, task));
        }
        Ok(Self { running })
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (stop, _) in &self.running {
            stop.cancel();
        }
        for (_, task) in self.running {
            task.await??;
        }
        Ok(())
    }
}

struct Ingress {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Ingress {
    async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let app = crate::ingress::Application::build(settings.ingress()?).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        }));
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// A RabbitMQ vhost of the run's own, so nothing else on the broker mixes in.
struct Vhost {
    name: String,
    management: url::Url,
    amqp_url: String,
    http: reqwest::Client,
}

impl Vhost {
    async fn create(management_url: &str, amqp_url: &str) -> anyhow::Result<Self> {
        let management = url::Url::parse(management_url).context("--rabbitmq-management-url")?;
        let name = format!("finch_fleet_{}", uuid::Uuid::new_v4().simple());
        let vhost = Self {
            amqp_url: {
                let mut url = url::Url::parse(amqp_url)?;
                url.set_path(&format!("/{name}"));
                url.to_string()
            },
            name,
            management,
            http: reqwest::Client::new(),
        };
        vhost
            .call(
                reqwest::Method::PUT,
                &format!("vhosts/{}", vhost.name),
                None,
            )
            .await
            .context("creating a RabbitMQ vhost (is the management plugin enabled?)")?;
        let user = url::Url::parse(amqp_url)?.username().to_owned();
        vhost
            .call(
                reqwest::Method::PUT,
                &format!("permissions/{}/{user}", vhost.name),
                Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
            )
            .await?;
        Ok(vhost)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut url = self.management.clone();
        let user = url.username().to_owned();
        let password = url.password().map(str::to_owned);
        url.set_username("").ok();
        url.set_password(None).ok();
        let url = url.join(&format!("api/{path}"))?;
        let mut request = self.http.request(method, url).basic_auth(user, password);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Ok(request.send().await?.error_for_status()?)
    }

    /// Messages in every queue of the vhost, ready or unacknowledged, except
    /// the dead-letter queue (where messages stay until someone acts).
    async fn queued_messages(&self) -> anyhow::Result<u64> {
        let queues: Vec<serde_json::Value> = self
            .call(reqwest::Method::GET, &format!("queues/{}", self.name), None)
            .await?
            .json()
            .await?;
        Ok(queues
            .iter()
            .filter(|q| q["name"] != crate::queue::topology::DEAD_LETTER_QUEUE)
            .filter(|q| !q["name"].as_str().unwrap_or("").starts_with("bench."))
            .map(|q| q["messages"].as_u64().unwrap_or(0))
            .sum())
    }

    async fn delete(&self) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::DELETE,
            &format!("vhosts/{}", self.name),
            None,
        )
        .await?;
        Ok(())
    }
}

/// Finch's daily budget of a product for the whole application.
fn daily_budget(product: Product) -> u64 {
    u64::from(product.rate_limit_per_minute()) * 1440
}
