//! Coalescing and fair dispatch.
//!
//! Work is collected per (product, connection): ids from many events become
//! one batch request, duplicates once. One dispatcher per product waits until
//! some connection's work has aged past the coalescing window, takes a
//! request from the shared rate budget, and only then picks whose work goes
//! out: connections take turns (round robin in order of arrival), and the
//! chosen connection's batch includes everything that arrived while the
//! budget was being waited for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rand::Rng as _;
use tokio::sync::Notify;

use super::message::{Failure, Message};
use crate::finch::Product;
use crate::store::budget::Grant;
use crate::telemetry::ErrorChain;

/// Work waiting for one (product, connection).
#[derive(Default)]
pub struct Work {
    pub first_at: Option<Instant>,
    /// When the latest request joined: a burst is sent once it goes quiet.
    pub last_at: Option<Instant>,
    /// Whole-resource requests (company, directory, payments); `true` asks
    /// for the follow-up reads of a full sync.
    pub whole: Vec<(Arc<Message>, bool)>,
    /// Batch ids (individual ids, payment ids for pay statements) and who waits on each.
    pub items: BTreeMap<String, Vec<Arc<Message>>>,
    /// The union of requested payment date ranges.
    pub range: Option<(NaiveDate, NaiveDate)>,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.items.is_empty()
    }

    /// Requests this work serves: each whole-resource request, and each
    /// message waiting on a batch id.
    pub fn requests(&self) -> usize {
        self.whole.len() + self.items.values().map(Vec::len).sum::<usize>()
    }

    /// Settles every waiter with the same outcome.
    pub fn settle(&self, outcome: &Result<(), Failure>) {
        for (waiter, _) in &self.whole {
            waiter.settle(outcome.clone());
        }
        for waiters in self.items.values() {
            for waiter in waiters {
                waiter.settle(outcome.clone());
            }
        }
    }

    /// Settles the waiters of each batch id: with the id's failure if it
    /// has one, as done otherwise.
    pub fn settle_items(&self, failures: &HashMap<String, Failure>) {
        for (id, waiters) in &self.items {
            let outcome = failures.get(id).cloned().map_or(Ok(()), Err);
            for waiter in waiters {
                waiter.settle(outcome.clone());
            }
        }
    }

    fn merge_range(&mut self, start: NaiveDate, end: NaiveDate) {
        self.range = Some(match self.range {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });
    }
}

/// What a message asks of a lane.
pub enum Target {
    Whole {
        follow: bool,
    },
    Items(Vec<String>),
    Range {
        start: NaiveDate,
        end: NaiveDate,
        follow: bool,
    },
}

#[derive(Default)]
struct LaneState {
    pending: HashMap<String, Work>,
    /// Connections with pending work, in turn order.
    order: VecDeque<String>,
}

pub struct Lane {
    pub product: Product,
    state: Mutex<LaneState>,
    wake: Notify,
}

impl Lane {
    fn new(product: Product) -> Self {
        Self {
            product,
            state: Mutex::new(LaneState::default()),
            wake: Notify::new(),
        }
    }

