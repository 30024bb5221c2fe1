//! What finch-webhooks and the Finch emulator share: Finch's contract
//! (products, API version, webhook signatures), which one side calls and the
//! other stands in for, and how their processes are asked to stop.

mod product;
pub mod shutdown;
pub mod signature;

pub use product::Product;

/// The API version this client speaks.
pub const API_VERSION: &str = "2020-09-17";
