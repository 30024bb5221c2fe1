//! Postgres: connection, migrations, and the tables each part of the flow owns.

pub mod budget;
pub mod connections;
pub mod events;
pub mod finch_data;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// Migrations compiled into the binary, so `migrate` needs no files on disk.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The cause is the source, not part of the message: log with
/// [`crate::telemetry::ErrorChain`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres cannot be reached or is not accepting work: try again later.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The query itself failed (bad SQL, a constraint, a missing column):
    /// a bug, which trying again will not fix.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error),
            sqlx::Error::Database(db) if is_transient_code(db.code().as_deref()) => {
                Self::Unavailable(error)
            }
            _ => Self::Query(error),
        }
    }
}

/// SQLSTATE classes that mean "try again later" rather than "this is wrong":
/// connection exceptions, insufficient resources, operator intervention.
fn is_transient_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        code.starts_with("08") || code.starts_with("53") || code.starts_with("57")
    })
}

/// Opens a pool, creating the database first if it does not exist yet.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(database_url)
        .await
        .unwrap_or(false)
    {
        // Another process may create it at the same moment; that is fine.
        if let Err(error) = Postgres::create_database(database_url).await {
            if !Postgres::database_exists(database_url)
                .await
                .unwrap_or(false)
            {
                return Err(anyhow::Error::new(error).context("creating the database"));
            }
        }
    }
    let options: PgConnectOptions = database_url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        // A request must not hang on a dead database: fail fast, answer 503.
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options.application_name("finch-webhooks"))
        .await
        .map_err(|error| anyhow::Error::new(error).context("connecting to Postgres"))?;
    Ok(pool)
}

/// Applies pending migrations; concurrent callers wait on sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|error| anyhow::Error::new(error).context("applying migrations"))
}
