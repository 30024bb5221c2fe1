//! The change log: every item that changed at Finch (became visible through
//! `/employer/*`), when, and whether a webhook announced it. Benchmarks
//! measure staleness from it; tests find what only a sweep can repair.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One item of one product that changed at Finch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Position in the log, from 1, for reading it in parts (`since`).
    pub seq: u64,
    /// Finch time the change became visible through `/employer/*`.
    pub at: DateTime<Utc>,
    pub connection_id: String,
    /// The entity the item belongs to (the first one for company changes).
    pub entity_id: String,
    /// Finch's product name: `company`, `directory`, `individual`,
    /// `employment`, `payment`, `pay-statement`.
    pub product: String,
    /// Individual id, payment id (also for `pay-statement`: the statements
    /// of that payment), or the company id.
    pub item_id: String,
    /// `created`, `updated` or `deleted`.
    pub action: String,
    /// Whether a webhook about it was sent; false for assisted connections,
    /// lost webhooks and reconnects that changed ids.
    pub announced: bool,
}

#[derive(Debug, Default)]
pub struct ChangeLog {
    records: Mutex<Vec<ChangeRecord>>,
}

impl ChangeLog {
    /// Appends, numbering each record.
    pub fn extend(&self, records: impl IntoIterator<Item = ChangeRecord>) {
        let mut log = self.records.lock().expect("change log lock");
        for mut record in records {
            record.seq = log.len() as u64 + 1;
            log.push(record);
        }
    }

    /// Records after `seq` (all of them for 0).
    pub fn since(&self, seq: u64) -> Vec<ChangeRecord> {
        let log = self.records.lock().expect("change log lock");
        let from = usize::try_from(seq).unwrap_or(usize::MAX).min(log.len());
        log[from..].to_vec()
    }
}
