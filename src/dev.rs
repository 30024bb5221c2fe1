//! `finch-webhooks dev`: the emulator, the ingress and the worker in one
//! process, against the local Postgres and RabbitMQ. The emulator's seeded
//! connections are registered (and fully synced) at start, and its webhooks
//! go to the ingress, so a sandbox change shows up in the `finch_*` tables
//! within seconds. Ctrl-C stops all three gracefully.

use std::net::SocketAddr;

use finch_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::finch::FinchClient;
use crate::{ingress, ops, shutdown, worker};

/// Fixed development-only secrets, so that restarts keep working with the
/// tokens already stored. Never use them anywhere else.
const DEV_WEBHOOK_SECRET: &str = "ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtZmluY2g=";
const DEV_TOKEN_KEY: &str = "ZGV2LW9ubHktdG9rZW4ta2V5LTMyLWJ5dGVzLWxvbmc=";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the emulated Finch API listens.
    #[arg(long, default_value = "127.0.0.1:4010")]
    pub emulator_addr: SocketAddr,
    /// Where the ingress listens (the emulator delivers webhooks here).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub ingress_addr: SocketAddr,
    /// Where the worker's health and metrics listen.
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub worker_addr: SocketAddr,
    /// Where the admin API, the console and the ingress's metrics listen.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Connections the emulator seeds.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Employees per seeded connection.
    #[arg(long, default_value_t = 20)]
    pub employees: usize,
}

pub async fn run(args: DevArgs, settings: Settings) -> anyhow::Result<()> {
    let mut settings = settings;
    let secret = settings
        .finch_webhook_secret
        .clone()
        .unwrap_or_else(|| SecretString::from(DEV_WEBHOOK_SECRET));
    settings.finch_webhook_secret = Some(secret.clone());
    if settings.finch_token_key.is_none() {
        settings.finch_token_key = Some(SecretString::from(DEV_TOKEN_KEY));
    }
    // A throwaway local database: every role may create and migrate it.
    settings.database_migrate_on_start = true;
    settings.listen_addr = args.ingress_addr.to_string();
    let console_token = crate::console::dev_token(&mut settings.admin_token);
    settings.worker_listen_addr = args.worker_addr.to_string();
    settings.admin_listen_addr = args.admin_addr.to_string();

    use secrecy::ExposeSecret as _;
    let emulator = Emulator::start(EmulatorConfig {
        listen: args.emulator_addr,
        webhook_urls: vec![format!("http://{}/webhooks/finch", args.ingress_addr)],
        webhook_secrets: vec![secret.expose_secret().to_owned()],
        connections: args.connections,
        employees: args.employees,
        ..EmulatorConfig::default()
    })
    .await?;
    settings.finch_api_base_url = emulator.base_url().to_owned();
    settings.finch_client_id = Some(emulator.client_id().to_owned());
    settings.finch_client_secret = Some(SecretString::from(emulator.client_secret().to_owned()));

    let ingress = ingress::Application::build(settings.ingress()?).await?;
    let worker_config = settings.worker()?;
    let key = worker_config.token_keys.clone();
    let finch = FinchClient::new(&worker_config.finch);
    let worker = worker::Application::build(worker_config).await?;

    let pool = crate::store::connect(&settings.database_url()?, 2).await?;
    for seeded in emulator.connections() {
        let token = SecretString::from(seeded.access_token.clone());
        let row = ops::connections::add(&pool, &key, &finch, &token).await?;
        ops::connections::resync(
            &pool,
            &settings.amqp_url()?,
            &settings.retry_delays()?,
            &row.connection_id,
        )
        .await?;
    }
    pool.close().await;

    println!("{}", emulator.banner());
    println!("Ingress:  http://{}/webhooks/finch", args.ingress_addr);
    println!("Worker:   http://{}/metrics", args.worker_addr);
    println!(
        "Console:  http://{}/console/  (sign in with {console_token})",
        args.admin_addr
    );
    println!("Database: {}", settings.database_url);
    if let Some(first) = emulator.connections().first() {
        println!(
            "\nRegistered every seeded connection and queued a full sync. Try a change:\n\
             \n  curl -s -X PUT {base}/sandbox/company -H 'Finch-API-Version: 2020-09-17' \\\n\
             \x20   -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n\
             \x20   -d '{{\"legal_name\": \"Renamed Inc\"}}'\n\
             \x20 curl -s -X POST {base}/sandbox/jobs -H 'Finch-API-Version: 2020-09-17' \\\n\
             \x20   -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"type\": \"data_sync_all\"}}'\n\
             \nthen: psql {db} -c \"SELECT data->>'legal_name' FROM finch_company\"\n\
             Ctrl-C stops everything.",
            base = emulator.base_url(),
            token = first.access_token,
            db = settings.database_url,
        );
    }

    let stop = CancellationToken::new();
    let ingress_task = tokio::spawn(ingress.run_until({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let worker_task = tokio::spawn(worker.run_until({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    shutdown::signal().await;
    stop.cancel();
    let (ingress_result, worker_result) = tokio::join!(ingress_task, worker_task);
    emulator.shutdown().await;
    ingress_result??;
    worker_result??;
    Ok(())
}
