//! Watermarks: per connection and product, what was last read successfully
//! (and how fresh Finch's copy was), what last failed, and for payments the
//! pay date up to which every payment has been read.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::finch::Product;

/// One product's watermark, as status shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Watermark {
    pub product: String,
    /// When a read of this product last committed.
    pub last_success_at: Option<DateTime<Utc>>,
    /// `Finch-Data-Retrieved` of that read.
    pub data_retrieved_at: Option<DateTime<Utc>>,
    /// Payments: every pay date up to here has been read.
    pub read_through: Option<NaiveDate>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Records a committed read, in the commit's transaction. `read_through`
/// moves only forward.
pub async fn record_success(
    tx: &mut PgConnection,
    connection_id: &str,
    product: Product,
    data_retrieved_at: Option<DateTime<Utc>>,
    read_through: Option<NaiveDate>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO finch_watermarks (connection_id, product, last_success_at, data_retrieved_at, read_through)
         VALUES ($1, $2, now(), $3, $4)
         ON CONFLICT (connection_id, product) DO UPDATE SET
             last_success_at = now(),
             data_retrieved_at = greatest(finch_watermarks.data_retrieved_at, EXCLUDED.data_retrieved_at),
             read_through = greatest(finch_watermarks.read_through, EXCLUDED.read_through)",
    )
    .bind(connection_id)
    .bind(product.as_str())
    .bind(data_retrieved_at)
    .bind(read_through)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records a failed read.
pub async fn record_error(
    pool: &PgPool,
    connection_id: &str,
    product: Product,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO finch_watermarks (connection_id, product, last_error, last_error_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (connection_id, product) DO UPDATE SET
             last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at",
    )
    .bind(connection_id)
    .bind(product.as_str())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// The pay date up to which every payment has been read; `None` before a
/// complete read.
pub async fn payments_read_through(
    pool: &PgPool,
    connection_id: &str,
) -> Result<Option<NaiveDate>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT read_through FROM finch_watermarks WHERE connection_id = $1 AND product = $2",
    )
    .bind(connection_id)
    .bind(Product::Payment.as_str())
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// Every watermark of the given connections, in one query.
pub async fn of_connections(
    pool: &PgPool,
    connection_ids: &[String],
) -> Result<Vec<(String, Watermark)>, StoreError> {
    let rows: Vec<WatermarkOf> = sqlx::query_as(
        "SELECT connection_id, product, last_success_at, data_retrieved_at, read_through,
                last_error, last_error_at
         FROM finch_watermarks WHERE connection_id = ANY($1) ORDER BY connection_id, product",
    )
    .bind(connection_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.connection_id, row.mark))
        .collect())
}

#[derive(sqlx::FromRow)]
struct WatermarkOf {
    connection_id: String,
    #[sqlx(flatten)]
    mark: Watermark,
}

/// Every product's watermark of a connection.
pub async fn of_connection(
    pool: &PgPool,
    connection_id: &str,
) -> Result<Vec<Watermark>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT product, last_success_at, data_retrieved_at, read_through, last_error, last_error_at
         FROM finch_watermarks WHERE connection_id = $1 ORDER BY product",
    )
    .bind(connection_id)
    .fetch_all(pool)
    .await?)
}
