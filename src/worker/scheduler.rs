//! Coalescing and fair dispatch.
//!
//! Work is collected per (product, connection): ids from many events become
//! one batch request, duplicates once. One dispatcher per product waits until
//! some connection's work has aged past the coalescing window, takes a
//! request from the shared rate budget, and only then picks whose work goes
//! out: connections take turns (round robin in order of arrival), and the
//! chosen connection's batch includes everything that arrived while the
//! budget was being waited for.
//!
//! Sweeps are background work: they collect apart from events, go out only
//! when no event work is due, and take budget only below the reserve (see
//! [`dispatch`](super::dispatch)), so an event never waits behind a sweep.

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

/// The reads a whole-resource request goes on to once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// None: the event asked for this resource only.
    None,
    /// Everything it lists (a full sync: everyone in the directory, the
    /// statements of every payment).
    All,
    /// Only what is new or may have changed (a sweep: the statements of
    /// payments created or updated by the read, or never read).
    Changed,
}

impl Follow {
    pub fn any(self) -> bool {
        self != Follow::None
    }
}

/// Whether work serves events or a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Event,
    Sweep,
}

/// Work waiting for one (product, connection).
pub struct Work {
    pub first_at: Option<Instant>,
    /// When the latest request joined: a burst is sent once it goes quiet.
    pub last_at: Option<Instant>,
    /// Not before this: the connection's own rate limit is paused.
    pub hold_until: Option<Instant>,
    /// Events or a sweep; follow-up reads keep it.
    pub priority: Priority,
    /// The entity of a multi-entity connection the reads name; `None` for
    /// a connection read as a whole.
    pub entity: Option<String>,
    /// Whole-resource requests (company, directory, payments) and the
    /// reads each goes on to.
    pub whole: Vec<(Arc<Message>, Follow)>,
    /// Batch ids (individual ids, payment ids for pay statements) and who waits on each.
    pub items: BTreeMap<String, Vec<Arc<Message>>>,
    /// The union of requested payment date ranges.
    pub range: Option<(NaiveDate, NaiveDate)>,
}

impl Default for Work {
    fn default() -> Self {
        Self {
            first_at: None,
            last_at: None,
            hold_until: None,
            priority: Priority::Event,
            entity: None,
            whole: Vec::new(),
            items: BTreeMap::new(),
            range: None,
        }
    }
}

impl Work {
    /// Takes in work put back after a pause, keeping every waiter's hold.
    fn absorb(&mut self, other: Work) {
        self.first_at = match (self.first_at, other.first_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_at = self.last_at.max(other.last_at);
        self.hold_until = self.hold_until.max(other.hold_until);
        self.whole.extend(other.whole);
        for (id, waiters) in other.items {
            self.items.entry(id).or_default().extend(waiters);
        }
        if let Some((start, end)) = other.range {
            self.merge_range(start, end);
        }
    }

    /// The highest delivery attempt among the waiting messages.
    pub fn max_attempt(&self) -> i64 {
        self.whole
            .iter()
            .map(|(waiter, _)| waiter)
            .chain(self.items.values().flatten())
            .map(|waiter| waiter.attempt())
            .max()
            .unwrap_or(1)
    }

    /// Settles every waiter as done, with a note (a skip).
    pub fn acknowledge(&self, note: &str) {
        for (waiter, _) in &self.whole {
            waiter.note(note);
        }
        for waiter in self.items.values().flatten() {
            waiter.note(note);
        }
        self.settle(&Ok(()));
    }

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
        follow: Follow,
    },
    Items(Vec<String>),
    Range {
        start: NaiveDate,
        end: NaiveDate,
        follow: Follow,
    },
}

/// Work is collected per connection, entity and priority.
type Key = (String, Option<String>, Priority);

/// Whom submitted work is for.
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub connection_id: &'a str,
    /// The entity the reads name (multi-entity connections), else `None`.
    pub entity: Option<&'a str>,
    pub priority: Priority,
}

