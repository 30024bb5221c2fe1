//! Layered configuration: the commented defaults in `config/default.toml`
//! (compiled in), an optional file named by `FINCH_WEBHOOKS_CONFIG`, then
//! environment variables named after the keys, upper-cased.
//!
//! Loading only reads values; each command then validates the settings it
//! needs, so that `migrate` does not demand a webhook secret it never uses.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::finch::token::{KeyRing, TokenKey};
use crate::ingress::listener::ConnectionLimits;
use crate::secret_url::SecretUrl;
use crate::signature::{SecretError, Verifier, WebhookSecret};

/// The commented defaults file; also the reference for every setting.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Names an operator file layered over the defaults.
pub const CONFIG_FILE_VAR: &str = "FINCH_WEBHOOKS_CONFIG";

/// A setting that stops start-up, shown as one line naming it and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: key.to_ascii_uppercase(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every setting as read, before a command validates the ones it uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub amqp_url: SecretUrl,
    pub log_format: LogFormat,
    pub shutdown_timeout_secs: u64,
    pub listen_addr: String,
    pub finch_webhook_secret: Option<SecretString>,
    pub webhook_tolerance_secs: i64,
    pub max_body_bytes: u64,
    pub ingest_batch_max: usize,
    pub outbox_poll_interval_ms: u64,
    pub outbox_grace_ms: u64,
    pub retry_after_secs: u64,
    // Ingress limits against slow and hostile clients.
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub finch_api_base_url: String,
    pub finch_token_key: Option<SecretString>,
    pub finch_client_id: Option<String>,
    pub finch_client_secret: Option<SecretString>,
    pub finch_request_timeout_secs: u64,
    pub worker_listen_addr: String,
    pub worker_prefetch: u16,
    pub coalesce_window_ms: u64,
    pub coalesce_max_ms: u64,
    pub worker_max_in_flight: usize,
    pub rate_limit_company: u32,
    pub rate_limit_directory: u32,
    pub rate_limit_individual: u32,
    pub rate_limit_employment: u32,
    pub rate_limit_payment: u32,
    pub rate_limit_pay_statement: u32,
    pub rate_limit_window_ms: u64,
    pub rate_limit_margin_ms: u64,
    pub rate_limit_pause_secs: u64,
    pub worker_max_attempts: u32,
    pub worker_retry_delays: String,
    pub worker_retry_jitter: f64,
    pub directory_page_size: u32,
    pub pay_statement_page_size: u32,
    pub pay_statement_batch_max: usize,
    pub payment_window_days: u32,
    pub full_sync_since: String,
    pub admin_token: Option<SecretString>,

    // Admin listener (`serve`): the admin API and `/metrics`, apart from the public port.
    pub admin_listen_addr: String,
    pub admin_auth_failures_per_minute: u32,

    // Least privilege: who creates and migrates the database.
    pub database_migrate_on_start: bool,

    // Token key ring: several keys by id, one of them current.
    pub finch_token_keys: Option<SecretString>,
    pub finch_token_key_id: Option<String>,

    // Fleet freshness: incremental reads, sweeps and retry horizons.
    pub payment_overlap_days: u32,
    pub sweep_every: String,
    pub assisted_check_every: String,
    pub sweep_reserve: f64,
    pub scheduler_tick_ms: u64,
    pub scheduler_lease_secs: u64,
    pub pending_backoff: String,
    pub pending_horizon: String,
    pub server_error_retries: u32,
    pub server_error_backoff: String,
    pub server_error_horizon: String,
    pub park_backoff_max: String,
    pub upstream_pause: String,
    pub ip_pause: String,

    // Operator console (under /console/ of the admin API)
    pub console_session_ttl_secs: u64,
    pub console_secure_cookie: bool,
    pub console_trace_url: String,
    pub console_refresh_secs: u64,
}

