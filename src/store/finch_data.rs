//! The copy of Finch data that applications read, and the notifications
//! that announce its changes. Writes are idempotent upserts; a response that
//! is older than what a row holds (by `Finch-Data-Retrieved`, then by when
//! we fetched it) never overwrites it.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::finch::Product;

/// The mirror table of a product's data.
pub fn table(product: Product) -> &'static str {
    match product {
        Product::Company => "finch_company",
        Product::Directory => "finch_directory",
        Product::Individual => "finch_individuals",
        Product::Employment => "finch_employments",
        Product::Payment => "finch_payments",
        Product::PayStatement => "finch_pay_statements",
    }
}

/// The Finch id columns of a product's table, after `connection_id`.
pub fn key_columns(product: Product) -> &'static [&'static str] {
    match product {
        Product::Company => &[],
        Product::Directory | Product::Individual | Product::Employment => &["individual_id"],
        Product::Payment => &["payment_id"],
        Product::PayStatement => &["payment_id", "individual_id"],
    }
}

/// How `finch.synced` names a product (the routing key's first part and the
/// body's `resource`): Finch's own name for it, as in its permission scopes.
fn synced_name(product: Product) -> &'static str {
    product.permission()
}

/// One item as Finch returned it, with its ids in [`key_columns`] order.
#[derive(Debug, Clone)]
pub struct Item {
    pub ids: Vec<String>,
    pub data: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// Rows a commit changed, announced on `finch.synced`.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    entries: Vec<(Product, ChangeKind, Vec<String>)>,
}

impl Changes {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, product: Product, kind: ChangeKind, ids: Vec<String>) {
        self.entries.push((product, kind, ids));
    }

    /// The ids of one product's rows that changed in one way.
    pub fn ids(&self, product: Product, kind: ChangeKind) -> Vec<Vec<String>> {
        self.entries
            .iter()
            .filter(|(p, k, _)| *p == product && *k == kind)
            .map(|(_, _, ids)| ids.clone())
            .collect()
    }

    pub fn count(&self, kind: ChangeKind) -> usize {
        self.entries.iter().filter(|(_, k, _)| *k == kind).count()
    }
}

/// Which entity a read's rows belong to.
#[derive(Debug, Clone, Copy)]
pub struct Entity<'a> {
    /// Written on every row: the entity read, the connection's only one, or ''.
    pub stamp: &'a str,
    /// The entity the read named (multi-entity connections); deletions
    /// stay within it.
    pub only: Option<&'a str>,
}

/// When a response was produced, for ordering writes.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub data_retrieved_at: Option<DateTime<Utc>>,
    pub fetched_at: DateTime<Utc>,
}

