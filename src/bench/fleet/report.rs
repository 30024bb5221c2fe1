//! The figures `bench fleet` prints, ending with its one-line summary.

use std::fmt::Write as _;

use crate::finch::Product;

use super::diff::MirrorDiff;
use super::watch::{Observations, Staleness, Sweeps};
use super::{daily_budget, FleetArgs};

pub struct Inputs<'a> {
    pub args: &'a FleetArgs,
    pub kinds: (usize, usize),
    pub staleness: &'a Staleness,
    pub sweeps: &'a Sweeps,
    pub dead_letters: i64,
    pub diff: &'a MirrorDiff,
    /// Finch time the drain took after refreshes stopped.
    pub drain: chrono::Duration,
    pub lost: usize,
    pub changes: usize,
    /// The emulator's deliveries when the drain ended: a delivery retried
    /// on Finch's schedule (minutes to hours) shows as staleness.
    pub webhooks: &'a finch_emulator::WebhookStats,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn spread(sorted: &[f64]) -> String {
    if sorted.is_empty() {
        return "none".to_owned();
    }
    format!(
        "{:>7} changes  p50 {:>8.0}s  p99 {:>8.0}s  max {:>8.0}s",
        sorted.len(),
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.last().copied().unwrap_or(0.0)
    )
}

impl Observations {
    pub fn report(&self, inputs: &Inputs<'_>) -> String {
        let args = inputs.args;
        let mut out = String::new();
        let (automated, assisted) = inputs.kinds;
        let _ = writeln!(
            out,
            "bench fleet: {} connections ({automated} automated, {assisted} assisted), {} simulated days at {}x, {} workers",
            args.connections, args.days, args.time_scale, args.workers
        );
        let _ = writeln!(
            out,
            "\nFinch requests per simulated day (share of the daily budget):"
        );
        let _ = write!(out, "  {:<14}", "product");
        for day in 1..=args.days {
            let _ = write!(out, " {:>7}", format!("day {day}"));
        }
        let _ = writeln!(out, " {:>8} {:>8} {:>7}", "peak", "budget", "peak %");
        let mut peak_pct: f64 = 0.0;
        let mut total = 0;
        for product in Product::ALL {
            let days = self.product_days(product, args.days);
            let peak = days.iter().copied().max().unwrap_or(0);
            let budget = daily_budget(product);
            let pct = 100.0 * peak as f64 / budget as f64;
            peak_pct = peak_pct.max(pct);
            total += days.iter().sum::<u64>();
            let _ = write!(out, "  {:<14}", product.as_str());
            for count in &days {
                let _ = write!(out, " {count:>7}");
            }
            let _ = writeln!(out, " {peak:>8} {budget:>8} {pct:>6.1}%");
        }
        let per_connection_day = total as f64 / args.connections as f64 / f64::from(args.days);
        let _ = writeln!(
            out,
            "  requests per connection per day: {per_connection_day:.3} (all products; {} more while draining)",
            self.drain_requests
        );

        let staleness = inputs.staleness;
        let _ = writeln!(
            out,
            "\nStaleness, a change at Finch to our copy (simulated seconds), {} changes:",
            inputs.changes
        );
        let _ = writeln!(
            out,
            "  announced by a webhook: {}",
            spread(&staleness.announced)
        );
        let _ = writeln!(
            out,
            "  repaired by a sweep:    {}",
            spread(&staleness.repaired)
        );
        let _ = writeln!(
            out,
            "  never answered by a notification: {} (a change can end where it began: hired and gone between two reads)",
            staleness.unresolved
        );
        let _ = writeln!(
            out,
            "  connections that lost their next change's webhooks: {}",
            inputs.lost
        );

        let sweeps = inputs.sweeps;
        let _ = writeln!(
            out,
            "\nSweeps: {} finished; automated swept within 7 days: {}/{}; assisted swept within a day of each refresh: {}/{}",
            sweeps.finished, sweeps.automated.0, sweeps.automated.1, sweeps.assisted.0, sweeps.assisted.1
        );
        if !sweeps.late.is_empty() {
            let _ = writeln!(out, "  late, for example: {}", sweeps.late.join(", "));
        }
        let codes: Vec<String> = self
            .rate_limited_by_code
            .iter()
            .map(|(code, count)| format!("{code}={count}"))
            .collect();
        let _ = writeln!(
            out,
            "429s: {}{}",
            self.rate_limited,
            if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            }
        );
        let _ = writeln!(out, "dead letters: {}", inputs.dead_letters);
        let webhooks = inputs.webhooks;
        let _ = writeln!(
            out,
            "webhook deliveries: {} events, {} retried on Finch's schedule, {} given up, {} still queued when the drain ended",
            webhooks.emitted,
            webhooks.retried,
            webhooks.failed,
            webhooks.pending()
        );
        let _ = writeln!(
            out,
            "drain after refreshes stopped: {:.1} simulated hours",
            inputs.drain.num_seconds() as f64 / 3600.0
        );
        let diff = inputs.diff;
        if diff.rows() == 0 {
            let _ = writeln!(
                out,
                "mirror against the emulator: every table equal, row by row"
            );
        } else {
            let tables: Vec<String> = diff
                .by_table
                .iter()
                .map(|(table, rows)| format!("{table}={rows}"))
                .collect();
            let _ = writeln!(
                out,
                "mirror against the emulator: {} rows differ ({})",
                diff.rows(),
                tables.join(", ")
            );
            for example in &diff.examples {
                let _ = writeln!(out, "  {example}");
            }
        }
        let _ = write!(
            out,
            "\nfleet: connections={} days={} budget_peak_pct={:.1} staleness_p99_s={:.0} swept_on_time_pct={:.1} diff_rows={} 429s={} dead_letters={}",
            args.connections,
            args.days,
            peak_pct,
            percentile(&staleness.announced, 99.0),
            sweeps.on_time_pct(),
            diff.rows(),
            self.rate_limited,
            inputs.dead_letters
        );
        out
    }
}
