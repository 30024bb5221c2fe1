//! What finch-webhooks and the Finch emulator share: Finch's contract
//! (products, API version, webhook signatures), which one side calls and the
//! other stands in for, and how their processes are asked to stop.

mod product;
pub mod shutdown;
pub mod signature;

pub use product::Product;

/// The `Finch-API-Version` the client sends, and the version of the API the emulator stands in for.
pub const API_VERSION: &str = "2020-09-17";