#[derive(Default)]
struct LaneState {
    pending: HashMap<Key, Work>,
    /// Connections with pending work, in turn order.
    order: VecDeque<Key>,
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
    pub fn submit(&self, to: For<'_>, target: Target, waiter: &Arc<Message>) {
        let mut state = self.state.lock().expect("lane lock");
        let LaneState { pending, order } = &mut *state;
        let key = (
            to.connection_id.to_owned(),
            to.entity.map(str::to_owned),
            to.priority,
        );
        let work = pending.entry(key.clone()).or_insert_with(|| {
            order.push_back(key);
            Work {
                priority: to.priority,
                entity: to.entity.map(str::to_owned),
                ..Work::default()
            }
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

    /// Returns work that met a rate limit, to go out again once the pause
    /// (the budget's, or `hold` for the connection's own) is over. Its
    /// messages stay attached: nothing is settled or retried.
    pub fn put_back(&self, connection_id: &str, mut work: Work, hold: Option<Duration>) {
        if let Some(hold) = hold {
            work.hold_until = Some(Instant::now() + hold);
        }
        let mut state = self.state.lock().expect("lane lock");
        let LaneState { pending, order } = &mut *state;
        let key = (connection_id.to_owned(), work.entity.clone(), work.priority);
        match pending.get_mut(&key) {
            Some(existing) => existing.absorb(work),
            None => {
                order.push_back(key.clone());
                pending.insert(key, work);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Whether event work (not sweeps) is due now.
    pub fn event_work_due(&self, window: Window) -> bool {
        let state = self.state.lock().expect("lane lock");
        let now = Instant::now();
        state.pending.iter().any(|((_, _, priority), work)| {
            *priority == Priority::Event && window.due_at(work).is_some_and(|due| due <= now)
        })
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
    /// Event work goes first; sweep work only when `sweeps` allows it and
    /// no event work is due.
    pub fn take_next(
        &self,
        window: Window,
        max_items: usize,
        sweeps: bool,
    ) -> Option<(String, Work)> {
        let passes: &[Priority] = if sweeps {
            &[Priority::Event, Priority::Sweep]
        } else {
            &[Priority::Event]
        };
        passes
            .iter()
            .find_map(|priority| self.take_next_of(window, max_items, *priority))
    }

    fn take_next_of(
        &self,
        window: Window,
        max_items: usize,
        wanted: Priority,
    ) -> Option<(String, Work)> {
        let mut state = self.state.lock().expect("lane lock");
        let now = Instant::now();
        for _ in 0..state.order.len() {
            let key = state.order.pop_front()?;
            let due = key.2 == wanted
                && state
                    .pending
                    .get(&key)
                    .and_then(|work| window.due_at(work))
                    .is_some_and(|due| due <= now);
            if !due {
                state.order.push_back(key);
                continue;
            }
            let connection_id = key.0.clone();
            let mut work = state.pending.remove(&key)?;
            if work.items.len() > max_items {
                let rest_keys: Vec<String> = work.items.keys().skip(max_items).cloned().collect();
                // Already waited its turn: due again at once.
                let mut rest = Work {
                    first_at: work.first_at,
                    last_at: work.first_at,
                    priority: work.priority,
                    entity: work.entity.clone(),
                    ..Work::default()
                };
                for id in rest_keys {
                    if let Some(waiters) = work.items.remove(&id) {
                        rest.items.insert(id, waiters);
                    }
                }
                state.pending.insert(key.clone(), rest);
                state.order.push_back(key);
            }
            if work.is_empty() {
                continue;
            }
            return Some((connection_id, work));
        }
        None
    }

    /// Resolves when work is added or put back.
    pub async fn changed(&self) {
        self.wake.notified().await;
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
        let due = (last + self.quiet).min(first + self.longest.max(self.quiet));
        Some(due.max(work.hold_until.unwrap_or(due)))
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

    pub fn submit(&self, product: Product, to: For<'_>, target: Target, waiter: &Arc<Message>) {
        self.lanes[&product].submit(to, target, waiter);
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
/// (with a little jitter so that workers do not wake in lockstep). Sweep
/// work (`below_reserve`) takes only what the reserve leaves. Returns the
/// time waited, or `None` on stop.
pub async fn acquire_budget(
    budget: &crate::store::budget::RateBudget,
    product: Product,
    below_reserve: Option<f64>,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let grant = match below_reserve {
            None => budget.try_acquire(product).await,
            Some(reserve) => budget.try_acquire_below(product, reserve).await,
        };
        let wait = match grant {
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
