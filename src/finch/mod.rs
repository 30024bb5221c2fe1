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

/// Which failure a request met, finer than [`ErrorClass`]: each class has
/// its own retry horizon and scope (the table in `worker::horizon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// 202 for a whole request: the connection's first sync has not finished
    /// (Finch allows up to 14 days for an assisted one).
    Pending,
    /// 202 `data_sync_in_progress` for one payment's statements: Finch is
    /// still fetching them, usually for minutes.
    NotReady,
    /// 429 `finch_application_rl`: the application's limit for one product.
    ApplicationRateLimit,
    /// 429 `finch_api_ip_rl`: an IP penalty covering every product.
    IpRateLimit,
    /// 429 `upstream_rate_limit_exceeded`: the provider's limit for one connection.
    UpstreamRateLimit,
    /// 5xx, 408, timeouts, connection failures and unreadable answers.
    ServerError,
    /// 401 `reauthenticate_user`: the employer must reconnect.
    Reauthenticate,
    /// `account_setup_required`: the employer has not finished connecting.
    AccountSetupRequired,
    /// 403 `insufficient_account_permissions`: the admin account lacks rights.
    InsufficientPermissions,
    /// Any other 4xx: retrying cannot help.
    Client,
}

impl FailureClass {
    /// How logs, status and `finch.synced` name the class.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Pending => "pending",
            FailureClass::NotReady => "not_ready",
            FailureClass::ApplicationRateLimit => "finch_application_rl",
            FailureClass::IpRateLimit => "finch_api_ip_rl",
            FailureClass::UpstreamRateLimit => "upstream_rate_limit_exceeded",
            FailureClass::ServerError => "server_error",
            FailureClass::Reauthenticate => "reauthenticate_user",
            FailureClass::AccountSetupRequired => "account_setup_required",
            FailureClass::InsufficientPermissions => "insufficient_account_permissions",
            FailureClass::Client => "client_error",
        }
    }
}
