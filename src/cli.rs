//! The `finch-webhooks` command line: one binary, one subcommand per role,
//! plus the operator commands ([`dlq`], `events`, [`connections`]) over
//! [`crate::ops`].

pub mod connections;
pub mod dlq;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::config::{ConfigError, Settings};
use crate::telemetry::ErrorChain;
use crate::{bench, dev, emulator, ingress, queue, shutdown, store, telemetry, worker};

#[derive(Debug, Parser)]
#[command(
    name = "finch-webhooks",
    version,
    about = "Receive Finch webhooks and keep a Postgres copy of Finch data fresh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook ingress (POST /webhooks/finch) and its outbox relay.
    Serve,
    /// Apply database migrations and declare the RabbitMQ topology, then exit.
    Migrate,
    /// Probe a running process's health endpoint; exits 0 when healthy (for container health checks).
    Health(HealthArgs),
    /// Measure a running instance.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Consume the work queue and keep the finch_* tables fresh.
    Worker,
    /// Manage the connections (employers) the worker holds tokens for.
    #[command(subcommand)]
    Connections(connections::ConnectionsCommand),
    /// Run emulator, ingress and worker together against local Postgres and RabbitMQ.
    Dev(dev::DevArgs),
    /// Run a local stand-in for the Finch API and its webhook delivery.
    Emulator(emulator::EmulatorArgs),
    /// Send one signed Finch webhook event to a URL, like the dashboard's Test button.
    Send(emulator::SendArgs),
    /// Inspect, replay and purge the events that could not be processed.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Look up stored events.
    #[command(subcommand)]
    Events(dlq::EventsCommand),
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// URL to probe.
    #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
    pub url: String,
}

/// Exit code for a configuration that stops start-up.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(settings.log_format);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let outcome = runtime.block_on(run(cli.command, settings));
    telemetry::shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<ConfigError>() {
            Some(config_error) => config_failure(config_error),
            None => {
                eprintln!("finch-webhooks: {}", ErrorChain(error.as_ref()));
                ExitCode::FAILURE
            }
        },
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("finch-webhooks: {error}");
    ExitCode::from(EXIT_CONFIG)
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let config = settings.ingress()?;
            let app = ingress::Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "ingress listening");
            app.run_until(shutdown::signal()).await
        }
        Command::Migrate => {
            let database_url = settings.database_url()?;
            let amqp_url = settings.amqp_url()?;
            let retry_delays = settings.retry_delays()?;
            let pool = store::connect(&database_url, 2).await?;
            store::migrate(&pool).await?;
            let connection = crate::queue::connect(&amqp_url).await?;
            crate::queue::declare_topology(&connection, &retry_delays).await?;
            connection.close(0, "migrated".into()).await.ok();
            tracing::info!("database migrated and RabbitMQ topology declared");
            Ok(())
        }
        Command::Health(args) => health(&args.url).await,
        Command::Bench(command) => bench::run(command, &settings).await,
        Command::Worker => {
            let config = settings.worker()?;
            let app = worker::Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "worker health and metrics listening");
            app.run_until(shutdown::signal()).await
        }
        Command::Connections(command) => connections::run(command, &settings).await,
        Command::Dev(args) => dev::run(args, settings).await,
        Command::Emulator(args) => emulator::run(args, shutdown::signal()).await,
        Command::Send(args) => emulator::send(args).await,
        Command::Dlq(command) => dlq::run_dlq(command, &settings).await,
        Command::Events(command) => dlq::run_events(command, &settings).await,
    }
}

async fn health(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

/// A pool on the configured database, created and migrated if need be, for
/// the operator commands.
async fn database(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = store::connect(&settings.database_url()?, 2).await?;
    store::migrate(&pool).await?;
    Ok(pool)
}

/// A broker connection with the topology of the settings declared, so that
/// a fresh broker (or one where only this tool ran) has the queues to read.
async fn broker(settings: &Settings) -> anyhow::Result<lapin::Connection> {
    let connection = queue::connect(&settings.amqp_url()?)
        .await
        .context("connecting to RabbitMQ")?;
    queue::declare_topology(&connection, &settings.retry_delays()?)
        .await
        .context("declaring the RabbitMQ topology")?;
    Ok(connection)
}

/// Prints `value` as JSON, or as the text `human` renders.
fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
