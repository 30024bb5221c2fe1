//! Which dead letters an operation applies to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::message::DeadLetter;

/// Filters as typed by an operator (CLI flags, query string or JSON body),
/// before `since` is resolved against the clock.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only messages of this event type (exact match, e.g. `employment.updated`).
    pub event_type: Option<String>,
    /// Only messages of this Finch connection id.
    pub connection: Option<String>,
    /// Only messages dead-lettered for this reason (e.g. `reauthenticate_user`).
    pub reason: Option<String>,
    /// Only messages dead-lettered at or after this time: RFC 3339
    /// (`2026-05-01T12:00:00Z`) or a duration before now (`90m`, `2h`, `3days`).
    pub since: Option<String>,
    /// Act on (or list) at most this many matching messages, oldest first.
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid filter {field}: {reason}")]
pub struct FilterError {
    pub field: &'static str,
    pub reason: String,
}

/// A resolved filter: every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub event_type: Option<String>,
    pub connection: Option<String>,
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

impl FilterParams {
    pub fn resolve(&self, now: DateTime<Utc>) -> Result<Filter, FilterError> {
        let since = match self.since.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_since(text, now)?),
        };
        if self.limit == Some(0) {
            return Err(FilterError {
                field: "limit",
                reason: "must be at least 1".into(),
            });
        }
        let non_empty = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        Ok(Filter {
            event_type: non_empty(&self.event_type),
            connection: non_empty(&self.connection),
            reason: non_empty(&self.reason),
            since,
            limit: self.limit,
        })
    }
}

fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, FilterError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text).map_err(|_| FilterError {
        field: "since",
        reason: format!("{text:?} is neither an RFC 3339 time nor a duration such as 2h"),
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| FilterError {
        field: "since",
        reason: "duration too long".into(),
    })?;
    Ok(now - ago)
}

impl Filter {
    /// Whether `letter` satisfies every criterion (the limit is the caller's).
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let same = |wanted: &Option<String>, actual: Option<&str>| {
            wanted
                .as_deref()
                .is_none_or(|wanted| actual == Some(wanted))
        };
        same(&self.event_type, letter.event_type.as_deref())
            && same(&self.connection, letter.connection_id.as_deref())
            && same(&self.reason, Some(letter.reason.as_str()))
            // A message that does not say when it died cannot be shown to be recent.
            && self.since.is_none_or(|since| {
                letter
                    .dead_lettered_at
                    .or(letter.published_at)
                    .is_some_and(|at| at >= since)
            })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(since: &str) -> FilterParams {
        FilterParams {
            since: Some(since.into()),
            ..FilterParams::default()
        }
    }

    #[test]
    fn since_accepts_a_time_or_a_duration_ago() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let absolute = params("2026-04-30T08:00:00+02:00").resolve(now).unwrap();
        assert_eq!(
            absolute.since.unwrap().to_rfc3339(),
            "2026-04-30T06:00:00+00:00"
        );
        let relative = params("90m").resolve(now).unwrap();
        assert_eq!(
            relative.since.unwrap().to_rfc3339(),
            "2026-05-01T10:30:00+00:00"
        );
        assert_eq!(params("yesterday").resolve(now).unwrap_err().field, "since");
    }

    #[test]
    fn zero_limit_is_refused_and_empty_strings_mean_no_filter() {
        let zero = FilterParams {
            limit: Some(0),
            ..FilterParams::default()
        };
        assert_eq!(zero.resolve(Utc::now()).unwrap_err().field, "limit");
        let blank = FilterParams {
            reason: Some(String::new()),
            ..FilterParams::default()
        };
        assert!(blank.resolve(Utc::now()).unwrap().is_empty());
    }
}
