//! Consumes the work queue and keeps the Postgres copy of Finch data fresh.