/// Inserts or updates `items`, skipping rows that hold newer data, and
/// records which rows were created (or revived) and which changed.
pub async fn upsert(
    tx: &mut PgConnection,
    product: Product,
    connection_id: &str,
    entity: Entity<'_>,
    items: &[Item],
    freshness: Freshness,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    // ON CONFLICT cannot touch one row twice in a statement: last one wins.
    let mut unique: Vec<&Item> = Vec::with_capacity(items.len());
    {
        let mut seen = std::collections::HashMap::new();
        for item in items {
            match seen.get(&item.ids) {
                Some(&index) => unique[index] = item,
                None => {
                    seen.insert(item.ids.clone(), unique.len());
                    unique.push(item);
                }
            }
        }
    }
    if unique.is_empty() {
        return Ok(());
    }
    let keys = key_columns(product);
    let table = table(product);
    let n = keys.len();
    let key_params: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 2)).collect();
    let data_param = format!("${}::text[]", n + 2);
    let cols = keys.join(", ");
    let with_comma = |s: &str| {
        if s.is_empty() {
            String::new()
        } else {
            format!("{s}, ")
        }
    };
    // A company is one row per entity; every other row has its own Finch id.
    let per_entity = product == Product::Company;
    let entity_param = format!("${}", n + 5);
    let join = |a: &str, b: &str| {
        if keys.is_empty() {
            if a == "t" {
                format!("t.entity_id = {entity_param}")
            } else {
                "TRUE".to_owned()
            }
        } else {
            keys.iter()
                .map(|k| format!("{a}.{k} = {b}.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        }
    };
    let select_keys: String = keys.iter().map(|k| format!("up.{k}, ")).collect();
    let sql = format!(
        "WITH input AS (
             SELECT {cols_c}data::jsonb AS data
             FROM UNNEST({params_c}{data_param}) AS i({cols_c}data)
         ),
         old AS (
             SELECT t.* FROM {table} t JOIN input i ON {join_ti} WHERE t.connection_id = $1
         ),
         up AS (
             INSERT INTO {table} (connection_id, entity_id, {cols_c}data, data_retrieved_at, fetched_at, deleted_at)
             SELECT $1, {entity_param}, {cols_c}data, ${dr}, ${fa}, NULL FROM input
             ON CONFLICT (connection_id{conflict_entity}{comma_cols}) DO UPDATE SET
                 data = EXCLUDED.data,
                 entity_id = EXCLUDED.entity_id,
                 data_retrieved_at = EXCLUDED.data_retrieved_at,
                 fetched_at = EXCLUDED.fetched_at,
                 deleted_at = NULL
             WHERE (coalesce(EXCLUDED.data_retrieved_at, '-infinity'), EXCLUDED.fetched_at)
                >= (coalesce({table}.data_retrieved_at, '-infinity'), {table}.fetched_at)
             RETURNING {cols_c}data
         )
         SELECT {select_keys}
                CASE WHEN old.connection_id IS NULL OR old.deleted_at IS NOT NULL THEN 'created'
                     WHEN old.data IS DISTINCT FROM up.data THEN 'updated'
                     ELSE '' END AS change
         FROM up LEFT JOIN old ON {join_uo}",
        cols_c = with_comma(&cols),
        params_c = with_comma(&key_params.join(", ")),
        join_ti = join("t", "i"),
        join_uo = join("up", "old"),
        comma_cols = if cols.is_empty() { String::new() } else { format!(", {cols}") },
        conflict_entity = if per_entity { ", entity_id" } else { "" },
        dr = n + 3,
        fa = n + 4,
    );
    let mut query = sqlx::query(&sql).bind(connection_id);
    for k in 0..n {
        let column: Vec<&str> = unique.iter().map(|item| item.ids[k].as_str()).collect();
        query = query.bind(column);
    }
    let data: Vec<String> = unique.iter().map(|item| item.data.to_string()).collect();
    query = query
        .bind(data)
        .bind(freshness.data_retrieved_at)
        .bind(freshness.fetched_at)
        .bind(entity.stamp);
    let rows = query.fetch_all(&mut *tx).await?;
    let mut created = Vec::new();
    let mut updated = Vec::new();
    for row in rows {
        use sqlx::Row as _;
        let change: String = row.try_get("change").map_err(StoreError::from)?;
        let ids: Vec<String> = (0..n)
            .map(|k| row.try_get::<String, _>(k))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)?;
        match change.as_str() {
            "created" => created.push(ids),
            "updated" => updated.push(ids),
            _ => {}
        }
    }
    for ids in created {
        changes.push(product, ChangeKind::Created, ids);
    }
    for ids in updated {
        changes.push(product, ChangeKind::Updated, ids);
    }
    Ok(())
}

/// Rows of a product's table for the connection that Finch no longer returns.
#[derive(Debug, Clone)]
pub enum Scope {
    /// These exact rows (ids in key order), confirmed gone by a 404.
    Exactly(Vec<Vec<String>>),
    /// Every row of the table not in `present` (a full directory read).
    AllExcept { present: Vec<String> },
    /// Payments paid within the range not in `present`.
    PaidBetween {
        start: NaiveDate,
        end: NaiveDate,
        present: Vec<String>,
    },
    /// Pay statements of one payment whose individual is not in `present`.
    OfPayment {
        payment_id: String,
        present: Vec<String>,
    },
}

