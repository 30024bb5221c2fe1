//! Emulator flags, for `finch-emulator` and `finch-webhooks emulator`.
//! Durations are written like `30s`, `500ms`, `2h`.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::NaiveDate;

use super::{EmulatorConfig, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_LISTEN};

#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Base URL to put in job URLs when clients reach the emulator by another address.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Application client id (for /auth/token and the Basic-auth sandbox endpoints).
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// Application client secret.
    #[arg(long, default_value = DEFAULT_CLIENT_SECRET)]
    pub client_secret: String,
    /// Where to deliver webhooks; repeat for several targets.
    #[arg(long = "webhook-url")]
    pub webhook_urls: Vec<String>,
    /// Base64 secret to sign deliveries with; repeat to sign with several, as
    /// during a rotation. One is generated and printed if none is given.
    #[arg(long = "webhook-secret")]
    pub webhook_secrets: Vec<String>,
    /// Connections to seed at start-up.
    #[arg(long, default_value_t = 3)]
    pub connections: usize,
    /// Employees per seeded connection.
    #[arg(long, default_value_t = 20)]
    pub employees: usize,
    /// Seed for all generated data: the same seed gives the same companies, people and ids.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Seeded connections get bi-weekly payments from this date (YYYY-MM-DD) to today.
    #[arg(long, default_value = "2024-01-01")]
    pub history_start: NaiveDate,
    /// Run Finch time this many times faster (sync jobs, pay-statement delays,
    /// the sync timer and the webhook retry schedule). Rate-limit windows stay 60 real seconds.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Multiply the per-product rate limits (20/min, 12/min for payments); 0 disables them.
    #[arg(long, default_value_t = 1.0)]
    pub rate_limit_scale: f64,
    /// Extra latency for every /employer/* request.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share (0-1) of /employer/* requests answered 500 server_error.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share (0-1) of /employer/* requests answered 502 upstream_provider_error.
    #[arg(long, default_value_t = 0.0)]
    pub upstream_error_rate: f64,
    /// How long a newly synced payment's pay statements answer 202 data_sync_in_progress.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub pay_statement_delay: Duration,
    /// How long a data_sync_all job runs before it completes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub sync_duration: Duration,
    /// Sync every connected connection on this interval (Finch's is 24h); off by default, as in Finch's sandbox.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sync_interval: Option<Duration>,
    /// Forced refreshes (POST /jobs/automated, /sandbox/jobs) per connection per hour; 0 for unlimited.
    #[arg(long, default_value_t = 10)]
    pub refreshes_per_hour: u32,
    /// Share (0-1) of events delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Deliver events in random order.
    #[arg(long)]
    pub shuffle: bool,
    /// Deliveries in flight per webhook target.
    #[arg(long, default_value_t = 4)]
    pub delivery_concurrency: usize,
    /// A delivery not answered within this is a failure and is retried.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
}

impl EmulatorArgs {
    pub fn into_config(self) -> anyhow::Result<EmulatorConfig> {
        Ok(EmulatorConfig {
            listen: self.listen,
            public_url: self.public_url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            webhook_urls: self.webhook_urls,
            webhook_secrets: self.webhook_secrets,
            connections: self.connections,
            employees: self.employees,
            seed: self.seed,
            history_start: self.history_start,
            time_scale: self.time_scale,
            start_at: None,
            freeze_clock: false,
            automated_refresh: super::EmulatorConfig::default().automated_refresh,
            assisted_refresh: super::EmulatorConfig::default().assisted_refresh,
            churn: super::Churn::default(),
            rate_limit_scale: self.rate_limit_scale,
            latency: self.latency,
            error_rate: self.error_rate,
            upstream_error_rate: self.upstream_error_rate,
            pay_statement_delay: self.pay_statement_delay,
            sync_duration: self.sync_duration,
            sync_interval: self.sync_interval,
            refreshes_per_hour: self.refreshes_per_hour,
            duplicate_rate: self.duplicate_rate,
            shuffle: self.shuffle,
            delivery_concurrency: self.delivery_concurrency,
            webhook_timeout: self.webhook_timeout,
        })
    }
}
