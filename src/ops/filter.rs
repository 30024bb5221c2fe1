//! Which dead letters an operation applies to.
//!
//! [`Filter`] is the one definition every front end reads: CLI flags (clap),
//! the admin API's query string and JSON bodies (serde) and its OpenAPI
//! document (utoipa) all derive from it, so they cannot disagree on a name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::dlq::DeadLetter;

/// Filters as an operator types them; every one given must match.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    clap::Args,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
// A misspelt filter must be refused, never ignored: it would widen a replay or purge.
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Event type, exactly (e.g. employment.updated).
    #[arg(long, value_name = "T")]
    pub event_type: Option<String>,
    /// Finch connection id.
    #[arg(long, value_name = "ID")]
    pub connection: Option<String>,
    /// Dead-letter reason (e.g. reauthenticate_user, unknown_connection, delivery_limit).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Dead-lettered at or after TIME: RFC 3339 (2026-05-01T12:00:00Z), or a duration ago such as 90m, 2h or 3days.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most N matching messages, oldest first.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid filter {field}: {reason}")]
pub struct FilterError {
    pub field: &'static str,
    pub reason: String,
}

/// A checked [`Filter`] with `since` fixed against the clock: what the
/// operations match messages with. The default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub event_type: Option<String>,
    pub connection: Option<String>,
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn resolve(&self, now: DateTime<Utc>) -> Result<Selection, FilterError> {
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
        Ok(Selection {
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

impl Selection {
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

    /// Whether `count` messages already reach the limit.
    pub fn limit_reached(&self, count: u64) -> bool {
        self.limit.is_some_and(|limit| count >= limit as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(since: &str) -> Filter {
        Filter {
            since: Some(since.into()),
            ..Filter::default()
        }
    }

    #[test]
    fn since_accepts_a_time_or_a_duration_ago() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let absolute = filter("2026-04-30T08:00:00+02:00").resolve(now).unwrap();
        assert_eq!(
            absolute.since.unwrap().to_rfc3339(),
            "2026-04-30T06:00:00+00:00"
        );
        let relative = filter("90m").resolve(now).unwrap();
        assert_eq!(
            relative.since.unwrap().to_rfc3339(),
            "2026-05-01T10:30:00+00:00"
        );
        assert_eq!(filter("yesterday").resolve(now).unwrap_err().field, "since");
    }

    #[test]
    fn zero_limit_is_refused_and_empty_strings_mean_no_filter() {
        let zero = Filter {
            limit: Some(0),
            ..Filter::default()
        };
        assert_eq!(zero.resolve(Utc::now()).unwrap_err().field, "limit");
        let blank = Filter {
            reason: Some(String::new()),
            ..Filter::default()
        };
        assert_eq!(blank.resolve(Utc::now()).unwrap(), Selection::default());
    }
}