    /// Adds a message's request; the message waits on it until settled.
    pub fn submit(&self, connection_id: &str, target: Target, waiter: &Arc<Message>) {
        let mut state = self.state.lock().expect("lane lock");
        let LaneState { pending, order } = &mut *state;
        let work = pending.entry(connection_id.to_owned()).or_insert_with(|| {
            order.push_back(connection_id.to_owned());
            Work::default()
        });
        work.first_at.get_or_insert_with(Instant::now);
        work.last_at = Some(Instant::now());
        match target {
            Target::Whole { follow } => {
                waiter.attach(1);
                work.whole.push((waiter.clone(), follow));
            }
            Target::Range { start, end, follow } => {
                waiter.attach(1);
                work.merge_range(start, end);
                work.whole.push((waiter.clone(), follow));
            }
            Target::Items(ids) => {
                waiter.attach(ids.len());
                for id in ids {
                    work.items.entry(id).or_default().push(waiter.clone());
                }
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// How long until the first work is due; `None` when there is none.
    pub fn due_in(&self, window: Window) -> Option<Duration> {
        let state = self.state.lock().expect("lane lock");
        let now = Instant::now();
        state
            .pending
            .values()
            .filter_map(|work| window.due_at(work))
            .map(|due| due.saturating_duration_since(now))
            .min()
    }

    /// The next connection whose work is due, in turn order, with at most
    /// `max_items` batch ids (the rest stays, due at once, at the back).
    pub fn take_next(&self, window: Window, max_items: usize) -> Option<(String, Work)> {
        let mut state = self.state.lock().expect("lane lock");
        let now = Instant::now();
        for _ in 0..state.order.len() {
            let connection_id = state.order.pop_front()?;
            let due = state
                .pending
                .get(&connection_id)
                .and_then(|work| window.due_at(work))
                .is_some_and(|due| due <= now);
            if !due {
                state.order.push_back(connection_id);
                continue;
            }
            let mut work = state.pending.remove(&connection_id)?;
            if work.items.len() > max_items {
                let rest_keys: Vec<String> = work.items.keys().skip(max_items).cloned().collect();
                // Already waited its turn: due again at once.
                let mut rest = Work {
                    first_at: work.first_at,
                    last_at: work.first_at,
                    ..Work::default()
                };
                for key in rest_keys {
                    if let Some(waiters) = work.items.remove(&key) {
                        rest.items.insert(key, waiters);
                    }
                }
                state.pending.insert(connection_id.clone(), rest);
                state.order.push_back(connection_id.clone());
            }
            if work.is_empty() {
                continue;
            }
            return Some((connection_id, work));
        }
        None
    }

    /// Everything still waiting, for shutdown accounting.
    pub fn pending_connections(&self) -> usize {
        self.state.lock().expect("lane lock").pending.len()
    }
}

/// When collected work goes out: once no new request has joined it for
/// `quiet`, or `longest` after the first one, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub quiet: Duration,
    pub longest: Duration,
}

impl Window {
    fn due_at(self, work: &Work) -> Option<Instant> {
        let first = work.first_at?;
        let last = work.last_at.unwrap_or(first);
        Some((last + self.quiet).min(first + self.longest.max(self.quiet)))
    }
}

/// One lane per product.
pub struct Scheduler {
    lanes: HashMap<Product, Arc<Lane>>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scheduler {
    pub fn new() -> Self {
        Self {
            lanes: Product::ALL
                .iter()
                .map(|p| (*p, Arc::new(Lane::new(*p))))
                .collect(),
        }
    }

    pub fn lane(&self, product: Product) -> Arc<Lane> {
        self.lanes[&product].clone()
    }

    pub fn submit(
        &self,
        product: Product,
        connection_id: &str,
        target: Target,
        waiter: &Arc<Message>,
    ) {
        self.lanes[&product].submit(connection_id, target, waiter);
    }
}

/// Waits until the lane has due work or `stop` fires; false on stop.
pub async fn wait_for_due(
    lane: &Lane,
    window: Window,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        match lane.due_in(window) {
            Some(wait) if wait.is_zero() => return true,
            Some(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return false,
                }
            }
            None => {
                tokio::select! {
                    () = lane.wake.notified() => {}
                    () = stop.cancelled() => return false,
                }
            }
        }
    }
}

/// Takes one request from the shared budget, waiting as long as it says
/// (with a little jitter so that workers do not wake in lockstep). Returns
/// the time waited, or `None` on stop.
pub async fn acquire_budget(
    budget: &crate::store::budget::RateBudget,
    product: Product,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let wait = match budget.try_acquire(product).await {
            Ok(Grant::Granted) => return Some(started.elapsed()),
            Ok(Grant::Wait(wait)) => wait,
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), product = product.as_str(), "rate budget unavailable");
                Duration::from_secs(1)
            }
        };
        let jitter = Duration::from_millis(rand::rng().random_range(5..60));
        tokio::select! {
            () = tokio::time::sleep(wait + jitter) => {}
            () = stop.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_out_when_it_goes_quiet_or_at_the_cap() {
        let window = Window {
            quiet: Duration::from_secs(1),
            longest: Duration::from_secs(5),
        };
        let start = Instant::now();
        let mut work = Work {
            first_at: Some(start),
            last_at: Some(start + Duration::from_millis(800)),
            ..Work::default()
        };
        assert_eq!(
            window.due_at(&work),
            Some(start + Duration::from_millis(1800))
        );
        work.last_at = Some(start + Duration::from_secs(10));
        assert_eq!(window.due_at(&work), Some(start + Duration::from_secs(5)));
    }

    #[test]
    fn work_merges_ranges() {
        let d = |day| NaiveDate::from_ymd_opt(2024, 1, day).unwrap();
        let mut work = Work::default();
        work.merge_range(d(10), d(20));
        work.merge_range(d(5), d(12));
        assert_eq!(work.range, Some((d(5), d(20))));
    }
}
