//! `finch-webhooks connections ...`: add, list, remove and resync the
//! connections the worker holds tokens for. Tokens never reach the output.

use std::io::Read as _;

use bytes::Bytes;
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

use super::message::RESYNC_EVENT_TYPE;
use crate::config::Settings;
use crate::finch::token::TokenKey;
use crate::finch::FinchClient;
use crate::queue::{OutgoingEvent, Publisher};
use crate::store::connections::{self, NewConnection};

#[derive(Debug, clap::Subcommand)]
pub enum ConnectionsCommand {
    /// Store a connection: from an access token (calls /introspect) or an authorization code.
    Add(AddArgs),
    /// List stored connections (never their tokens).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget a connection's token; its data stays in the finch_* tables.
    Remove {
        connection_id: String,
        /// Call Finch's /disconnect first (ends the connection for the employer too).
        #[arg(long)]
        disconnect: bool,
    },
    /// Queue a full refetch of a connection's data.
    Resync { connection_id: String },
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct AddArgs {
    /// File holding the access token, or `-` for stdin (never pass tokens as arguments).
    #[arg(long, group = "source")]
    pub access_token_file: Option<String>,
    /// Authorization code from Finch Connect, exchanged with FINCH_CLIENT_ID and FINCH_CLIENT_SECRET.
    #[arg(long, group = "source")]
    pub code: Option<String>,
    /// Redirect URI used with the code, if Connect was given one.
    #[arg(long, requires = "code")]
    pub redirect_uri: Option<String>,
    /// Do not queue the initial full sync.
    #[arg(long)]
    pub no_sync: bool,
}

struct Tools {
    pool: PgPool,
    key: TokenKey,
    finch: FinchClient,
}

async fn tools(settings: &Settings) -> anyhow::Result<Tools> {
    let key = settings.token_key()?;
    let finch = FinchClient::new(&settings.finch_api()?);
    let pool = crate::store::connect(&settings.database_url()?, 2).await?;
    crate::store::migrate(&pool).await?;
    Ok(Tools { pool, key, finch })
}

pub async fn run(command: ConnectionsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ConnectionsCommand::Add(args) => {
            let tools = tools(settings).await?;
            let token = match (&args.access_token_file, &args.code) {
                (Some(file), _) => read_token(file)?,
                (None, Some(code)) => {
                    let grant = tools
                        .finch
                        .exchange_code(code, args.redirect_uri.as_deref())
                        .await?;
                    grant.access_token
                }
                (None, None) => anyhow::bail!("give --access-token-file or --code"),
            };
            let added = add(&tools.pool, &tools.key, &tools.finch, &token).await?;
            println!(
                "added connection {} (provider {}, status {}, products {})",
                added.connection_id,
                added.provider_id.as_deref().unwrap_or("unknown"),
                added.status,
                added.products.join(",")
            );
            if !args.no_sync && added.status == "connected" {
                queue_resync(&settings.amqp_url()?, &added.connection_id).await?;
                println!("full sync queued");
            }
            Ok(())
        }
        ConnectionsCommand::List { json } => {
            let pool = crate::store::connect(&settings.database_url()?, 2).await?;
            crate::store::migrate(&pool).await?;
            let rows = connections::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<38} {:<12} {:<14} {:<25} {:<25} PRODUCTS",
                "CONNECTION", "STATUS", "PROVIDER", "LAST EVENT", "LAST SYNC"
            );
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            };
            for row in rows {
                println!(
                    "{:<38} {:<12} {:<14} {:<25} {:<25} {}",
                    row.connection_id,
                    row.status,
                    row.provider_id.as_deref().unwrap_or("-"),
                    time(row.last_event_at),
                    time(row.last_synced_at),
                    row.products.join(",")
                );
            }
            Ok(())
        }
        ConnectionsCommand::Remove {
            connection_id,
            disconnect,
        } => {
            let tools = tools(settings).await?;
            if disconnect {
                let connection = connections::get(&tools.pool, &tools.key, &connection_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no connection {connection_id}"))?;
                tools.finch.disconnect(&connection.token).await?;
                println!("disconnected {connection_id} at Finch");
            }
            if connections::remove(&tools.pool, &connection_id).await? {
                println!("removed connection {connection_id}");
                Ok(())
            } else {
                anyhow::bail!("no connection {connection_id}")
            }
        }
        ConnectionsCommand::Resync { connection_id } => {
            let pool = crate::store::connect(&settings.database_url()?, 2).await?;
            crate::store::migrate(&pool).await?;
            if connections::find(&pool, &connection_id).await?.is_none() {
                anyhow::bail!("no connection {connection_id}");
            }
            queue_resync(&settings.amqp_url()?, &connection_id).await?;
            println!("full sync of {connection_id} queued");
            Ok(())
        }
    }
}

fn read_token(file: &str) -> anyhow::Result<SecretString> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file)
            .map_err(|error| anyhow::anyhow!("cannot read {file}: {error}"))?;
    }
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "the access token file is empty");
    Ok(SecretString::from(token.to_owned()))
}

/// Asks Finch who a token belongs to and stores it.
pub async fn add(
    pool: &PgPool,
    key: &TokenKey,
    finch: &FinchClient,
    token: &SecretString,
) -> anyhow::Result<connections::ConnectionRow> {
    let info = finch.introspect(token).await?;
    let connection_id = info
        .connection_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("/introspect returned no connection_id"))?;
    connections::upsert(
        pool,
        key,
        &NewConnection {
            connection_id: &connection_id,
            token,
            provider_id: info.provider(),
            products: &info.products,
            status: info.status(),
        },
    )
    .await?;
    connections::find(pool, &connection_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("connection {connection_id} vanished"))
}

/// Publishes the message that makes a worker run a full sync.
pub async fn queue_resync(amqp_url: &str, connection_id: &str) -> anyhow::Result<()> {
    let connection = crate::queue::connect(amqp_url).await?;
    crate::queue::declare_topology(&connection, &crate::queue::DEFAULT_RETRY_DELAYS).await?;
    let publisher = Publisher::open(&connection).await?;
    let body = json!({
        "connection_id": connection_id,
        "event_type": RESYNC_EVENT_TYPE,
        "data": null,
    });
    let event = OutgoingEvent {
        event_id: format!("resync_{}", uuid::Uuid::new_v4().simple()),
        event_type: Some(RESYNC_EVENT_TYPE.to_owned()),
        connection_id: Some(connection_id.to_owned()),
        body: Bytes::from(body.to_string()),
        dead_letter_reason: None,
        traceparent: None,
    };
    let result = publisher.publish_all(std::slice::from_ref(&event)).await;
    connection.close(200, "queued".into()).await.ok();
    for outcome in result {
        outcome?;
    }
    Ok(())
}
