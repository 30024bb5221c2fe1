//! What a connection added at run time looks like: how Finch reaches the
//! provider, its size, its entities and its payroll calendar.

use std::time::Duration;

use chrono::{Datelike, Duration as Days, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

/// How Finch reaches the provider, which decides its refresh cadence and
/// whether data changes are announced by webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    /// Synced every 24 h; item webhooks and `job.data_sync_all.completed`.
    Automated,
    /// Refreshed every 7 days by Finch's team; no data webhooks.
    Assisted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayFrequency {
    Weekly,
    BiWeekly,
    SemiMonthly,
    Monthly,
}

impl PayFrequency {
    pub const ALL: [PayFrequency; 4] = [
        PayFrequency::Weekly,
        PayFrequency::BiWeekly,
        PayFrequency::SemiMonthly,
        PayFrequency::Monthly,
    ];

    /// The value of a payment's `pay_frequencies`, as the SDK's enum spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PayFrequency::Weekly => "weekly",
            PayFrequency::BiWeekly => "bi_weekly",
            PayFrequency::SemiMonthly => "semi_monthly",
            PayFrequency::Monthly => "monthly",
        }
    }

    pub fn periods_per_year(self) -> i64 {
        match self {
            PayFrequency::Weekly => 52,
            PayFrequency::BiWeekly => 26,
            PayFrequency::SemiMonthly => 24,
            PayFrequency::Monthly => 12,
        }
    }

    /// Every pay run from `since` through `until`. `stagger` spreads
    /// employers of the same frequency over the week (weekly: which weekday;
    /// bi-weekly: weekday and which of the two weeks), as real fleets are.
    /// Semi-monthly (15th and month end) and monthly (month end) runs fall
    /// on the same days for everyone, which is where Finch's peaks come from.
    pub fn pay_runs(self, stagger: u32, since: NaiveDate, until: NaiveDate) -> Vec<PayRun> {
        let mut runs = Vec::new();
        match self {
            PayFrequency::Weekly | PayFrequency::BiWeekly => {
                let step = if self == PayFrequency::Weekly { 7 } else { 14 };
                // Fridays mostly, some Thursdays and Wednesdays.
                let weekday_back = [0, 0, 0, 1, 2][(stagger % 5) as usize];
                let parity = if step == 14 {
                    i64::from((stagger / 5) % 2) * 7
                } else {
                    0
                };
                let anchor = NaiveDate::from_ymd_opt(2020, 1, 3).expect("a Friday")
                    - Days::days(weekday_back)
                    + Days::days(parity);
                let offset = (since - anchor).num_days().rem_euclid(step);
                let mut pay_date = if offset == 0 {
                    since
                } else {
                    since + Days::days(step - offset)
                };
                while pay_date <= until {
                    let end = pay_date - Days::days(5);
                    runs.push(PayRun {
                        start: end - Days::days(step - 1),
                        end,
                        pay_date,
                        frequency: self,
                    });
                    pay_date += Days::days(step);
                }
            }
            PayFrequency::SemiMonthly | PayFrequency::Monthly => {
                let mut month = NaiveDate::from_ymd_opt(since.year(), since.month(), 1)
                    .expect("first of a month");
                while month <= until {
                    let last = last_of_month(month);
                    let mut dates = Vec::new();
                    if self == PayFrequency::SemiMonthly {
                        dates.push((month, month.with_day(15).expect("the 15th")));
                        dates.push((month.with_day(16).expect("the 16th"), last));
                    } else {
                        dates.push((month, last));
                    }
                    for (start, end) in dates {
                        let pay_date = business_day_on_or_before(end);
                        if pay_date >= since && pay_date <= until {
                            runs.push(PayRun {
                                start,
                                end,
                                pay_date,
                                frequency: self,
                            });
                        }
                    }
                    month = last + Days::days(1);
                }
            }
        }
        runs
    }
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.expect("valid month") - Days::days(1)
}

