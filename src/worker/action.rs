//! What an event asks the worker to do, decided from its type and body
//! alone.

use chrono::NaiveDate;
use serde_json::Value;

use crate::queue::contract::{RESYNC_EVENT_TYPE, SWEEP_EVENT_TYPE};

/// What an event asks the worker to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AccountUpdated {
        status: Option<String>,
    },
    FullSync,
    /// A reconciliation sweep queued by the scheduler.
    Sweep,
    Job {
        job_id: String,
        manual: bool,
        kind: String,
        /// The event says the job finished successfully (`.completed`,
        /// `.succeeded`), so it need not be read.
        completed: bool,
    },
    Company,
    Directory,
    Individual {
        individual_id: String,
    },
    Employment {
        individual_id: String,
    },
    Payment {
        pay_date: Option<NaiveDate>,
    },
    PayStatement {
        payment_id: String,
    },
    /// `test` and types we do not know: recorded and acknowledged.
    Record,
}

impl Action {
    /// Metrics label: bounded, whatever types Finch invents.
    pub fn label(&self) -> &'static str {
        match self {
            Action::AccountUpdated { .. } => "account",
            Action::FullSync => "resync",
            Action::Sweep => "sweep",
            Action::Job { .. } => "job",
            Action::Company => "company",
            Action::Directory => "directory",
            Action::Individual { .. } => "individual",
            Action::Employment { .. } => "employment",
            Action::Payment { .. } => "payment",
            Action::PayStatement { .. } => "pay_statement",
            Action::Record => "other",
        }
    }

    pub fn needs_connection(&self) -> bool {
        !matches!(self, Action::Record)
    }
}

/// Decides what an event means. `Err` names what is missing for a known
/// type; unknown types are never an error.
pub fn classify(event_type: &str, body: &Value) -> Result<Action, String> {
    let data = body.get("data").unwrap_or(&Value::Null);
    let text = |key: &str| {
        data.get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let required = |key: &str| text(key).ok_or_else(|| format!("{event_type} without data.{key}"));
    if event_type == RESYNC_EVENT_TYPE {
        return Ok(Action::FullSync);
    }
    if event_type == SWEEP_EVENT_TYPE {
        return Ok(Action::Sweep);
    }
    if event_type == "account.updated" {
        return Ok(Action::AccountUpdated {
            status: text("status"),
        });
    }
    if let Some(rest) = event_type.strip_prefix("job.") {
        let kind = rest.split('.').next().unwrap_or_default().to_owned();
        let automated_sync = kind == "data_sync_all" || kind.starts_with("initial_data_sync");
        let manual = kind.starts_with("benefit_");
        if automated_sync || manual {
            let completed = matches!(rest.rsplit('.').next(), Some("completed" | "succeeded"));
            return Ok(Action::Job {
                job_id: required("job_id")?,
                manual,
                kind,
                completed,
            });
        }
        return Ok(Action::Record);
    }
    let Some((resource, _change)) = event_type.split_once('.') else {
        return Ok(Action::Record);
    };
    Ok(match resource {
        "company" => Action::Company,
        "directory" => Action::Directory,
        "individual" => Action::Individual {
            individual_id: required("individual_id")?,
        },
        "employment" => Action::Employment {
            individual_id: required("individual_id")?,
        },
        "payment" => Action::Payment {
            pay_date: text("pay_date").as_deref().and_then(parse_pay_date),
        },
        "pay_statement" => Action::PayStatement {
            payment_id: required("payment_id")?,
        },
        _ => Action::Record,
    })
}

/// Finch's examples show `10-23-2023`; the API itself uses ISO dates.
fn parse_pay_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%m-%d-%Y"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(data: Value) -> Value {
        json!({ "connection_id": "c", "data": data })
    }

    #[test]
    fn every_row_of_the_table_is_classified() {
        let cases = [
            ("account.updated", json!({"status": "connected"}), "account"),
            ("job.data_sync_all.completed", json!({"job_id": "j"}), "job"),
            (
                "job.initial_data_sync_payroll.succeeded",
                json!({"job_id": "j"}),
                "job",
            ),
            (
                "job.benefit_enroll.completed",
                json!({"job_id": "j"}),
                "job",
            ),
            ("company.updated", Value::Null, "company"),
            (
                "directory.created",
                json!({"individual_id": "i"}),
                "directory",
            ),
            (
                "individual.deleted",
                json!({"individual_id": "i"}),
                "individual",
            ),
            (
                "employment.updated",
                json!({"individual_id": "i"}),
                "employment",
            ),
            (
                "payment.created",
                json!({"payment_id": "p", "pay_date": "10-23-2023"}),
                "payment",
            ),
            (
                "pay_statement.created",
                json!({"payment_id": "p", "individual_id": "i"}),
                "pay_statement",
            ),
            ("test", Value::Null, "other"),
            ("brand_new.thing", Value::Null, "other"),
            (
                "job.w4_form_employee_sync.completed",
                json!({"job_id": "j"}),
                "other",
            ),
        ];
        for (event_type, data, label) in cases {
            let action = classify(event_type, &body(data)).unwrap();
            assert_eq!(action.label(), label, "{event_type}");
        }
    }

    #[test]
    fn pay_dates_in_both_formats_parse() {
        let expected = NaiveDate::from_ymd_opt(2023, 10, 23);
        assert_eq!(parse_pay_date("10-23-2023"), expected);
        assert_eq!(parse_pay_date("2023-10-23"), expected);
        let action = classify("payment.created", &body(json!({"pay_date": "2023-10-23"}))).unwrap();
        assert_eq!(action, Action::Payment { pay_date: expected });
    }

    #[test]
    fn known_types_missing_their_ids_are_errors() {
        assert!(classify("individual.updated", &body(json!({}))).is_err());
        assert!(classify("pay_statement.created", &body(Value::Null)).is_err());
        assert!(classify("job.data_sync_all.completed", &body(json!({}))).is_err());
    }
}
