//! Leases: one worker at a time holds a named role (the sweep scheduler)
//! across replicas. A holder renews before expiry; when it dies the lease
//! lapses and another worker takes it. Times come from the database clock.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;

/// Takes or renews the lease `name` for `holder`; true while `holder` has it.
pub async fn hold(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let held: Option<String> = sqlx::query_scalar(
        "INSERT INTO worker_leases (name, holder, expires_at)
         VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET
             holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
         WHERE worker_leases.holder = EXCLUDED.holder
            OR worker_leases.expires_at < clock_timestamp()
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(held.is_some())
}

/// Gives the lease up (on shutdown), so another worker need not wait it out.
pub async fn release(pool: &PgPool, name: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM worker_leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}
