//! Postgres: connection, migrations, and the tables each part of the flow owns.

pub mod budget;
pub mod connections;
pub mod console;
pub mod events;
pub mod finch_data;
pub mod lease;
pub mod parking;
pub mod sweeps;
pub mod tally;
pub mod watermarks;

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

/// Creates the database if it does not exist yet: `migrate`'s first step,
/// and the runtime roles' only when told to (`DATABASE_MIGRATE_ON_START`).
pub async fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    if Postgres::database_exists(database_url)
        .await
        .unwrap_or(false)
    {
        return Ok(());
    }
    // Another process may create it at the same moment; that is fine.
    if let Err(error) = Postgres::create_database(database_url).await {
        if !Postgres::database_exists(database_url)
            .await
            .unwrap_or(false)
        {
            return Err(anyhow::Error::new(error).context("creating the database"));
        }
    }
    Ok(())
}

/// Opens a pool on an existing database.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
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

/// The pool a runtime role or operator command works on. With
/// `migrate_on_start` (development, `dev`) the database is created and
/// migrated as `migrate` would; without it (production) nothing is created
/// or altered, and a schema older than this build stops start-up with the
/// command that fixes it, so the runtime database user needs no DDL rights.
pub async fn open(
    database_url: &str,
    max_connections: u32,
    migrate_on_start: bool,
) -> anyhow::Result<PgPool> {
    if migrate_on_start {
        create_database_if_missing(database_url).await?;
    }
    let pool = connect(database_url, max_connections).await?;
    if migrate_on_start {
        migrate(&pool).await?;
    } else {
        require_current_schema(&pool).await?;
    }
    Ok(pool)
}

/// The schema lacks migrations of this build (or is absent).
#[derive(Debug, thiserror::Error)]
#[error(
    "the database lacks migrations {missing:?} of this build: run `finch-webhooks migrate` \
     first (or set DATABASE_MIGRATE_ON_START=true in development)"
)]
pub struct SchemaBehind {
    /// Versions this build carries that were never applied.
    pub missing: Vec<i64>,
}

/// Refuses a schema without every migration of this build. Newer ones are
/// fine: during a rollout the old pods keep running after `migrate`.
pub async fn require_current_schema(pool: &PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            // No migrations table: a database `migrate` never ran on.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => {
                Vec::new()
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context("reading the schema version"))
            }
        };
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.contains(version))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SchemaBehind { missing }.into())
    }
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
