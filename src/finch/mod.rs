//! Client for the Finch API: every request carries `Finch-API-Version`, every
//! response's `Finch-Request-Id` is logged and kept with errors, and errors
//! are sorted into what the worker does about them.

pub mod client;
pub mod token;

pub use client::{FinchClient, FinchError, FinchResponse, Introspection};

pub use finch_core::{Product, API_VERSION};

/// What the worker does about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 202, 408, 429, 5xx, timeouts, connection failures: try again later.
    Retry,
    /// 401 `reauthenticate_user`: the employer must reconnect.
    Reauthenticate,
    /// Any other 4xx: retrying cannot help.
    Client,
}
