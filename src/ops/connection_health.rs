//! Each connection with what an operator needs to judge it: its status and
//! why it is parked, how fresh each product's data is, and its latest
//! failures.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::OpsError;
use crate::store::connections::{self, ConnectionRow};
use crate::store::console::{self, ProductFreshness, RecentError};

/// Failures shown per connection.
const RECENT_ERRORS: i64 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionHealth {
    #[serde(flatten)]
    pub connection: ConnectionRow,
    pub parked: bool,
    /// Why Finch serves no data for it (its status and the last error).
    pub parked_reason: Option<String>,
    /// When its status last changed (the row's last update).
    pub parked_since: Option<DateTime<Utc>>,
    /// Per product it holds: our last read and Finch's Finch-Data-Retrieved.
    pub products: Vec<ProductFreshness>,
    pub recent_errors: Vec<RecentError>,
}

/// Every connection, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ConnectionHealth>, OpsError> {
    let rows = connections::list(pool).await?;
    let freshness = console::product_freshness(pool).await?;
    let errors = console::recent_errors(pool, RECENT_ERRORS).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let parked = row.is_parked();
            let products = row
                .products
                .iter()
                .filter(|product| finch_core::Product::from_permission(product).is_some())
                .map(|product| {
                    freshness
                        .iter()
                        .find(|fresh| {
                            fresh.connection_id == row.connection_id && &fresh.product == product
                        })
                        .cloned()
                        .unwrap_or_else(|| ProductFreshness {
                            connection_id: row.connection_id.clone(),
                            product: product.clone(),
                            last_read_at: None,
                            data_retrieved_at: None,
                        })
                })
                .collect();
            let recent_errors = errors
                .iter()
                .filter(|error| error.connection_id == row.connection_id)
                .cloned()
                .collect();
            ConnectionHealth {
                parked,
                parked_reason: parked.then(|| match &row.last_error {
                    Some(error) => format!("{}: {error}", row.status),
                    None => row.status.clone(),
                }),
                parked_since: parked.then_some(row.updated_at),
                products,
                recent_errors,
                connection: row,
            }
        })
        .collect())
}
