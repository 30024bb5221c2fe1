//! The retry horizon of each failure class, in one table: what a failed
//! Finch request changes, for how long, and over what scope. Everything
//! else in the worker asks [`rule`]; `docs/operations.md` shows the same
//! table to operators.
//!
//! | class | scope | what happens | horizon |
//! |---|---|---|---|
//! | 202 `pending` (first sync) | connection | parked, tried again after `pending_backoff`, doubling up to `park_backoff_max`; events are acknowledged (the resuming sweep reads everything) | `pending_horizon` (14 days), then parked until a reconnect or `connections resync`; never the DLQ |
//! | 202 `data_sync_in_progress` (one payment) | the message | retry queues | `worker_max_attempts` |
//! | 429 `finch_application_rl` | one product, every worker | work waits in memory (no retry queue, no attempt) while the product is paused for `Retry-After` (at least `rate_limit_pause_secs`) | none: it waits |
//! | 429 `finch_api_ip_rl` | every product, every worker | as above, every product paused for `Retry-After` (else `ip_pause`) | none: it waits |
//! | 429 `upstream_rate_limit_exceeded` | one connection | as above, the connection paused for `Retry-After` (else `upstream_pause`) | none: it waits |
//! | 5xx, 408, timeouts | the message, then the connection | `server_error_retries` retry-queue attempts, then parked with `server_error_backoff` doubling | `server_error_horizon` (3 days), then parked until an operator resumes it |
//! | 401 `reauthenticate_user` | connection | parked as `reauth`, the event dead-lettered (`reauthenticate_user`) for replay | until the employer reconnects |
//! | `account_setup_required` | connection | parked as `error_no_account_setup`; events acknowledged | until `account.updated` says connected |
//! | 403 `insufficient_account_permissions` | connection | parked as `error_permissions`; events acknowledged | until `account.updated` says connected |
//! | other 4xx | the message | dead-lettered (`finch_client_error`) | none |

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{FleetConfig, WorkerConfig};
use crate::finch::FailureClass;
use crate::queue::contract::reasons;

/// Who a failure holds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One product, application-wide.
    Product,
    /// Every product, application-wide.
    Everything,
    /// One connection.
    Connection,
}

/// What the worker does about a failure class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The message goes through the retry queues.
    Retry,
    /// The work waits in memory while the scope is paused for `Retry-After`
    /// (or `default_pause`): no retry queue, no attempt counted.
    Pause {
        scope: Scope,
        default_pause: Duration,
    },
    /// After `retries` retry-queue attempts, the connection is parked.
    RetryThenPark { retries: u32, park: Parking },
    /// The connection is parked at once.
    Park(Parking),
    /// The message is dead-lettered.
    DeadLetter(&'static str),
}

/// How a connection is parked for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parking {
    /// The status Finch would report, for the classes that mirror one.
    pub status: Option<&'static str>,
    /// First wait before trying again (doubling); `None`: never by itself.
    pub backoff: Option<Duration>,
    /// How long the series may last before it waits for an operator.
    pub horizon: Option<Duration>,
    /// Dead-letter the waiting events (with this reason) rather than
    /// acknowledge them, for replay once the employer acts.
    pub dead_letter: Option<&'static str>,
}

/// The table above, with the configured durations.
pub fn rule(class: FailureClass, config: &WorkerConfig) -> Rule {
    let fleet: &FleetConfig = &config.fleet;
    let waits_for_employer = |status| Parking {
        status: Some(status),
        backoff: None,
        horizon: None,
        dead_letter: None,
    };
    match class {
        FailureClass::Pending => Rule::Park(Parking {
            status: None,
            backoff: Some(fleet.pending_backoff),
            horizon: Some(fleet.pending_horizon),
            dead_letter: None,
        }),
        FailureClass::NotReady => Rule::Retry,
        FailureClass::ApplicationRateLimit => Rule::Pause {
            scope: Scope::Product,
            default_pause: config.rate_limits.pause,
        },
        FailureClass::IpRateLimit => Rule::Pause {
            scope: Scope::Everything,
            default_pause: fleet.ip_pause,
        },
        FailureClass::UpstreamRateLimit => Rule::Pause {
            scope: Scope::Connection,
            default_pause: fleet.upstream_pause,
        },
        FailureClass::ServerError => Rule::RetryThenPark {
            retries: fleet.server_error_retries,
            park: Parking {
                status: None,
                backoff: Some(fleet.server_error_backoff),
                horizon: Some(fleet.server_error_horizon),
                dead_letter: None,
            },
        },
        FailureClass::Reauthenticate => Rule::Park(Parking {
            dead_letter: Some(reasons::REAUTHENTICATE_USER),
            ..waits_for_employer("reauth")
        }),
        FailureClass::AccountSetupRequired => {
            Rule::Park(waits_for_employer("error_no_account_setup"))
        }
        FailureClass::InsufficientPermissions => {
            Rule::Park(waits_for_employer("error_permissions"))
        }
        FailureClass::Client => Rule::DeadLetter(reasons::FINCH_CLIENT_ERROR),
    }
}

