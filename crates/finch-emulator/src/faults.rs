//! Failures injected for a Finch-time window and a scope, answered with the
//! status codes and bodies Finch's error table gives.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use finch_core::Product;
use serde::{Deserialize, Serialize};

use super::clock::span;
use super::error::ApiError;

/// Which requests a fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum FaultScope {
    /// One product, for every connection of the application.
    #[serde(with = "product_name")]
    Product(Product),
    /// Every product of every connection.
    Application,
    /// Every product of one connection (its id).
    Connection(String),
}

/// What the hit requests are answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 `finch_application_rl`.
    ApplicationRateLimit,
    /// 429 `finch_api_ip_rl`.
    IpRateLimit,
    /// 429 `upstream_rate_limit_exceeded`.
    UpstreamRateLimit,
    /// 500 `server_error`.
    ServerError,
    /// 502 `upstream_provider_error`.
    BadGateway,
    /// 401 `reauthenticate_user`.
    Reauthenticate,
    /// 401 `account_setup_required` (the status Finch's error table gives).
    AccountSetupRequired,
    /// 403 `insufficient_account_permissions`.
    InsufficientPermissions,
    /// Not an error: directory pages after the first come back empty while
    /// `paging.count` still counts everyone, as when a provider's listing
    /// ends early.
    DirectoryEndsEarly,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub scope: FaultScope,
    pub kind: FaultKind,
    /// Finch time from which it applies.
    pub from: DateTime<Utc>,
    /// Finch time at which it stops; 429s say so in `Retry-After`.
    pub until: DateTime<Utc>,
}

impl Fault {
    fn hits(&self, now: DateTime<Utc>, product: Product, connection_id: &str) -> bool {
        now >= self.from
            && now < self.until
            && match &self.scope {
                FaultScope::Product(p) => *p == product,
                FaultScope::Application => true,
                FaultScope::Connection(id) => id == connection_id,
            }
    }
}

#[derive(Debug, Default)]
pub struct FaultBook {
    faults: Mutex<Vec<Fault>>,
}

impl FaultBook {
    pub fn add(&self, scope: FaultScope, kind: FaultKind, from: DateTime<Utc>, lasting: Duration) {
        self.faults.lock().expect("fault lock").push(Fault {
            scope,
            kind,
            from,
            until: from + span(lasting),
        });
    }

    pub fn clear(&self) {
        self.faults.lock().expect("fault lock").clear();
    }

    pub fn list(&self) -> Vec<Fault> {
        self.faults.lock().expect("fault lock").clone()
    }

    /// The first failing fault that hits this request, with its error.
    pub fn hit(
        &self,
        now: DateTime<Utc>,
        product: Product,
        connection_id: &str,
    ) -> Option<(FaultKind, DateTime<Utc>)> {
        let mut faults = self.faults.lock().expect("fault lock");
        faults.retain(|f| f.until > now);
        faults
            .iter()
            .find(|f| f.kind.fails() && f.hits(now, product, connection_id))
            .map(|f| (f.kind, f.until))
    }

    /// Whether a fault of this kind hits this request.
    pub fn shapes(
        &self,
        now: DateTime<Utc>,
        product: Product,
        connection_id: &str,
        kind: FaultKind,
    ) -> bool {
        self.faults
            .lock()
            .expect("fault lock")
            .iter()
            .any(|f| f.kind == kind && f.hits(now, product, connection_id))
    }
}

impl FaultKind {
    /// Whether the hit request is refused, rather than answered oddly.
    fn fails(self) -> bool {
        !matches!(self, FaultKind::DirectoryEndsEarly)
    }

    /// The error Finch answers with, `None` for a fault that answers 200
    /// oddly instead; 429s carry their `Retry-After` (Finch seconds).
    pub fn error(self, retry_after: Duration) -> Option<ApiError> {
        Some(match self {
            FaultKind::ApplicationRateLimit => {
                ApiError::rate_limited("finch_application_rl", retry_after)
            }
            FaultKind::IpRateLimit => ApiError::rate_limited("finch_api_ip_rl", retry_after),
            FaultKind::UpstreamRateLimit => {
                ApiError::rate_limited("upstream_rate_limit_exceeded", retry_after)
            }
            FaultKind::ServerError => ApiError::server_error(),
            FaultKind::BadGateway => ApiError::upstream(),
            FaultKind::Reauthenticate => ApiError::reauthenticate(),
            FaultKind::AccountSetupRequired => ApiError::account_setup_required(),
            FaultKind::InsufficientPermissions => ApiError::permissions(),
            FaultKind::DirectoryEndsEarly => return None,
        })
    }
}

/// A product in JSON by Finch's name for it (`pay-statement`) or its
/// permission (`pay_statement`).
pub mod product_name {
    use finch_core::Product;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(product: &Product, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(product.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Product, D::Error> {
        let name = String::deserialize(d)?;
        parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown product `{name}`")))
    }

    pub fn parse(name: &str) -> Option<Product> {
        Product::ALL
            .into_iter()
            .find(|p| p.as_str() == name || p.permission() == name)
    }
}