/// Sets `deleted_at` on rows Finch confirmed gone, unless a newer fetch
/// wrote them after this response was produced.
pub async fn mark_deleted(
    tx: &mut PgConnection,
    product: Product,
    connection_id: &str,
    entity: Option<&str>,
    scope: &Scope,
    freshness: Freshness,
    changes: &mut Changes,
) -> Result<(), StoreError> {
    let table = table(product);
    let keys = key_columns(product);
    let returning = if keys.is_empty() {
        "connection_id".to_owned()
    } else {
        keys.join(", ")
    };
    let base = format!(
        "UPDATE {table} SET deleted_at = now()
         WHERE connection_id = $1 AND deleted_at IS NULL AND fetched_at <= $2
           AND ($3::text IS NULL OR entity_id = $3)"
    );
    let query = match scope {
        Scope::Exactly(rows) => {
            if rows.is_empty() {
                return Ok(());
            }
            // Rows as JSON arrays of ids, matched against the key columns.
            let tuple = if keys.is_empty() {
                "TRUE".to_owned()
            } else {
                let columns: Vec<String> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{k} = (r->>{i})"))
                    .collect();
                columns.join(" AND ")
            };
            let sql = format!(
                "{base} AND EXISTS (SELECT 1 FROM jsonb_array_elements($4::jsonb) r WHERE {tuple})
                 RETURNING {returning}"
            );
            let rows = json!(rows).to_string();
            sqlx::query(&sql)
                .bind(connection_id)
                .bind(freshness.fetched_at)
                .bind(entity)
                .bind(rows)
                .fetch_all(&mut *tx)
                .await?
        }
        Scope::AllExcept { present } => {
            let sql = format!(
                "{base} AND NOT ({} = ANY($4)) RETURNING {returning}",
                keys[0]
            );
            sqlx::query(&sql)
                .bind(connection_id)
                .bind(freshness.fetched_at)
                .bind(entity)
                .bind(present)
                .fetch_all(&mut *tx)
                .await?
        }
        Scope::PaidBetween {
            start,
            end,
            present,
        } => {
            let sql = format!(
                "{base} AND NOT (payment_id = ANY($4))
                   AND (data->>'pay_date') >= $5 AND (data->>'pay_date') <= $6
                 RETURNING {returning}"
            );
            sqlx::query(&sql)
                .bind(connection_id)
                .bind(freshness.fetched_at)
                .bind(entity)
                .bind(present)
                .bind(start.to_string())
                .bind(end.to_string())
                .fetch_all(&mut *tx)
                .await?
        }
        Scope::OfPayment {
            payment_id,
            present,
        } => {
            let sql = format!(
                "{base} AND payment_id = $4 AND NOT (individual_id = ANY($5)) RETURNING {returning}"
            );
            sqlx::query(&sql)
                .bind(connection_id)
                .bind(freshness.fetched_at)
                .bind(entity)
                .bind(payment_id)
                .bind(present)
                .fetch_all(&mut *tx)
                .await?
        }
    };
    let mut deleted_payments = Vec::new();
    for row in query {
        use sqlx::Row as _;
        let ids: Vec<String> = (0..keys.len())
            .map(|k| row.try_get::<String, _>(k))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)?;
        if product == Product::Payment {
            deleted_payments.push(ids[0].clone());
        }
        changes.push(product, ChangeKind::Deleted, ids);
    }
    if !deleted_payments.is_empty() {
        // A payment's statements go with it.
        let statements: Vec<(String, String)> = sqlx::query_as(
            "UPDATE finch_pay_statements SET deleted_at = now()
             WHERE connection_id = $1 AND deleted_at IS NULL AND payment_id = ANY($2)
             RETURNING payment_id, individual_id",
        )
        .bind(connection_id)
        .bind(&deleted_payments)
        .fetch_all(&mut *tx)
        .await?;
        for (payment_id, individual_id) in statements {
            changes.push(
                Product::PayStatement,
                ChangeKind::Deleted,
                vec![payment_id, individual_id],
            );
        }
    }
    Ok(())
}

/// Payments of the connection paid within the range whose statements were
/// never stored: a sweep reads them even though the payment is unchanged.
pub async fn payments_without_statements(
    pool: &PgPool,
    connection_id: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT p.payment_id FROM finch_payments p
         WHERE p.connection_id = $1 AND p.deleted_at IS NULL
           AND (p.data->>'pay_date') >= $2 AND (p.data->>'pay_date') <= $3
           AND NOT EXISTS (SELECT 1 FROM finch_pay_statements s
                           WHERE s.connection_id = p.connection_id AND s.payment_id = p.payment_id)",
    )
    .bind(connection_id)
    .bind(start.to_string())
    .bind(end.to_string())
    .fetch_all(pool)
    .await?)
}