impl Settings {
    /// Reads defaults, the optional config file and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Ok(path) = std::env::var(CONFIG_FILE_VAR) {
            if !std::path::Path::new(&path).is_file() {
                return Err(ConfigError::new(
                    CONFIG_FILE_VAR,
                    format!("no file at {path}"),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        let keys = Self::keys();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Self::extract(figment.merge(Env::raw().only(&keys)))
    }

    /// Reads the defaults with the given overrides, ignoring the environment (for tests and tools).
    pub fn with_overrides(overrides: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        for (key, value) in overrides {
            // Parsed the way environment values are, so "0" is a number.
            let value: figment::value::Value =
                value.parse().expect("parsing a value is infallible");
            figment = figment.merge((key.to_ascii_lowercase(), value));
        }
        Self::extract(figment)
    }

    /// Every key of the defaults file: the environment variables we read.
    fn keys() -> Vec<String> {
        use figment::Provider as _;
        let mut keys: Vec<String> = Toml::string(DEFAULTS)
            .data()
            .ok()
            .and_then(|mut profiles| profiles.remove(&figment::Profile::Default))
            .map(|dict| dict.into_keys().collect())
            .unwrap_or_default();
        // Settings without a default are commented out in the file.
        keys.extend(
            [
                "finch_webhook_secret",
                "finch_token_key",
                "finch_client_id",
                "finch_client_secret",
                "admin_token",
                "finch_token_keys",
                "finch_token_key_id",
            ]
            .map(String::from),
        );
        keys
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        figment.extract().map_err(|error| {
            let key = error
                .path
                .first()
                .cloned()
                .or_else(|| missing_field(&error.kind))
                .unwrap_or_else(|| "configuration".into());
            ConfigError::new(&key, error.kind.to_string())
        })
    }

    /// The database URL, password included: for connecting only.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        check_url(
            "database_url",
            self.database_url.expose(),
            &["postgres", "postgresql"],
        )?;
        Ok(self.database_url.expose().to_owned())
    }

