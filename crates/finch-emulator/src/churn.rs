//! How a provider's data moves on between Finch's refreshes: payroll runs on
//! the connection's calendar, and people are hired, terminated, edited and
//! (rarely) purged at the daily rates `Churn` sets.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::model::{PaymentRecord, Person, Statements};
use super::seed;
use super::state::{entity_index, Connection, Shared};

/// Daily rates of change, each a share of a connection's employees per day.
/// The defaults (all zero) keep a connection still unless a test changes it;
/// fleet mode uses `Churn::realistic`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Churn {
    /// New hires per employee per day (US JOLTS: about 0.0013).
    pub hires: f64,
    /// Terminations per employee per day (about 0.0013).
    pub terminations: f64,
    /// Other edits (title, address, phone) per employee per day.
    pub edits: f64,
    /// Terminated people purged from the provider per employee per day.
    pub deletions: f64,
}

impl Churn {
    /// Figures from fleet-model.md: BLS JOLTS hires and separations, a few
    /// edits, rare purges.
    pub fn realistic() -> Self {
        Self {
            hires: 0.0013,
            terminations: 0.0013,
            edits: 0.002,
            deletions: 0.0001,
        }
    }
}

/// Draws how many of `expected` (a mean) happen: the whole part, plus one
/// more with the fractional part's probability.
fn count(rng: &mut StdRng, expected: f64) -> usize {
    let whole = expected.floor();
    let extra = rng.random_bool((expected - whole).clamp(0.0, 1.0));
    whole as usize + usize::from(extra)
}

/// Moves a connection's provider state to Finch time `at`.
pub fn advance_provider(shared: &Shared, connection: &mut Connection, at: DateTime<Utc>) {
    let days = (at - connection.last_refresh).num_seconds().max(0) as f64 / 86_400.0;
    connection.last_refresh = at;
    let today = at.date_naive();
    let churn = shared.config.churn;
    let Connection { provider, rng, .. } = connection;
    let employees = provider.people.iter().filter(|p| p.is_active()).count() as f64;

    for _ in 0..count(rng, churn.hires * employees * days) {
        let hire = seed::new_hire(rng, &provider.company, &provider.people, today);
        provider.people.push(Arc::new(hire));
    }
    for _ in 0..count(rng, churn.terminations * employees * days) {
        // Never the chief: the org chart hangs from them.
        let active: Vec<usize> = (1..provider.people.len())
            .filter(|&i| provider.people[i].is_active())
            .collect();
        if active.is_empty() {
            break;
        }
        Arc::make_mut(&mut provider.people[active[rng.random_range(0..active.len())]])
            .terminate(today);
    }
    for _ in 0..count(rng, churn.edits * employees * days) {
        if provider.people.is_empty() {
            break;
        }
        let i = rng.random_range(0..provider.people.len());
        seed::edit(rng, Arc::make_mut(&mut provider.people[i]));
    }
    for _ in 0..count(rng, churn.deletions * employees * days) {
        let gone: Vec<usize> = (1..provider.people.len())
            .filter(|&i| !provider.people[i].is_active())
            .collect();
        if gone.is_empty() {
            break;
        }
        provider
            .people
            .remove(gone[rng.random_range(0..gone.len())]);
    }

    if let Some((frequency, stagger)) = connection.payroll {
        let since = connection.paid_through + chrono::Duration::days(1);
        let entities = connection.entity_ids.len();
        for run in frequency.pay_runs(stagger, since, today) {
            for entity in 0..entities {
                let staff: Vec<_> = connection
                    .provider
                    .people
                    .iter()
                    .filter(|p| entity_index(p.id(), entities) == entity)
                    .cloned()
                    .collect();
                let staff = shared_staff(&connection.provider.payments, entity, staff);
                let mut record = seed::payment_of(&mut connection.rng, staff, run);
                record.entity = entity;
                connection.provider.payments.push(record);
            }
        }
        connection.paid_through = today.max(connection.paid_through);
    }
}

/// The staff list of the entity's last payment when nobody in it changed
/// since, so that a pay group's payments share one list.
fn shared_staff(
    payments: &[PaymentRecord],
    entity: usize,
    staff: Vec<Arc<Person>>,
) -> Arc<Vec<Arc<Person>>> {
    let last = payments.iter().rev().find_map(|r| match &r.statements {
        Statements::Derived { paid, .. } if r.entity == entity => Some(paid.staff()),
        _ => None,
    });
    match last {
        Some(last)
            if last.len() == staff.len()
                && last.iter().zip(&staff).all(|(a, b)| Arc::ptr_eq(a, b)) =>
        {
            last.clone()
        }
        _ => Arc::new(staff),
    }
}
