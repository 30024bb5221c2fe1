//! Every mirror table against what the emulator serves, row by row.

use std::collections::{BTreeMap, HashMap};

use finch_emulator::{ConnectionKind, EntitySnapshot, RunningEmulator};
use serde_json::Value;
use sqlx::PgPool;

/// Rows that differ per table: missing from the copy, left in it, or unequal.
#[derive(Debug, Default)]
pub struct MirrorDiff {
    pub by_table: BTreeMap<&'static str, u64>,
    /// A few differing rows, to start a diagnosis from.
    pub examples: Vec<String>,
}

impl MirrorDiff {
    pub fn rows(&self) -> u64 {
        self.by_table.values().sum()
    }

    fn count(&mut self, table: &'static str, connection_id: &str, key: &str, what: &str) {
        *self.by_table.entry(table).or_default() += 1;
        if self.examples.len() < 10 {
            self.examples
                .push(format!("{table} {connection_id} {key}: {what}"));
        }
    }
}

struct Table {
    name: &'static str,
    /// Key columns besides `connection_id`, joined with `/` into one key.
    key: &'static str,
}

const TABLES: [Table; 6] = [
    Table {
        name: "finch_company",
        key: "''",
    },
    Table {
        name: "finch_directory",
        key: "individual_id",
    },
    Table {
        name: "finch_individuals",
        key: "individual_id",
    },
    Table {
        name: "finch_employments",
        key: "individual_id",
    },
    Table {
        name: "finch_payments",
        key: "payment_id",
    },
    Table {
        name: "finch_pay_statements",
        key: "payment_id || '/' || individual_id",
    },
];

/// What one entity should hold, table by table, keyed as `TABLES` key them.
fn expected(entity: &EntitySnapshot) -> [HashMap<String, Value>; 6] {
    let by = |items: &[Value], field: &str| -> HashMap<String, Value> {
        items
            .iter()
            .map(|item| {
                (
                    item[field].as_str().unwrap_or_default().to_owned(),
                    item.clone(),
                )
            })
            .collect()
    };
    let statements = entity
        .pay_statements
        .iter()
        .flat_map(|(payment_id, list)| {
            list.iter().map(move |statement| {
                let individual = statement["individual_id"].as_str().unwrap_or_default();
                (format!("{payment_id}/{individual}"), statement.clone())
            })
        })
        .collect();
    [
        HashMap::from([(String::new(), entity.company.clone())]),
        by(&entity.directory, "id"),
        by(&entity.individuals, "id"),
        by(&entity.employments, "id"),
        by(&entity.payments, "id"),
        statements,
    ]
}

pub async fn mirror_against_emulator(
    pool: &PgPool,
    emulator: &RunningEmulator,
    kinds: &HashMap<String, ConnectionKind>,
) -> anyhow::Result<MirrorDiff> {
    let mut diff = MirrorDiff::default();
    let mut ids: Vec<&String> = kinds.keys().collect();
    ids.sort();
    for connection_id in ids {
        let snapshot = emulator.snapshot(connection_id)?;
        let multi_entity = snapshot.entities.len() > 1;
        let mut wanted: Vec<HashMap<String, Value>> = vec![HashMap::new(); TABLES.len()];
        for entity in &snapshot.entities {
            for (index, rows) in expected(entity).into_iter().enumerate() {
                let prefix = if multi_entity {
                    format!("{}#", entity.entity_id)
                } else {
                    String::new()
                };
                wanted[index].extend(rows.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
            }
        }
        for (table, mut want) in TABLES.iter().zip(wanted) {
            let key = if multi_entity {
                format!("entity_id || '#' || {}", table.key)
            } else {
                table.key.to_owned()
            };
            let stored: Vec<(String, Value)> = sqlx::query_as(&format!(
                "SELECT {key}, data FROM {} WHERE connection_id = $1 AND deleted_at IS NULL",
                table.name
            ))
            .bind(connection_id)
            .fetch_all(pool)
            .await?;
            for (key, data) in stored {
                match want.remove(&key) {
                    Some(expected) if expected == data => {}
                    Some(_) => diff.count(table.name, connection_id, &key, "differs"),
                    None => diff.count(table.name, connection_id, &key, "not at Finch"),
                }
            }
            for key in want.keys() {
                diff.count(table.name, connection_id, key, "missing from the copy");
            }
        }
    }
    Ok(diff)
}