    /// The broker URL, password included: for connecting only.
    pub fn amqp_url(&self) -> Result<String, ConfigError> {
        check_url("amqp_url", self.amqp_url.expose(), &["amqp", "amqps"])?;
        Ok(self.amqp_url.expose().to_owned())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The retry ladder: the worker retries on it, and every role that
    /// declares the topology declares one retry queue per delay.
    pub fn retry_delays(&self) -> Result<Vec<Duration>, ConfigError> {
        parse_delays(&self.worker_retry_delays)
            .map_err(|reason| ConfigError::new("worker_retry_delays", reason))
    }

    /// Validates everything `serve` needs.
    pub fn ingress(&self) -> Result<IngressConfig, ConfigError> {
        let listen_addr: SocketAddr = self.listen_addr.parse().map_err(|_| {
            ConfigError::new("listen_addr", "expected host:port, such as 0.0.0.0:8080")
        })?;
        let secret_text = self.finch_webhook_secret.as_ref().ok_or_else(|| {
            ConfigError::new(
                "finch_webhook_secret",
                "not set; serve needs the webhook secret shown in the Finch dashboard",
            )
        })?;
        let secrets = WebhookSecret::parse_list(secret_text.expose_secret()).map_err(|error| {
            let reason = match error {
                SecretError::Empty => "is empty",
                SecretError::NotBase64 => {
                    "is not base64 (paste it exactly as the Finch dashboard shows it)"
                }
            };
            ConfigError::new("finch_webhook_secret", reason)
        })?;
        if self.webhook_tolerance_secs < 1 {
            return Err(ConfigError::new(
                "webhook_tolerance_secs",
                "must be at least 1 second",
            ));
        }
        if self.max_body_bytes < 1 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        // Ingress limits against slow and hostile clients.
        if self.max_connections < 1 {
            return Err(ConfigError::new("max_connections", "must be at least 1"));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::new(
                "max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.header_read_timeout_secs < 1 {
            return Err(ConfigError::new(
                "header_read_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if self.request_timeout_secs < 1 {
            return Err(ConfigError::new(
                "request_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if self.ingest_batch_max < 1 {
            return Err(ConfigError::new("ingest_batch_max", "must be at least 1"));
        }
        if self.outbox_poll_interval_ms < 1 {
            return Err(ConfigError::new(
                "outbox_poll_interval_ms",
                "must be at least 1",
            ));
        }
        let admin_token = match &self.admin_token {
            None => None,
            Some(token) if token.expose_secret().trim().len() < ADMIN_TOKEN_MIN_LEN => {
                return Err(ConfigError::new(
                    "admin_token",
                    format!(
                        "must be at least {ADMIN_TOKEN_MIN_LEN} characters (unset it to disable the admin API)"
                    ),
                ))
            }
            Some(token) => Some(SecretString::from(token.expose_secret().trim())),
        };
        let admin_listen_addr: SocketAddr = self.admin_listen_addr.parse().map_err(|_| {
            ConfigError::new(
                "admin_listen_addr",
                "expected host:port, such as 127.0.0.1:9090",
            )
        })?;
        let admin_auth_failures_per_minute = NonZeroU32::new(self.admin_auth_failures_per_minute)
            .ok_or_else(|| {
            ConfigError::new("admin_auth_failures_per_minute", "must be at least 1")
        })?;
        Ok(IngressConfig {
            listen_addr,
            admin_listen_addr,
            admin_auth_failures_per_minute,
            database_url: SecretUrl::new(self.database_url()?),
            database_max_connections: self.database_max_connections.max(2),
            amqp_url: SecretUrl::new(self.amqp_url()?),
            retry_delays: self.retry_delays()?,
            verifier: Verifier::new(secrets, self.webhook_tolerance_secs as u64),
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            ingest_batch_max: self.ingest_batch_max,
            outbox_poll_interval: Duration::from_millis(self.outbox_poll_interval_ms),
            outbox_grace: Duration::from_millis(self.outbox_grace_ms),
            retry_after_secs: self.retry_after_secs.max(1),
            connection_limits: ConnectionLimits {
                max_connections: self.max_connections,
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                max_header_bytes: self.max_header_bytes,
            },
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            shutdown_timeout: self.shutdown_timeout(),
            admin_token,
            migrate_on_start: self.database_migrate_on_start,
            console: self.console()?,
        })
    }

    /// Validates the operator console's settings.
    pub fn console(&self) -> Result<ConsoleConfig, ConfigError> {
        if self.console_session_ttl_secs < 60 {
            return Err(ConfigError::new(
                "console_session_ttl_secs",
                "must be at least 60 seconds",
            ));
        }
        let trace_url = self.console_trace_url.trim();
        if !trace_url.is_empty() && !trace_url.contains("{trace_id}") {
            return Err(ConfigError::new(
                "console_trace_url",
                "must contain {trace_id}, e.g. http://jaeger:16686/trace/{trace_id}",
            ));
        }
        Ok(ConsoleConfig {
            session_ttl: Duration::from_secs(self.console_session_ttl_secs),
            secure_cookie: self.console_secure_cookie,
            trace_url: (!trace_url.is_empty()).then(|| trace_url.to_owned()),
            refresh: Duration::from_secs(self.console_refresh_secs.max(1)),
            rate_limits: self.rate_limits(),
        })
    }
}

/// Validated settings of the operator console.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Marks the session cookie `Secure` even when no proxy says the request came over TLS.
    pub secure_cookie: bool,
    /// Link to a trace, with `{trace_id}` where its id goes; no link when `None`.
    pub trace_url: Option<String>,
    /// How often the overview refreshes itself.
    pub refresh: Duration,
    /// The budget the workers share, to show each product's use of it.
    pub rate_limits: RateLimits,
}

impl Settings {
    /// The application-wide Finch budget the workers share.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            company: self.rate_limit_company,
            directory: self.rate_limit_directory,
            individual: self.rate_limit_individual,
            employment: self.rate_limit_employment,
            payment: self.rate_limit_payment,
            pay_statement: self.rate_limit_pay_statement,
            window: Duration::from_millis(self.rate_limit_window_ms),
            margin: Duration::from_millis(self.rate_limit_margin_ms),
            pause: Duration::from_secs(self.rate_limit_pause_secs),
        }
    }

    /// Validates what talking to the Finch API needs.
    pub fn finch_api(&self) -> Result<FinchApiConfig, ConfigError> {
        check_url(
            "finch_api_base_url",
            &self.finch_api_base_url,
            &["http", "https"],
        )?;
        if self.finch_request_timeout_secs < 1 {
            return Err(ConfigError::new(
                "finch_request_timeout_secs",
                "must be at least 1 second",
            ));
        }
        Ok(FinchApiConfig {
            base_url: self.finch_api_base_url.trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(self.finch_request_timeout_secs),
            client_id: self.finch_client_id.clone().filter(|id| !id.is_empty()),
            client_secret: self
                .finch_client_secret
                .clone()
                .filter(|secret| !secret.expose_secret().is_empty()),
        })
    }

    /// The keys that encrypt access tokens at rest: `FINCH_TOKEN_KEY` (named
    /// by its fingerprint) and `FINCH_TOKEN_KEYS` (`id:base64,...`), with
    /// `FINCH_TOKEN_KEY_ID` naming the one that encrypts when there are several.
    pub fn token_keys(&self) -> Result<KeyRing, ConfigError> {
        let mut keys: Vec<TokenKey> = Vec::new();
        if let Some(text) = &self.finch_token_key {
            keys.push(
                TokenKey::from_base64(text.expose_secret())
                    .map_err(|reason| ConfigError::new("finch_token_key", reason))?,
            );
        }
        let single = keys.first().map(|key| key.id().to_owned());
        if let Some(list) = &self.finch_token_keys {
            for entry in list.expose_secret().split(',').map(str::trim) {
                if entry.is_empty() {
                    continue;
                }
                let (id, key) = entry.split_once(':').ok_or_else(|| {
                    ConfigError::new(
                        "finch_token_keys",
                        "expected id:base64 entries, comma-separated",
                    )
                })?;
                let key = TokenKey::with_id(id.trim(), key).map_err(|reason| {
                    ConfigError::new("finch_token_keys", format!("key {}: {reason}", id.trim()))
                })?;
                if keys.iter().any(|known| known.id() == key.id()) {
                    return Err(ConfigError::new(
                        "finch_token_keys",
                        format!("key id {} appears twice", key.id()),
                    ));
                }
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(ConfigError::new(
                "finch_token_key",
                "not set; generate one with `openssl rand -base64 32`",
            ));
        }
        let current_id = match (&self.finch_token_key_id, single) {
            (Some(id), _) => id.trim().to_owned(),
            (None, Some(single)) => single,
            (None, None) if keys.len() == 1 => keys[0].id().to_owned(),
            (None, None) => {
                return Err(ConfigError::new(
                    "finch_token_key_id",
                    "not set; name the key of FINCH_TOKEN_KEYS that encrypts",
                ))
            }
        };
        let position = keys
            .iter()
            .position(|key| key.id() == current_id)
            .ok_or_else(|| {
                ConfigError::new(
                    "finch_token_key_id",
                    format!("no configured key has the id {current_id}"),
                )
            })?;
        let current = keys.remove(position);
        Ok(KeyRing::new(current, keys))
    }

    /// Validates everything `worker` needs.
    pub fn worker(&self) -> Result<WorkerConfig, ConfigError> {
        let listen_addr: SocketAddr = self.worker_listen_addr.parse().map_err(|_| {
            ConfigError::new(
                "worker_listen_addr",
                "expected host:port, such as 0.0.0.0:9091",
            )
        })?;
        let positive = |key: &str, value: u64| {
            if value < 1 {
                Err(ConfigError::new(key, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("worker_prefetch", u64::from(self.worker_prefetch))?;
        positive("worker_max_in_flight", self.worker_max_in_flight as u64)?;
        positive("rate_limit_window_ms", self.rate_limit_window_ms)?;
        positive("worker_max_attempts", u64::from(self.worker_max_attempts))?;
        positive("directory_page_size", u64::from(self.directory_page_size))?;
        positive(
            "pay_statement_page_size",
            u64::from(self.pay_statement_page_size),
        )?;
        positive(
            "pay_statement_batch_max",
            self.pay_statement_batch_max as u64,
        )?;
        let limits = [
            ("rate_limit_company", self.rate_limit_company),
            ("rate_limit_directory", self.rate_limit_directory),
            ("rate_limit_individual", self.rate_limit_individual),
            ("rate_limit_employment", self.rate_limit_employment),
            ("rate_limit_payment", self.rate_limit_payment),
            ("rate_limit_pay_statement", self.rate_limit_pay_statement),
        ];
        for (key, value) in limits {
            positive(key, u64::from(value))?;
        }
        let retry_delays = self.retry_delays()?;
        if !(0.0..1.0).contains(&self.worker_retry_jitter) {
            return Err(ConfigError::new(
                "worker_retry_jitter",
                "must be at least 0 and below 1",
            ));
        }
        let full_sync_since = chrono::NaiveDate::parse_from_str(&self.full_sync_since, "%Y-%m-%d")
            .map_err(|_| ConfigError::new("full_sync_since", "expected a date as YYYY-MM-DD"))?;
        Ok(WorkerConfig {
            listen_addr,
            database_url: SecretUrl::new(self.database_url()?),
            database_max_connections: self.database_max_connections.max(4),
            amqp_url: SecretUrl::new(self.amqp_url()?),
            // The worker never exchanges codes: it gets no client credentials.
            finch: FinchApiConfig {
                client_id: None,
                client_secret: None,
                ..self.finch_api()?
            },
            token_keys: self.token_keys()?,
            prefetch: self.worker_prefetch,
            coalesce_window: Duration::from_millis(self.coalesce_window_ms),
            coalesce_max: Duration::from_millis(self.coalesce_max_ms.max(self.coalesce_window_ms)),
            max_in_flight: self.worker_max_in_flight,
            rate_limits: self.rate_limits(),
            max_attempts: self.worker_max_attempts,
            retry_delays,
            retry_jitter: self.worker_retry_jitter,
            directory_page_size: self.directory_page_size,
            pay_statement_page_size: self.pay_statement_page_size,
            pay_statement_batch_max: self.pay_statement_batch_max,
            payment_window_days: self.payment_window_days,
            full_sync_since,
            shutdown_timeout: self.shutdown_timeout(),
            migrate_on_start: self.database_migrate_on_start,
            fleet: self.fleet()?,
        })
    }

    /// Validates the fleet settings: cadences, the sweep reserve and the
    /// retry horizons of each failure class.
    pub fn fleet(&self) -> Result<FleetConfig, ConfigError> {
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text.trim())
                .ok()
                .filter(|duration| !duration.is_zero())
                .ok_or_else(|| {
                    ConfigError::new(key, "expected a non-zero duration such as 30s, 2h or 7d")
                })
        };
        if !(0.0..1.0).contains(&self.sweep_reserve) {
            return Err(ConfigError::new(
                "sweep_reserve",
                "must be at least 0 and below 1",
            ));
        }
        if self.scheduler_tick_ms < 1 {
            return Err(ConfigError::new("scheduler_tick_ms", "must be at least 1"));
        }
        if self.scheduler_lease_secs < 1 {
            return Err(ConfigError::new(
                "scheduler_lease_secs",
                "must be at least 1",
            ));
        }
        Ok(FleetConfig {
            payment_overlap_days: self.payment_overlap_days,
            sweep_every: duration("sweep_every", &self.sweep_every)?,
            assisted_check_every: duration("assisted_check_every", &self.assisted_check_every)?,
            sweep_reserve: self.sweep_reserve,
            scheduler_tick: Duration::from_millis(self.scheduler_tick_ms),
            scheduler_lease: Duration::from_secs(self.scheduler_lease_secs),
            pending_backoff: duration("pending_backoff", &self.pending_backoff)?,
            pending_horizon: duration("pending_horizon", &self.pending_horizon)?,
            server_error_retries: self.server_error_retries,
            server_error_backoff: duration("server_error_backoff", &self.server_error_backoff)?,
            server_error_horizon: duration("server_error_horizon", &self.server_error_horizon)?,
            park_backoff_max: duration("park_backoff_max", &self.park_backoff_max)?,
            upstream_pause: duration("upstream_pause", &self.upstream_pause)?,
            ip_pause: duration("ip_pause", &self.ip_pause)?,
        })
    }

    /// The secrets that are set although `role` never reads them.
    pub fn unused_secrets(&self, role: Role) -> Vec<&'static str> {
        let set = [
            ("FINCH_WEBHOOK_SECRET", self.finch_webhook_secret.is_some()),
            ("ADMIN_TOKEN", self.admin_token.is_some()),
            ("FINCH_TOKEN_KEY", self.finch_token_key.is_some()),
            ("FINCH_TOKEN_KEYS", self.finch_token_keys.is_some()),
            ("FINCH_CLIENT_ID", self.finch_client_id.is_some()),
            ("FINCH_CLIENT_SECRET", self.finch_client_secret.is_some()),
        ];
        set.into_iter()
            .filter(|(name, present)| *present && !role.secrets().contains(name))
            .map(|(name, _)| name)
            .collect()
    }
}

/// A long-running role, for what it may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
}

impl Role {
    /// The secrets the role reads (beyond `DATABASE_URL` and `AMQP_URL`).
    pub fn secrets(self) -> &'static [&'static str] {
        match self {
            Role::Serve => &["FINCH_WEBHOOK_SECRET", "ADMIN_TOKEN"],
            Role::Worker => &["FINCH_TOKEN_KEY", "FINCH_TOKEN_KEYS"],
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Serve => "serve",
            Role::Worker => "worker",
        })
    }
}

/// `5s,30s,2m`: humantime durations, comma-separated, at least one.
fn parse_delays(text: &str) -> Result<Vec<Duration>, String> {
    let delays = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            humantime::parse_duration(part)
                .map_err(|_| format!("`{part}` is not a duration such as 30s or 2m"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() || delays.iter().any(Duration::is_zero) {
        return Err("expected one or more non-zero durations, such as 5s,30s,2m".into());
    }
    Ok(delays)
}

/// Where and how to reach the Finch API.
#[derive(Debug, Clone)]
pub struct FinchApiConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub timeout: Duration,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
}

/// Requests per window for each Finch product, application-wide.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub company: u32,
    pub directory: u32,
    pub individual: u32,
    pub employment: u32,
    pub payment: u32,
    pub pay_statement: u32,
    pub window: Duration,
    pub margin: Duration,
    pub pause: Duration,
}

/// Validated settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub listen_addr: SocketAddr,
    /// Postgres, password included; shown redacted.
    pub database_url: SecretUrl,
    /// Pool size; at least 4, since commits, budget checks and the
    /// finalizer use it at once.
    pub database_max_connections: u32,
    /// RabbitMQ, password included; shown redacted.
    pub amqp_url: SecretUrl,
    /// Where Finch is and how long a request may take.
    pub finch: FinchApiConfig,
    /// Decrypt the stored access tokens; the current one encrypts.
    pub token_keys: KeyRing,
    /// Unacknowledged messages held at once: a payrun's events must all be
    /// held to share one batch.
    pub prefetch: u16,
    /// A batch goes out once no event joined it for this long...
    pub coalesce_window: Duration,
    /// ...or this long after its first event, whichever comes first.
    pub coalesce_max: Duration,
    /// Finch requests in flight at once, all products together.
    pub max_in_flight: usize,
    /// Finch's per-product limits, shared by every worker.
    pub rate_limits: RateLimits,
    /// Attempts before a retryable failure is dead-lettered.
    pub max_attempts: u32,
    /// The wait before each retry (the last repeats); one retry queue each.
    pub retry_delays: Vec<Duration>,
    /// Share of a delay taken off at random, so a burst's retries spread out.
    pub retry_jitter: f64,
    /// Individuals per directory request.
    pub directory_page_size: u32,
    /// Pay statements per payment per request.
    pub pay_statement_page_size: u32,
    /// Payment ids per pay-statement request.
    pub pay_statement_batch_max: usize,
    /// Days either side of a `payment.*` event's pay date that are reread.
    pub payment_window_days: u32,
    /// How far back a full sync reads payments.
    pub full_sync_since: chrono::NaiveDate,
    /// How long in-flight work may hold up a stop.
    pub shutdown_timeout: Duration,
    /// Create and migrate the database at start (development only).
    pub migrate_on_start: bool,
    /// Incremental reads, sweeps and retry horizons.
    pub fleet: FleetConfig,
}

/// Validated fleet settings: how the worker keeps many connections fresh on
/// one application's budget, and how long each failure class is retried.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Days before the payments watermark that a sweep rereads, for
    /// payments a provider corrects after the fact.
    pub payment_overlap_days: u32,
    /// How often every automated connection is reconciled.
    pub sweep_every: Duration,
    /// How often an assisted connection's /introspect is read for a new refresh.
    pub assisted_check_every: Duration,
    /// Share of each product's budget a sweep never takes, kept for events.
    pub sweep_reserve: f64,
    /// How often the scheduler looks for due sweeps and resumes.
    pub scheduler_tick: Duration,
    /// How long the scheduler lease lasts without renewal.
    pub scheduler_lease: Duration,
    /// First wait of a parked pending first sync; doubles each time.
    pub pending_backoff: Duration,
    /// How long a first sync may stay pending before the connection waits for an operator.
    pub pending_horizon: Duration,
    /// Retry-queue attempts a 5xx gets before the connection is parked.
    pub server_error_retries: u32,
    /// First wait of a connection parked by 5xx; doubles each time.
    pub server_error_backoff: Duration,
    /// How long 5xx are retried before the connection waits for an operator.
    pub server_error_horizon: Duration,
    /// Longest wait between two tries of a parked connection.
    pub park_backoff_max: Duration,
    /// Pause of one connection after `upstream_rate_limit_exceeded` without Retry-After.
    pub upstream_pause: Duration,
    /// Pause of every product after `finch_api_ip_rl` without Retry-After.
    pub ip_pause: Duration,
}