/// Most ids one notification names; larger changes are split.
const IDS_PER_NOTIFICATION: usize = 500;

/// A `finch.synced` message waiting in the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    pub routing_key: String,
    pub body: Value,
}

/// Writes the notifications for `changes` into the outbox, in the caller's
/// transaction, and returns their outbox ids.
pub async fn queue_notifications(
    tx: &mut PgConnection,
    connection_id: &str,
    changes: &Changes,
) -> Result<Vec<Notification>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let synced_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    type Group<'a> = ((Product, ChangeKind), Vec<&'a Vec<String>>);
    let mut grouped: Vec<Group<'_>> = Vec::new();
    for (product, kind, ids) in &changes.entries {
        match grouped
            .iter_mut()
            .find(|(key, _)| *key == (*product, *kind))
        {
            Some((_, list)) => list.push(ids),
            None => grouped.push(((*product, *kind), vec![ids])),
        }
    }
    let mut keys = Vec::new();
    let mut bodies = Vec::new();
    for ((product, kind), all_ids) in grouped {
        let resource = synced_name(product);
        for chunk in all_ids.chunks(IDS_PER_NOTIFICATION) {
            let ids: Vec<Value> = chunk
                .iter()
                .map(|ids| {
                    let mut object = serde_json::Map::new();
                    for (name, value) in key_columns(product).iter().zip(ids.iter()) {
                        object.insert((*name).to_owned(), json!(value));
                    }
                    Value::Object(object)
                })
                .collect();
            keys.push(format!("{resource}.{}", kind.as_str()));
            bodies.push(
                json!({
                    "connection_id": connection_id,
                    "resource": resource,
                    "change": kind.as_str(),
                    "ids": ids,
                    "synced_at": synced_at,
                })
                .to_string(),
            );
        }
    }
    let rows = sqlx::query_as(
        "INSERT INTO finch_sync_outbox (routing_key, body)
         SELECT key, body::jsonb FROM UNNEST($1::text[], $2::text[]) AS n(key, body)
         RETURNING id, routing_key, body",
    )
    .bind(keys)
    .bind(bodies)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

/// Writes one notification into the outbox, in the caller's transaction.
pub async fn queue_notification(
    tx: &mut PgConnection,
    routing_key: &str,
    body: &Value,
) -> Result<Notification, StoreError> {
    Ok(sqlx::query_as(
        "INSERT INTO finch_sync_outbox (routing_key, body) VALUES ($1, $2)
         RETURNING id, routing_key, body",
    )
    .bind(routing_key)
    .bind(body)
    .fetch_one(&mut *tx)
    .await?)
}

pub async fn delete_notifications(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM finch_sync_outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Notifications older than `min_age_secs` whose direct publish never
/// happened (a crash or broker outage after the commit).
pub async fn stale_notifications(
    pool: &PgPool,
    min_age_secs: f64,
    limit: i64,
) -> Result<Vec<Notification>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, routing_key, body FROM finch_sync_outbox
         WHERE created_at <= now() - make_interval(secs => $1)
         ORDER BY id LIMIT $2",
    )
    .bind(min_age_secs)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Records a job's result.
pub async fn record_job(
    pool: &PgPool,
    connection_id: &str,
    job_id: &str,
    kind: &str,
    data: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO finch_jobs (connection_id, job_id, kind, status, data, fetched_at)
         VALUES ($1, $2, $3, $4->>'status', $4, now())
         ON CONFLICT (connection_id, job_id) DO UPDATE SET
             kind = EXCLUDED.kind, status = EXCLUDED.status, data = EXCLUDED.data,
             fetched_at = EXCLUDED.fetched_at",
    )
    .bind(connection_id)
    .bind(job_id)
    .bind(kind)
    .bind(data)
    .execute(pool)
    .await?;
    Ok(())
}
