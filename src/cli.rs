//! The `finch-webhooks` command line: one binary, one subcommand per role,
//! plus the operator commands ([`dlq`], `events`, [`connections`]) over
//! [`crate::ops`].

pub mod connections;
pub mod dlq;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
#[cfg(feature = "emulator")]
use finch_emulator as emulator;
use sqlx::PgPool;

use crate::config::{ConfigError, Role, Settings};
use crate::telemetry::ErrorChain;
#[cfg(feature = "emulator")]
use crate::{bench, dev};
use crate::{ingress, queue, shutdown, store, telemetry, worker};

#[derive(Debug, Parser)]
#[command(
    name = "finch-webhooks",
    version,
    about = "Receive Finch webhooks and keep a Postgres copy of Finch data fresh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Text logs: show each line's span context (the request, the event, the
    /// batch) with all its fields; JSON logs always carry it.
    #[arg(short, long, global = true)]
    pub verbose: bool,
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
    #[cfg(feature = "emulator")]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Consume the work queue and keep the finch_* tables fresh.
    Worker,
    /// Manage the connections (employers) the worker holds tokens for.
    #[command(subcommand)]
    Connections(connections::ConnectionsCommand),
    /// Run emulator, ingress and worker together against local Postgres and RabbitMQ.
    #[cfg(feature = "emulator")]
    Dev(dev::DevArgs),
    /// Run a local stand-in for the Finch API and its webhook delivery.
    #[cfg(feature = "emulator")]
    Emulator(emulator::EmulatorArgs),
    /// Send one signed Finch webhook event to a URL, like the dashboard's Test button.
    #[cfg(feature = "emulator")]
    Send(emulator::SendArgs),
    #[cfg(not(feature = "emulator"))]
    #[command(flatten)]
    LeftOut(LeftOut),
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
/// Exit code for a subcommand this build leaves out; clap uses 2 for usage errors too.
#[cfg(not(feature = "emulator"))]
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(settings.log_format, cli.verbose);
    // Inert unless FAILPOINTS names points to fail; development builds only.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let outcome = runtime.block_on(run(cli.command, settings));
    telemetry::shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        #[cfg(not(feature = "emulator"))]
        Err(error) if error.is::<NotInThisBuild>() => {
            eprintln!("finch-webhooks: {error}");
            ExitCode::from(EXIT_USAGE)
        }
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
            warn_of_unused_secrets(&settings, Role::Serve);
            let app = ingress::Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "ingress listening");
            app.run_until(shutdown::signal()).await
        }
        Command::Migrate => {
            let database_url = settings.database_url()?;
            let amqp_url = settings.amqp_url()?;
            let retry_delays = settings.retry_delays()?;
            store::create_database_if_missing(&database_url).await?;
            let pool = store::connect(&database_url, 2).await?;
            store::migrate(&pool).await?;
            let connection = crate::queue::connect(&amqp_url).await?;
            crate::queue::declare_topology(&connection, &retry_delays).await?;
            connection.close(0, "migrated".into()).await.ok();
            tracing::info!("database migrated and RabbitMQ topology declared");
            Ok(())
        }
        Command::Health(args) => health(&args.url).await,
        #[cfg(feature = "emulator")]
        Command::Bench(command) => bench::run(command, &settings).await,
        Command::Worker => {
            let config = settings.worker()?;
            warn_of_unused_secrets(&settings, Role::Worker);
            let app = worker::Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "worker health and metrics listening");
            app.run_until(shutdown::signal()).await
        }
        Command::Connections(command) => connections::run(command, &settings).await,
        #[cfg(feature = "emulator")]
        Command::Dev(args) => dev::run(args, settings).await,
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => emulator::run(args, shutdown::signal()).await,
        #[cfg(feature = "emulator")]
        Command::Send(args) => emulator::send(args).await,
        #[cfg(not(feature = "emulator"))]
        Command::LeftOut(left_out) => Err(NotInThisBuild(left_out.name()).into()),
        Command::Dlq(command) => dlq::run_dlq(command, &settings).await,
        Command::Events(command) => dlq::run_events(command, &settings).await,
    }
}

/// A secret in a role's environment that the role never reads is one more
/// place it can leak from; said once at start, by name, never by value.
fn warn_of_unused_secrets(settings: &Settings, role: Role) {
    for name in settings.unused_secrets(role) {
        tracing::warn!(
            setting = name,
            "{name} is set but {role} does not use it: remove it from this role's environment"
        );
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

/// A pool on the configured database for the operator commands, which
/// create and migrate it only when told to, like the runtime roles.
async fn database(settings: &Settings) -> anyhow::Result<PgPool> {
    store::open(
        &settings.database_url()?,
        2,
        settings.database_migrate_on_start,
    )
    .await
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

/// The subcommands that need the Finch emulator, in a build without it (the
/// production image). Hidden from help, they are still recognised, so that
/// `finch-webhooks emulator` says why it cannot run instead of "unrecognized
/// subcommand".
#[cfg(not(feature = "emulator"))]
#[derive(Debug, Subcommand)]
pub enum LeftOut {
    #[command(hide = true, disable_help_flag = true)]
    Bench(LeftOutArgs),
    #[command(hide = true, disable_help_flag = true)]
    Dev(LeftOutArgs),
    #[command(hide = true, disable_help_flag = true)]
    Emulator(LeftOutArgs),
    #[command(hide = true, disable_help_flag = true)]
    Send(LeftOutArgs),
}

#[cfg(not(feature = "emulator"))]
impl LeftOut {
    fn name(&self) -> &'static str {
        match self {
            LeftOut::Bench(_) => "bench",
            LeftOut::Dev(_) => "dev",
            LeftOut::Emulator(_) => "emulator",
            LeftOut::Send(_) => "send",
        }
    }
}

/// Whatever followed a left-out subcommand, accepted unread so that its own
/// flags do not turn the refusal into a usage error.
#[cfg(not(feature = "emulator"))]
#[derive(Debug, clap::Args)]
pub struct LeftOutArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<std::ffi::OsString>,
}

#[cfg(not(feature = "emulator"))]
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not in this build: it leaves out the Finch emulator and everything that runs on it \
     (built with --no-default-features, as the production image is); run it from a default build, \
     e.g. `cargo run -- {0}`"
)]
struct NotInThisBuild(&'static str);