/// Validated settings of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Where the webhook endpoint and health listen: the public port.
    pub listen_addr: SocketAddr,
    /// Where the admin API and `/metrics` listen, kept off the public port.
    pub admin_listen_addr: SocketAddr,
    /// Wrong admin tokens a client may present per minute before it gets 429.
    pub admin_auth_failures_per_minute: NonZeroU32,
    /// Postgres, password included; shown redacted.
    pub database_url: SecretUrl,
    /// Pool size; at least 2, since the relay holds one for its lock while
    /// it queries with another.
    pub database_max_connections: u32,
    /// RabbitMQ, password included; shown redacted.
    pub amqp_url: SecretUrl,
    /// The retry queues the broker link declares, so they match the worker's.
    pub retry_delays: Vec<Duration>,
    /// Checks Finch's signature and timestamp with the configured secrets.
    pub verifier: Verifier,
    /// Larger bodies are refused (413) before being read in full.
    pub max_body_bytes: usize,
    /// Most deliveries committed together.
    pub ingest_batch_max: usize,
    /// How often the relay looks for events the direct publish missed.
    pub outbox_poll_interval: Duration,
    /// How long the relay leaves a fresh event to the direct publish.
    pub outbox_grace: Duration,
    /// `Retry-After` of a 503, when Postgres cannot store an event.
    pub retry_after_secs: u64,
    /// Connections at once, and how long and large their headers may be.
    pub connection_limits: ConnectionLimits,
    /// A delivery that has not been answered this long after its headers
    /// arrived (a body sent slowly, say) gets 408.
    pub request_timeout: Duration,
    /// How long in-flight requests and the pipeline may hold up a stop.
    pub shutdown_timeout: Duration,
    /// Bearer token of the admin API; `None` leaves `/admin/` unmounted.
    pub admin_token: Option<SecretString>,
    /// Create and migrate the database at start (development only).
    pub migrate_on_start: bool,
    /// The console served with the admin API.
    pub console: ConsoleConfig,
}