/// Payroll is not paid on weekends: a period ending on one is paid the Friday before.
fn business_day_on_or_before(day: NaiveDate) -> NaiveDate {
    match day.weekday() {
        Weekday::Sat => day - Days::days(1),
        Weekday::Sun => day - Days::days(2),
        _ => day,
    }
}

/// One pay period and the day it is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayRun {
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub pay_date: NaiveDate,
    pub frequency: PayFrequency,
}

impl PayRun {
    pub fn debit_date(&self) -> NaiveDate {
        self.pay_date - Days::days(2)
    }

    /// The bi-weekly period just closed, paid on `pay_date`.
    pub fn paid_on(pay_date: NaiveDate) -> Self {
        let end = pay_date - Days::days(5);
        Self {
            start: end - Days::days(13),
            end,
            pay_date,
            frequency: PayFrequency::BiWeekly,
        }
    }
}

/// A connection to add at run time (`RunningEmulator::add_connection`,
/// `POST /_emulator/connections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSpec {
    /// Automated or assisted: refresh cadence and whether changes are announced.
    pub kind: ConnectionKind,
    /// People on the payroll at creation.
    pub employees: usize,
    /// 1 for a single entity; 2 to 5 make a multi-entity connection, whose
    /// `/employer/*` requests must name one entity.
    #[serde(default = "one")]
    pub entities: usize,
    /// Sets the payroll calendar and the payment history before creation.
    #[serde(default = "biweekly")]
    pub pay_frequency: PayFrequency,
    /// Spreads pay days of the same frequency over the week (see `PayFrequency::pay_runs`).
    #[serde(default)]
    pub pay_stagger: u32,
    /// The first sync is still running for this long (Finch time): data
    /// endpoints answer 202 until it ends.
    #[serde(default, with = "humantime_serde_opt")]
    pub first_sync_pending_for: Option<Duration>,
    /// Payment history from this many days before creation.
    #[serde(default = "default_history_days")]
    pub history_days: u32,
    /// The provider shown in `/introspect`; one matching the kind if unset.
    #[serde(default)]
    pub provider_id: Option<String>,
}

fn one() -> usize {
    1
}

fn biweekly() -> PayFrequency {
    PayFrequency::BiWeekly
}

fn default_history_days() -> u32 {
    90
}

impl ConnectionSpec {
    pub fn automated(employees: usize) -> Self {
        Self {
            kind: ConnectionKind::Automated,
            employees,
            entities: 1,
            pay_frequency: PayFrequency::BiWeekly,
            pay_stagger: 0,
            first_sync_pending_for: None,
            history_days: default_history_days(),
            provider_id: None,
        }
    }

    pub fn assisted(employees: usize) -> Self {
        Self {
            kind: ConnectionKind::Assisted,
            ..Self::automated(employees)
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=5).contains(&self.entities) {
            return Err("`entities` must be between 1 and 5".to_owned());
        }
        if self.employees > 10_000 {
            return Err("`employees` must be at most 10000".to_owned());
        }
        if self.history_days > 3_000 {
            return Err("`history_days` must be at most 3000".to_owned());
        }
        Ok(())
    }
}

/// `first_sync_pending_for` in JSON: a humantime string like `"3d"`, or null.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn each_frequency_pays_as_often_as_it_says() {
        let (since, until) = (day(2025, 1, 1), day(2025, 12, 31));
        for frequency in PayFrequency::ALL {
            let runs = frequency.pay_runs(3, since, until);
            let expected = frequency.periods_per_year() as usize;
            assert!(
                runs.len().abs_diff(expected) <= 1,
                "{frequency:?}: {}",
                runs.len()
            );
            assert!(runs
                .iter()
                .all(|r| r.start <= r.end && r.pay_date.weekday().num_days_from_monday() < 5));
        }
    }

    #[test]
    fn stagger_moves_weekly_pay_days() {
        let (since, until) = (day(2025, 1, 1), day(2025, 2, 1));
        let a = PayFrequency::BiWeekly.pay_runs(0, since, until);
        let b = PayFrequency::BiWeekly.pay_runs(5, since, until);
        assert_ne!(a[0].pay_date, b[0].pay_date);
    }
}
