//! Postgres: connection, migrations, and the tables each part of the flow owns.

pub mod budget;
pub mod connections;
pub mod console;
pub mod events;
pub mod finch_data;
pub mod tally;

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
    /// Postgres cannot be reached, is not accepting work, or rolled the
    /// work back against a concurrent writer: trying again later succeeds.
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
/// connection exceptions, transaction rollbacks (a deadlock or serialization
/// failure between concurrent writers), insufficient resources, operator
/// intervention.
fn is_transient_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        ["08", "40", "53", "57"]
            .iter()
            .any(|class| code.starts_with(class))
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

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn outages_and_rollbacks_are_transient_and_mistakes_are_not() {
        // connection failure, deadlock, too many connections, admin shutdown
        for code in ["08006", "40P01", "53300", "57P01"] {
            assert!(is_transient_code(Some(code)), "{code}");
        }
        // undefined column, undefined table, unique violation, syntax error
        for code in ["42703", "42P01", "23505", "42601"] {
            assert!(!is_transient_code(Some(code)), "{code}");
        }
        assert!(!is_transient_code(None));
    }
}
