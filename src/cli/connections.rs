//! `finch-webhooks connections ...`: flags and output over
//! [`crate::ops::connections`]. Tokens are read from a file or stdin, never
//! from arguments, and never reach the output.

use std::io::Read as _;

use anyhow::Context as _;
use secrecy::SecretString;
use sqlx::PgPool;

use super::{database, emit};
use crate::config::Settings;
use crate::finch::token::KeyRing;
use crate::finch::FinchClient;
use crate::ops::connections::{self, ConnectionStatus};

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
    /// One stored connection (never its token).
    Show {
        connection_id: String,
        /// Print JSON instead of text.
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
    /// Re-encrypt every stored token with the current key (FINCH_TOKEN_KEY_ID), bound to its connection; resumable.
    RotateKey {
        /// Tokens per committed transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
    },
}

#[derive(Debug, clap::Args)]
// Exactly one source of the token. The derived group would hold every flag,
// making --no-sync and --redirect-uri exclusive with the source they go with.
#[group(skip)]
#[command(group(clap::ArgGroup::new("token_source").required(true).multiple(false)))]
pub struct AddArgs {
    /// File holding the access token, or `-` for stdin (never pass tokens as arguments).
    #[arg(long, group = "token_source")]
    pub access_token_file: Option<String>,
    /// Authorization code from Finch Connect, exchanged with FINCH_CLIENT_ID and FINCH_CLIENT_SECRET.
    #[arg(long, group = "token_source")]
    pub code: Option<String>,
    /// Redirect URI used with the code, if Connect was given one.
    // `requires` alone lets it through with a token file: clap excuses a
    // missing requirement that conflicts with a given flag.
    #[arg(long, requires = "code", conflicts_with = "access_token_file")]
    pub redirect_uri: Option<String>,
    /// Do not queue the initial full sync.
    #[arg(long)]
    pub no_sync: bool,
}

/// What the commands that call Finch need.
struct Finch {
    pool: PgPool,
    key: KeyRing,
    client: FinchClient,
}

async fn finch(settings: &Settings) -> anyhow::Result<Finch> {
    let key = settings.token_keys()?;
    let client = FinchClient::new(&settings.finch_api()?);
    let pool = database(settings).await?;
    Ok(Finch { pool, key, client })
}

pub async fn run(command: ConnectionsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        ConnectionsCommand::Add(args) => {
            let finch = finch(settings).await?;
            let token = match (&args.access_token_file, &args.code) {
                (Some(file), _) => read_token(file)?,
                (None, Some(code)) => {
                    let grant = finch
                        .client
                        .exchange_code(code, args.redirect_uri.as_deref())
                        .await?;
                    grant.access_token
                }
                (None, None) => anyhow::bail!("give --access-token-file or --code"),
            };
            let added = connections::add(&finch.pool, &finch.key, &finch.client, &token).await?;
            println!(
                "added connection {} (provider {}, status {}, products {})",
                added.connection_id,
                added.provider_id.as_deref().unwrap_or("unknown"),
                added.status,
                added.products.join(",")
            );
            if !args.no_sync && added.status == "connected" {
                connections::resync(
                    &finch.pool,
                    &settings.amqp_url()?,
                    &settings.retry_delays()?,
                    &added.connection_id,
                )
                .await?;
                println!("full sync queued");
            }
            Ok(())
        }
        ConnectionsCommand::List { json } => {
            let pool = database(settings).await?;
            let rows = connections::list(&pool).await?;
            emit(json, &rows, || render_list(&rows))
        }
        ConnectionsCommand::Show {
            connection_id,
            json,
        } => {
            let pool = database(settings).await?;
            let status = connections::status(&pool, &connection_id).await?;
            emit(json, &status, || render_row(&status))
        }
        ConnectionsCommand::Remove {
            connection_id,
            disconnect,
        } => {
            // Only --disconnect needs the token, hence the key and Finch.
            let pool = if disconnect {
                let finch = finch(settings).await?;
                connections::disconnect(&finch.pool, &finch.key, &finch.client, &connection_id)
                    .await?;
                println!("disconnected {connection_id} at Finch");
                finch.pool
            } else {
                database(settings).await?
            };
            connections::remove(&pool, &connection_id).await?;
            println!("removed connection {connection_id}");
            Ok(())
        }
        ConnectionsCommand::RotateKey { batch_size } => {
            let keys = settings.token_keys()?;
            let pool = database(settings).await?;
            let rotation = connections::rotate_key(&pool, &keys, batch_size, |_| {}).await?;
            println!(
                "re-encrypted {} tokens with key {} in {} batches",
                rotation.rewritten,
                keys.current_id(),
                rotation.batches
            );
            for (connection_id, reason) in &rotation.failed {
                eprintln!("connection {connection_id}: {reason}");
            }
            anyhow::ensure!(
                rotation.failed.is_empty(),
                "{} tokens could not be decrypted and were left as they were",
                rotation.failed.len()
            );
            Ok(())
        }
        ConnectionsCommand::Resync { connection_id } => {
            let pool = database(settings).await?;
            connections::resync(
                &pool,
                &settings.amqp_url()?,
                &settings.retry_delays()?,
                &connection_id,
            )
            .await?;
            println!("full sync of {connection_id} queued");
            Ok(())
        }
    }
}

