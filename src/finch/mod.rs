//! Client for the Finch API: every request carries `Finch-API-Version`, every
//! response's `Finch-Request-Id` is logged and kept with errors, and errors
//! are sorted into what the worker does about them.

pub mod client;
pub mod token;

pub use client::{FinchClient, FinchError, FinchResponse, Introspection};

/// The API version this client speaks.
pub const API_VERSION: &str = "2020-09-17";

/// A Finch data endpoint: the unit of Finch's application rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    Company,
    Directory,
    Individual,
    Employment,
    Payment,
    PayStatement,
}

impl Product {
    pub const ALL: [Product; 6] = [
        Product::Company,
        Product::Directory,
        Product::Individual,
        Product::Employment,
        Product::Payment,
        Product::PayStatement,
    ];

    /// The name Finch's rate-limit table uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Company => "company",
            Product::Directory => "directory",
            Product::Individual => "individual",
            Product::Employment => "employment",
            Product::Payment => "payment",
            Product::PayStatement => "pay-statement",
        }
    }

    /// The permission (product scope) a connection needs for it.
    pub fn permission(self) -> &'static str {
        match self {
            Product::PayStatement => "pay_statement",
            other => other.as_str(),
        }
    }
}

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
