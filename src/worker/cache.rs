//! A short-lived cache of connections and their decrypted tokens, so that a
//! burst of 1,000 events for one employer reads its row once, not 1,000 times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::finch::token::KeyRing;
use crate::store::connections::{self, Connection, ConnectionError};

/// When a row was read, and the row.
type Entry = (Instant, Option<Arc<Connection>>);

pub struct ConnectionCache {
    pool: PgPool,
    key: KeyRing,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ConnectionCache {
    pub fn new(pool: PgPool, key: KeyRing, ttl: Duration) -> Self {
        Self {
            pool,
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(
        &self,
        connection_id: &str,
    ) -> Result<Option<Arc<Connection>>, ConnectionError> {
        if let Some((at, entry)) = self.entries.lock().expect("cache lock").get(connection_id) {
            if at.elapsed() < self.ttl {
                return Ok(entry.clone());
            }
        }
        let entry = connections::get(&self.pool, &self.key, connection_id)
            .await?
            .map(Arc::new);
        // Only rows are cached: a connection added by another process (the
        // `connections add` CLI) must be visible to the very next event.
        if entry.is_some() {
            self.entries
                .lock()
                .expect("cache lock")
                .insert(connection_id.to_owned(), (Instant::now(), entry.clone()));
        }
        Ok(entry)
    }

    /// Forgets a connection whose row this process just changed.
    pub fn invalidate(&self, connection_id: &str) {
        self.entries
            .lock()
            .expect("cache lock")
            .remove(connection_id);
    }
}