fn read_token(file: &str) -> anyhow::Result<SecretString> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the token from stdin")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    }
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "the access token file is empty");
    Ok(SecretString::from(token.to_owned()))
}

fn time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

fn render_list(rows: &[ConnectionStatus]) -> String {
    let mut out = format!(
        "{:<38} {:<10} {:<22} {:<25} {:<25} {:<25} PRODUCTS\n",
        "CONNECTION", "STATE", "PARKED", "LAST SYNC", "FINCH DATA", "NEXT SWEEP"
    );
    for status in rows {
        let row = &status.connection;
        let finch_data = status
            .products_status
            .iter()
            .filter_map(|mark| mark.data_retrieved_at)
            .min();
        out += &format!(
            "{:<38} {:<10} {:<22} {:<25} {:<25} {:<25} {}\n",
            row.connection_id,
            status.sync_state,
            parked(row),
            time(row.last_synced_at),
            time(finch_data),
            time(row.next_sweep_at),
            row.products.join(",")
        );
    }
    out
}

/// `reason since <time>`, or `-`.
fn parked(row: &crate::ops::connections::ConnectionRow) -> String {
    match &row.parked_reason {
        Some(reason) => format!("{reason} since {}", time(row.parked_at)),
        None => "-".to_owned(),
    }
}

fn render_row(status: &ConnectionStatus) -> String {
    let row = &status.connection;
    let fields = [
        ("status", row.status.clone()),
        ("sync state", status.sync_state.clone()),
        ("kind", row.kind.clone()),
        (
            "provider",
            row.provider_id.as_deref().unwrap_or("-").to_owned(),
        ),
        ("products", row.products.join(",")),
        (
            "entities",
            if row.entity_ids.is_empty() {
                "-".to_owned()
            } else {
                row.entity_ids.join(",")
            },
        ),
        ("added at", time(Some(row.created_at))),
        ("updated at", time(Some(row.updated_at))),
        ("last event at", time(row.last_event_at)),
        ("last sync at", time(row.last_synced_at)),
        ("finch synced at", time(row.finch_synced_at)),
        ("last sweep finished", time(row.last_swept_at)),
        ("next sweep at", time(row.next_sweep_at)),
        ("parked", parked(row)),
        ("resumes at", time(row.resume_at)),
        ("paused until", time(row.paused_until)),
        (
            "last error",
            row.last_error.as_deref().unwrap_or("-").to_owned(),
        ),
    ];
    let mut out = format!("Connection {}\n", row.connection_id);
    for (name, value) in fields {
        out += &format!("  {name:<17}{value}\n");
    }
    if !status.products_status.is_empty() {
        out += &format!(
            "  {:<15}{:<25} {:<25} {:<12} LAST ERROR\n",
            "PRODUCT", "LAST READ", "FINCH DATA RETRIEVED", "READ THROUGH"
        );
        for mark in &status.products_status {
            let error = match (&mark.last_error, mark.last_error_at) {
                (Some(error), at) => format!("{} ({error})", time(at)),
                (None, _) => "-".to_owned(),
            };
            out += &format!(
                "  {:<15}{:<25} {:<25} {:<12} {}\n",
                mark.product,
                time(mark.last_success_at),
                time(mark.data_retrieved_at),
                mark.read_through
                    .map_or_else(|| "-".to_owned(), |date| date.to_string()),
                error
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn add(args: &[&str]) -> Result<super::AddArgs, clap::Error> {
        let argv = ["finch-webhooks", "connections", "add"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Connections(super::ConnectionsCommand::Add(args)) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn add_takes_exactly_one_token_source_and_no_sync_with_either() {
        let args = add(&["--access-token-file", "-", "--no-sync"]).unwrap();
        assert_eq!(args.access_token_file.as_deref(), Some("-"));
        assert!(args.no_sync);
        let args = add(&["--code", "c", "--redirect-uri", "https://x", "--no-sync"]).unwrap();
        assert_eq!(
            (
                args.code.as_deref(),
                args.redirect_uri.as_deref(),
                args.no_sync
            ),
            (Some("c"), Some("https://x"), true)
        );
        for refused in [
            &[][..],
            &["--no-sync"],
            &["--access-token-file", "-", "--code", "c"],
            &["--access-token-file", "-", "--redirect-uri", "https://x"],
        ] {
            assert!(add(refused).is_err(), "{refused:?} is refused");
        }
    }
}
