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
    /// Why nothing is read for it (the park's failure class, else Finch's
    /// status) with the last error. Named apart from the row's own fields,
    /// which the flattened row would otherwise shadow.
    pub parked_why: Option<String>,
    /// When the worker parked it, or else when its status last changed.
    pub parked_since: Option<DateTime<Utc>>,
    /// Per product it holds: our last read and Finch's Finch-Data-Retrieved.
    pub freshness: Vec<ProductFreshness>,
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
            let freshness = row
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
                parked_why: parked.then(|| match &row.last_error {
                    Some(error) => format!("{}: {error}", row.parked_because()),
                    None => row.parked_because().to_owned(),
                }),
                parked_since: parked.then(|| row.parked_at.unwrap_or(row.updated_at)),
                freshness,
                recent_errors,
                connection: row,
            }
        })
        .collect())
}