/// Smallest header limit accepted: what hyper's HTTP/1 parser needs, and
/// more than a Finch delivery's headers take.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Shortest admin token accepted: long enough that guessing is hopeless.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|error| ConfigError::new(key, format!("not a valid URL ({error})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::new(
            key,
            format!(
                "scheme must be one of {}, not {}",
                schemes.join(", "),
                url.scheme()
            ),
        ));
    }
    Ok(())
}

fn missing_field(kind: &figment::error::Kind) -> Option<String> {
    match kind {
        figment::error::Kind::MissingField(name) => Some(name.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";

    #[test]
    fn defaults_parse_and_document_every_field() {
        let settings = Settings::with_overrides(&[]).unwrap();
        assert_eq!(settings.listen_addr, "0.0.0.0:8080");
        assert_eq!(settings.webhook_tolerance_secs, 300);
        assert_eq!(settings.max_body_bytes, 65_536);
        assert_eq!(settings.max_connections, 1024);
        assert!(settings.finch_webhook_secret.is_none());
    }

    #[test]
    fn serve_refuses_to_start_without_a_secret_and_names_the_variable() {
        let error = Settings::with_overrides(&[])
            .unwrap()
            .ingress()
            .unwrap_err();
        assert_eq!(error.setting, "FINCH_WEBHOOK_SECRET");
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "finch_webhook_secret",
                "not base64!",
                "FINCH_WEBHOOK_SECRET",
            ),
            ("webhook_tolerance_secs", "0", "WEBHOOK_TOLERANCE_SECS"),
            ("database_url", "not a url", "DATABASE_URL"),
            ("amqp_url", "http://127.0.0.1", "AMQP_URL"),
            ("listen_addr", "localhost", "LISTEN_ADDR"),
            ("admin_listen_addr", "localhost", "ADMIN_LISTEN_ADDR"),
            (
                "admin_auth_failures_per_minute",
                "0",
                "ADMIN_AUTH_FAILURES_PER_MINUTE",
            ),
            ("admin_token", "short", "ADMIN_TOKEN"),
            ("max_connections", "0", "MAX_CONNECTIONS"),
            ("max_header_bytes", "4096", "MAX_HEADER_BYTES"),
            ("header_read_timeout_secs", "0", "HEADER_READ_TIMEOUT_SECS"),
            ("request_timeout_secs", "0", "REQUEST_TIMEOUT_SECS"),
            ("worker_retry_delays", "soon", "WORKER_RETRY_DELAYS"),
        ];
        for (key, value, expected) in cases {
            let mut overrides = vec![("finch_webhook_secret", SECRET)];
            overrides.push((key, value));
            let error = Settings::with_overrides(&overrides)
                .unwrap()
                .ingress()
                .unwrap_err();
            assert_eq!(&error.setting, expected, "{key}={value}: {error}");
        }
    }

    #[test]
    fn unparseable_numbers_name_the_setting() {
        let error = Settings::with_overrides(&[("max_body_bytes", "lots")]).unwrap_err();
        assert_eq!(error.setting, "MAX_BODY_BYTES");
    }

    const TOKEN_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn worker_settings_validate_and_name_themselves() {
        let ok = Settings::with_overrides(&[("finch_token_key", TOKEN_KEY)])
            .unwrap()
            .worker()
            .unwrap();
        assert_eq!(ok.finch.base_url, "https://api.tryfinch.com");
        assert_eq!(ok.retry_delays.len(), 5);
        assert_eq!(ok.rate_limits.pay_statement, 12);
        assert!(!format!("{ok:?}").contains(TOKEN_KEY));
        let cases: &[(&str, &str, &str)] = &[
            ("finch_api_base_url", "not a url", "FINCH_API_BASE_URL"),
            ("finch_api_base_url", "ftp://x", "FINCH_API_BASE_URL"),
            ("finch_token_key", "c2hvcnQ=", "FINCH_TOKEN_KEY"),
            ("worker_listen_addr", "nowhere", "WORKER_LISTEN_ADDR"),
            ("worker_retry_delays", "soon", "WORKER_RETRY_DELAYS"),
            ("rate_limit_payment", "0", "RATE_LIMIT_PAYMENT"),
            ("full_sync_since", "yesterday", "FULL_SYNC_SINCE"),
        ];
        for (key, value, expected) in cases {
            let error = Settings::with_overrides(&[("finch_token_key", TOKEN_KEY), (key, value)])
                .unwrap()
                .worker()
                .unwrap_err();
            assert_eq!(&error.setting, expected, "{key}={value}: {error}");
        }
        let error = Settings::with_overrides(&[]).unwrap().worker().unwrap_err();
        assert_eq!(error.setting, "FINCH_TOKEN_KEY");
    }

    const OTHER_KEY: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

    #[test]
    fn the_key_ring_takes_keys_by_id_and_names_the_current_one() {
        let ring =
            |overrides: &[(&str, &str)]| Settings::with_overrides(overrides).unwrap().token_keys();
        let fingerprint = TokenKey::from_base64(TOKEN_KEY).unwrap().id().to_owned();
        let list = format!("new:{OTHER_KEY}");
        assert_eq!(
            ring(&[("finch_token_key", TOKEN_KEY)])
                .unwrap()
                .current_id(),
            fingerprint
        );
        assert_eq!(
            ring(&[("finch_token_keys", &list)]).unwrap().current_id(),
            "new"
        );
        let both = [("finch_token_key", TOKEN_KEY), ("finch_token_keys", &list)];
        assert_eq!(
            ring(&both).unwrap().current_id(),
            fingerprint,
            "the single key stays current"
        );
        let rotated = [both[0], both[1], ("finch_token_key_id", "new")];
        assert_eq!(ring(&rotated).unwrap().current_id(), "new");
        let two = format!("a:{TOKEN_KEY},b:{OTHER_KEY}");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("finch_token_keys", &two)], "FINCH_TOKEN_KEY_ID"),
            (
                &[("finch_token_keys", &two), ("finch_token_key_id", "c")],
                "FINCH_TOKEN_KEY_ID",
            ),
            (&[("finch_token_keys", "a:c2hvcnQ=")], "FINCH_TOKEN_KEYS"),
            (&[("finch_token_keys", "nocolon")], "FINCH_TOKEN_KEYS"),
            (
                &[("finch_token_keys", &format!("a:{TOKEN_KEY},a:{OTHER_KEY}"))],
                "FINCH_TOKEN_KEYS",
            ),
        ];
        for (overrides, setting) in cases {
            let error = ring(overrides).unwrap_err();
            assert_eq!(&error.setting, setting, "{overrides:?}: {error}");
            assert!(
                !error.to_string().contains(TOKEN_KEY) && !error.to_string().contains(OTHER_KEY)
            );
        }
    }

    #[test]
    fn url_passwords_never_appear_in_debug_output() {
        let database_url = "postgres://app:db-pa55word@127.0.0.1:5432/finch";
        let amqp_url = "amqp://app:amqp-pa55word@127.0.0.1:5672/%2f";
        let settings = Settings::with_overrides(&[
            ("finch_webhook_secret", SECRET),
            ("finch_token_key", TOKEN_KEY),
            ("database_url", database_url),
            ("amqp_url", amqp_url),
        ])
        .unwrap();
        let ingress = settings.ingress().unwrap();
        let worker = settings.worker().unwrap();
        assert_eq!(ingress.database_url.expose(), database_url);
        assert_eq!(worker.amqp_url.expose(), amqp_url);
        for shown in [
            format!("{settings:?}"),
            format!("{ingress:?}"),
            format!("{worker:?}"),
        ] {
            assert!(!shown.contains("pa55word"), "{shown}");
            assert!(shown.contains("app:REDACTED@127.0.0.1:5432"), "{shown}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let admin_token = "admin-token-for-the-debug-test";
        let settings = Settings::with_overrides(&[
            ("finch_webhook_secret", SECRET),
            ("admin_token", admin_token),
        ])
        .unwrap();
        let ingress = settings.ingress().unwrap();
        assert!(ingress.admin_token.is_some());
        for shown in [format!("{settings:?}"), format!("{ingress:?}")] {
            assert!(!shown.contains(SECRET));
            assert!(!shown.contains(admin_token));
        }
    }
}
