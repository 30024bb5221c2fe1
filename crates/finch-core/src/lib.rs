//! The Finch contract that both sides of it share: the service that calls
//! Finch and receives its webhooks, and the emulator that stands in for Finch.

mod product;
pub mod signature;

pub use product::Product;

/// The API version this client speaks.
pub const API_VERSION: &str = "2020-09-17";
