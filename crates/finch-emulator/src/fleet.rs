//! Fleet mode: many connections with the mix one Finch application sees
//! (fleet-model.md): mostly small employers, some mid-sized, a few large;
//! automated and assisted; a few multi-entity; pay calendars in the US mix.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::seed;
use super::spec::{ConnectionKind, ConnectionSpec, PayFrequency};

/// The shape of a fleet; every figure is a setting so a user can model their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetMix {
    /// Share of assisted connections (refreshed weekly, no data webhooks).
    pub assisted: f64,
    /// Share of multi-entity connections (2 to 5 entities each).
    pub multi_entity: f64,
    /// Shares of small (5-50), mid (50-500) and large (500-5,000) employers;
    /// sizes are log-uniform within each band. The rest of 1 is small.
    pub mid: f64,
    pub large: f64,
    /// Shares of weekly, bi-weekly and semi-monthly payrolls; the rest is monthly
    /// (US BLS: 27%, 43%, 20%, 10%).
    pub weekly: f64,
    pub biweekly: f64,
    pub semimonthly: f64,
    /// Days of payment history each connection starts with.
    pub history_days: u32,
}

impl Default for FleetMix {
    fn default() -> Self {
        Self {
            assisted: 0.10,
            multi_entity: 0.03,
            mid: 0.18,
            large: 0.01,
            weekly: 0.27,
            biweekly: 0.43,
            semimonthly: 0.20,
            history_days: 365,
        }
    }
}

impl FleetMix {
    /// `n` connection specs, the same for the same seed.
    pub fn specs(&self, n: usize, seed_value: u64) -> Vec<ConnectionSpec> {
        let mut rng = seed::stream(seed_value, 0xF1EE7);
        (0..n)
            .map(|i| {
                let band = rng.random::<f64>();
                let (low, high) = if band < self.large {
                    (500.0_f64, 5_000.0_f64)
                } else if band < self.large + self.mid {
                    (50.0, 500.0)
                } else {
                    (5.0, 50.0)
                };
                let employees = (low.ln() + rng.random::<f64>() * (high.ln() - low.ln()))
                    .exp()
                    .round() as usize;
                let roll = rng.random::<f64>();
                let pay_frequency = if roll < self.weekly {
                    PayFrequency::Weekly
                } else if roll < self.weekly + self.biweekly {
                    PayFrequency::BiWeekly
                } else if roll < self.weekly + self.biweekly + self.semimonthly {
                    PayFrequency::SemiMonthly
                } else {
                    PayFrequency::Monthly
                };
                let kind = if rng.random_bool(self.assisted.clamp(0.0, 1.0)) {
                    ConnectionKind::Assisted
                } else {
                    ConnectionKind::Automated
                };
                let entities = if rng.random_bool(self.multi_entity.clamp(0.0, 1.0)) {
                    rng.random_range(2..=5)
                } else {
                    1
                };
                ConnectionSpec {
                    kind,
                    employees: employees.max(entities),
                    entities,
                    pay_frequency,
                    pay_stagger: (i as u32).wrapping_mul(2_654_435_761) >> 16,
                    first_sync_pending_for: None,
                    history_days: self.history_days,
                    provider_id: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_looks_like_the_fleet_model() {
        let specs = FleetMix::default().specs(10_000, 7);
        let people: usize = specs.iter().map(|s| s.employees).sum();
        let average = people as f64 / specs.len() as f64;
        assert!((45.0..=90.0).contains(&average), "{average}");
        assert!(specs.iter().all(|s| (5..=5_000).contains(&s.employees)));
        let assisted = specs
            .iter()
            .filter(|s| s.kind == ConnectionKind::Assisted)
            .count();
        assert!((800..1_200).contains(&assisted), "{assisted}");
        let multi = specs.iter().filter(|s| s.entities > 1).count();
        assert!((200..400).contains(&multi), "{multi}");
        assert_eq!(specs, FleetMix::default().specs(10_000, 7));
    }
}