/// When a connection parked for the `count`-th time in a series that began
/// at `since` is tried again: the backoff doubles up to `max`; past the
/// horizon, never by itself (`None`).
pub fn resume_at(
    parking: &Parking,
    count: u32,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    max: Duration,
) -> Option<DateTime<Utc>> {
    let first = parking.backoff?;
    let factor = 2u32.saturating_pow(count.saturating_sub(1).min(20));
    let wait = first.saturating_mul(factor).min(max.max(first));
    let at = now + chrono::Duration::from_std(wait).ok()?;
    match parking.horizon {
        Some(horizon) if at > since + chrono::Duration::from_std(horizon).ok()? => None,
        _ => Some(at),
    }
}

/// The pause a 429 asks for: Finch's `Retry-After`, but never less than
/// the class's default when Finch gives none.
pub fn pause_for(retry_after: Option<Duration>, default_pause: Duration) -> Duration {
    retry_after.unwrap_or(default_pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parking(backoff: u64, horizon: u64) -> Parking {
        Parking {
            status: None,
            backoff: Some(Duration::from_secs(backoff)),
            horizon: Some(Duration::from_secs(horizon)),
            dead_letter: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_stops_at_the_horizon() {
        let since = Utc::now();
        let park = parking(600, 14 * 86_400);
        let max = Duration::from_secs(6 * 3600);
        let wait = |count, now: DateTime<Utc>| {
            resume_at(&park, count, since, now, max).map(|at| (at - now).num_seconds())
        };
        assert_eq!(wait(1, since), Some(600));
        assert_eq!(wait(2, since), Some(1200));
        assert_eq!(wait(3, since), Some(2400));
        assert_eq!(wait(10, since), Some(6 * 3600));
        let late = since + chrono::Duration::days(14) - chrono::Duration::hours(1);
        assert_eq!(
            wait(40, late),
            None,
            "past 14 days it waits for an operator"
        );
        let never = Parking {
            backoff: None,
            ..park
        };
        assert_eq!(resume_at(&never, 1, since, since, max), None);
    }

    #[test]
    fn every_class_has_its_rule() {
        use crate::config::Settings;
        let config = Settings::with_overrides(&[(
            "finch_token_key",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )])
        .unwrap()
        .worker()
        .unwrap();
        let rule = |class| rule(class, &config);
        assert!(matches!(
            rule(FailureClass::Pending),
            Rule::Park(Parking { horizon: Some(h), dead_letter: None, .. }) if h == Duration::from_secs(14 * 86_400)
        ));
        assert!(matches!(
            rule(FailureClass::IpRateLimit),
            Rule::Pause { scope: Scope::Everything, default_pause } if default_pause == Duration::from_secs(3600)
        ));
        assert!(matches!(
            rule(FailureClass::UpstreamRateLimit),
            Rule::Pause {
                scope: Scope::Connection,
                ..
            }
        ));
        assert!(matches!(
            rule(FailureClass::ApplicationRateLimit),
            Rule::Pause {
                scope: Scope::Product,
                ..
            }
        ));
        assert!(matches!(
            rule(FailureClass::ServerError),
            Rule::RetryThenPark { retries: 3, park: Parking { horizon: Some(h), .. } } if h == Duration::from_secs(3 * 86_400)
        ));
        for (class, status) in [
            (FailureClass::Reauthenticate, "reauth"),
            (FailureClass::AccountSetupRequired, "error_no_account_setup"),
            (FailureClass::InsufficientPermissions, "error_permissions"),
        ] {
            assert!(
                matches!(rule(class), Rule::Park(Parking { status: Some(s), backoff: None, .. }) if s == status),
                "{class:?}"
            );
        }
        assert_eq!(rule(FailureClass::NotReady), Rule::Retry);
        assert!(matches!(rule(FailureClass::Client), Rule::DeadLetter(_)));
    }
}
