//! Data syncs: jobs, Finch's scheduled refreshes and first syncs, and the
//! diff between provider and synced state that becomes webhook events and
//! change-log entries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use finch_core::Product;
use rand::Rng;
use serde_json::{json, Value};

use super::changelog::ChangeRecord;
use super::churn;
use super::clock::span;
use super::error::ApiError;
use super::model::{Dataset, PaymentRecord, Person};
use super::state::{Connection, Job, Shared, Task, World};
use super::stats::Stats;
use super::webhooks::Outgoing;

/// How often the background ticker looks at the agenda (wall clock).
const TICK: Duration = Duration::from_millis(10);

impl Shared {
    /// Allowed refreshes per hour and how many are left, as jobs endpoints report them.
    pub fn refresh_quota(&self, connection: &mut Connection) -> (u32, u32) {
        let allowed = self.config.refreshes_per_hour;
        let now = self.now();
        while connection
            .refreshes
            .front()
            .is_some_and(|t| now - *t >= chrono::Duration::hours(1))
        {
            connection.refreshes.pop_front();
        }
        let used = u32::try_from(connection.refreshes.len()).unwrap_or(u32::MAX);
        (allowed, allowed.saturating_sub(used))
    }

    /// Enqueues a `data_sync_all` job. While one runs, its id is returned
    /// instead of a new one, as Finch does; `Err` carries when to retry once
    /// the hourly quota is spent. `counted` is false for scheduled syncs.
    pub fn enqueue_sync(
        &self,
        connection_id: &str,
        counted: bool,
    ) -> Result<SyncTicket, SyncRefused> {
        let now = self.now();
        let mut world = self.world();
        let Some(connection) = world.connections.get_mut(connection_id) else {
            return Err(SyncRefused::UnknownConnection);
        };
        let (allowed, remaining) = self.refresh_quota(connection);
        if let Some(job_id) = connection.running_job.clone() {
            return Ok(SyncTicket {
                job_id,
                allowed,
                remaining,
            });
        }
        if counted && allowed > 0 && remaining == 0 {
            let oldest = connection.refreshes.front().copied().unwrap_or(now);
            return Err(SyncRefused::Quota {
                allowed,
                retry_at: oldest + chrono::Duration::hours(1),
            });
        }
        if counted {
            connection.refreshes.push_back(now);
        }
        let job_id = uuid::Uuid::new_v4().to_string();
        connection.running_job = Some(job_id.clone());
        let (allowed, remaining) = self.refresh_quota(connection);
        world.jobs.insert(
            job_id.clone(),
            Job {
                job_id: job_id.clone(),
                connection_id: connection_id.to_owned(),
                status: "in_progress",
                created_at: now,
                started_at: Some(now),
                completed_at: None,
            },
        );
        world.schedule(
            now + span(self.config.sync_duration),
            Task::FinishJob(job_id.clone()),
        );
        Ok(SyncTicket {
            job_id,
            allowed,
            remaining,
        })
    }

    /// Runs everything on the agenda that is due by Finch time now, in time
    /// order, and sends the webhooks it produces.
    pub fn run_due(&self) {
        loop {
            let now = self.now();
            let (at, task) = {
                let mut world = self.world();
                match world.agenda.peek() {
                    Some(std::cmp::Reverse((at, _, _))) if *at <= now => {}
                    _ => return,
                }
                let std::cmp::Reverse((at, _, task)) = world.agenda.pop().expect("peeked an entry");
                (at, task)
            };
            let events = match task {
                Task::FinishJob(job_id) => self.finish_sync(&job_id, at),
                Task::Refresh(connection_id) => self.refresh(&connection_id, at),
                Task::FirstSync(connection_id) => self.first_sync(&connection_id, at),
            };
            self.dispatcher.emit(events);
        }
    }

    /// Stops scheduled refreshes for good; those on the agenda are dropped
    /// when they come due.
    pub fn stop_refreshes(&self) {
        self.refreshes_stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Each connection's next scheduled refresh.
    pub fn next_refreshes(&self) -> HashMap<String, DateTime<Utc>> {
        if self
            .refreshes_stopped
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return HashMap::new();
        }
        let world = self.world();
        let mut next = HashMap::new();
        for std::cmp::Reverse((at, _, task)) in &world.agenda {
            if let Task::Refresh(connection_id) = task {
                next.entry(connection_id.clone())
                    .and_modify(|earliest: &mut DateTime<Utc>| *earliest = (*earliest).min(*at))
                    .or_insert(*at);
            }
        }
        next
    }

    /// When each connection's served data was last retrieved from its
    /// provider (`Finch-Data-Retrieved`); connections not synced yet are absent.
    pub fn data_retrieved(&self) -> HashMap<String, DateTime<Utc>> {
        self.world()
            .connections
            .iter()
            .filter_map(|(id, connection)| Some((id.clone(), connection.data_retrieved?)))
            .collect()
    }

    /// Works through the agenda as Finch time runs, until shutdown.
    pub fn start_ticker(self: &Arc<Self>) {
        let shared = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shared.cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                shared.run_due();
            }
        });
    }

    /// Ends a sync job as the sandbox job configuration says, copying provider
    /// to synced state on success; returns the events to send.
    fn finish_sync(&self, job_id: &str, stamp: DateTime<Utc>) -> Vec<Outgoing> {
        Stats::bump(&self.stats.syncs);
        let mut world = self.world();
        let World {
            connections, jobs, ..
        } = &mut *world;
        let Some(job) = jobs.get_mut(job_id) else {
            return Vec::new();
        };
        let Some(connection) = connections.get_mut(&job.connection_id) else {
            return Vec::new();
        };
        connection.running_job = None;
        connection.last_attempt = Some(stamp);
        let mut events = Vec::new();
        let outcome = connection.job_completion.clone();
        job.status = match outcome.as_str() {
            "complete" => "complete",
            "reauth_error" => "reauth_error",
            "permissions_error" => "permissions_error",
            _ => "error",
        };
        job.completed_at = Some(stamp);
        if outcome == "complete" {
            events.extend(self.publish_provider(connection, stamp));
        } else {
            connection.last_result = "error";
            let status = match outcome.as_str() {
                "reauth_error" => Some("reauth"),
                "permissions_error" => Some("error_permissions"),
                _ => None,
            };
            if let Some(status) = status {
                if connection.status != status {
                    connection.status = status.to_owned();
                    events.push(connection.account_updated());
                }
            }
        }
        if !connection.is_assisted() {
            events.push(Outgoing::new(
                &connection.source,
                "job.data_sync_all.completed",
                json!({ "job_id": job_id, "job_url": self.job_url(job_id) }),
            ));
        }
        events
    }

    /// Makes the provider state what `/employer/*` serves, logs every
    /// change, and returns the item webhooks that are not lost on the way.
    /// Only automated connections announce changes.
    fn publish_provider(&self, connection: &mut Connection, stamp: DateTime<Utc>) -> Vec<Outgoing> {
        let changes = match &connection.synced {
            Some(old) => diff(old, &connection.provider),
            None => Vec::new(),
        };
        let ready = stamp + span(self.config.pay_statement_delay);
        let mut events = Vec::new();
        let mut records = Vec::new();
        for change in changes {
            if let Change::NewPayment(payment_id) = &change {
                connection
                    .statements_ready_at
                    .insert(payment_id.clone(), ready);
                continue;
            }
            let announced = !connection.is_assisted() && connection.lose_item_webhooks == 0;
            if !connection.is_assisted() && !announced {
                connection.lose_item_webhooks -= 1;
            }
            records.extend(change.records(connection, stamp, announced));
            if announced {
                events.extend(change.events(connection));
            }
        }
        for payment in connection.synced.iter().flat_map(|d| &d.payments) {
            connection.statements_ready_at.remove(&payment.payment.id);
        }
        connection.statements_ready_at.retain(|_, at| *at > stamp);
        connection.synced = Some(connection.provider.clone());
        connection.data_retrieved = Some(stamp);
        connection.last_result = "success";
        self.changes.extend(records);
        events
    }

    /// Finch's scheduled refresh: the provider moves on (people churn and
    /// payroll runs for the days since the last one), then a sync publishes
    /// it. Automated connections get a job completion; assisted ones nothing.
    fn refresh(&self, connection_id: &str, at: DateTime<Utc>) -> Vec<Outgoing> {
        if self
            .refreshes_stopped
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Vec::new();
        }
        let mut world = self.world();
        let Some(connection) = world.connections.get_mut(connection_id) else {
            return Vec::new();
        };
        let Some(every) = connection.refresh_every else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if connection.status == "connected" && connection.synced.is_some() {
            churn::advance_provider(self, connection, at);
            Stats::bump(&self.stats.syncs);
            connection.last_attempt = Some(at);
            events.extend(self.publish_provider(connection, at));
            if !connection.is_assisted() {
                let job_id = uuid::Uuid::new_v4().to_string();
                events.push(Outgoing::new(
                    &connection.source,
                    "job.data_sync_all.completed",
                    json!({ "job_id": job_id, "job_url": self.job_url(&job_id) }),
                ));
                world.jobs.insert(
                    job_id.clone(),
                    Job {
                        job_id,
                        connection_id: connection_id.to_owned(),
                        status: "complete",
                        created_at: at,
                        started_at: Some(at),
                        completed_at: Some(at),
                    },
                );
            }
        }
        world.schedule(at + span(every), Task::Refresh(connection_id.to_owned()));
        events
    }

    /// A first sync that kept data endpoints at 202 lands: the data becomes
    /// readable and the connection `connected`.
    fn first_sync(&self, connection_id: &str, at: DateTime<Utc>) -> Vec<Outgoing> {
        let mut world = self.world();
        let Some(connection) = world.connections.get_mut(connection_id) else {
            return Vec::new();
        };
        if connection.synced.is_some() {
            return Vec::new();
        }
        let mut events = Vec::new();
        connection.synced = Some(connection.provider.clone());
        connection.data_retrieved = Some(at);
        connection.last_attempt = Some(at);
        connection.last_result = "success";
        connection.last_refresh = at;
        if connection.status != "connected" {
            connection.status = "connected".to_owned();
            events.push(connection.account_updated());
        }
        if !connection.is_assisted() {
            let job_id = uuid::Uuid::new_v4().to_string();
            events.push(Outgoing::new(
                &connection.source,
                "job.data_sync_all.completed",
                json!({ "job_id": job_id, "job_url": self.job_url(&job_id) }),
            ));
            world.jobs.insert(
                job_id.clone(),
                Job {
                    job_id,
                    connection_id: connection_id.to_owned(),
                    status: "complete",
                    created_at: at,
                    started_at: Some(at),
                    completed_at: Some(at),
                },
            );
        }
        events
    }

    /// Rolls the dice for `--error-rate` and `--upstream-error-rate`.
    pub fn injected_fault(&self) -> Option<ApiError> {
        let (errors, upstream) = (self.config.error_rate, self.config.upstream_error_rate);
        if errors <= 0.0 && upstream <= 0.0 {
            return None;
        }
        let roll: f64 = self.fault_rng.lock().expect("fault rng lock").random();
        if roll < errors {
            Stats::bump(&self.stats.faults_500);
            Some(ApiError::server_error())
        } else if roll < errors + upstream {
            Stats::bump(&self.stats.faults_502);
            Some(ApiError::upstream())
        } else {
            None
        }
    }

    /// A `test` event to every target, as the dashboard's Test button sends.
    pub fn emit_test(&self, connection_id: Option<&str>) -> Option<String> {
        let event = {
            let world = self.world();
            let id = connection_id
                .map(str::to_owned)
                .or_else(|| world.order.first().cloned())?;
            let connection = world.connections.get(&id)?;
            Outgoing::new(&connection.source, "test", json!({}))
        };
        let id = event.id.clone();
        self.dispatcher.emit(vec![event]);
        Some(id)
    }
}

pub struct SyncTicket {
    pub job_id: String,
    pub allowed: u32,
    pub remaining: u32,
}

pub enum SyncRefused {
    UnknownConnection,
    Quota {
        allowed: u32,
        retry_at: DateTime<Utc>,
    },
}

/// One difference between synced and provider state, as Finch reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Company,
    Person {
        id: String,
        action: &'static str,
        endpoints: Vec<Product>,
    },
    /// Starts the 202 window of the payment's statements; announces nothing.
    NewPayment(String),
    PaymentEvent {
        id: String,
        pay_date: String,
        action: &'static str,
        statements: Vec<String>,
        entity: usize,
    },
}

impl Change {
    pub(crate) fn payment_event(record: &PaymentRecord, action: &'static str) -> Self {
        Change::PaymentEvent {
            id: record.payment.id.clone(),
            pay_date: super::seed::date(record.payment.pay_date),
            action,
            statements: record.statements.individual_ids(),
            entity: record.entity,
        }
    }

    /// The change-log entries: one per product and item.
    pub(crate) fn records(
        &self,
        connection: &Connection,
        at: DateTime<Utc>,
        announced: bool,
    ) -> Vec<ChangeRecord> {
        let record = |entity: usize, product: Product, item: &str, action: &str| ChangeRecord {
            seq: 0,
            at,
            connection_id: connection.source.connection_id.clone(),
            entity_id: connection.entity_ids[entity].clone(),
            product: product.as_str().to_owned(),
            item_id: item.to_owned(),
            action: action.to_owned(),
            announced,
        };
        match self {
            Change::Company => vec![record(
                0,
                Product::Company,
                &connection.source.company_id,
                "updated",
            )],
            Change::Person {
                id,
                action,
                endpoints,
            } => endpoints
                .iter()
                .map(|p| record(connection.entity_of_person(id), *p, id, action))
                .collect(),
            Change::NewPayment(_) => Vec::new(),
            Change::PaymentEvent {
                id, action, entity, ..
            } => vec![
                record(*entity, Product::Payment, id, action),
                record(*entity, Product::PayStatement, id, action),
            ],
        }
    }

    fn events(self, connection: &Connection) -> Vec<Outgoing> {
        let source = &connection.source;
        let entity = |index: usize| Some(connection.entity_ids[index].as_str());
        match self {
            // Company events carry no data; one per entity.
            Change::Company => (0..connection.entity_ids.len())
                .map(|e| {
                    Outgoing::for_entity(
                        source,
                        entity(e),
                        &format!("{}.updated", Product::Company.permission()),
                        Value::Null,
                    )
                })
                .collect(),
            Change::Person {
                id,
                action,
                endpoints,
            } => endpoints
                .into_iter()
                .map(|endpoint| {
                    Outgoing::for_entity(
                        source,
                        entity(connection.entity_of_person(&id)),
                        &format!("{}.{action}", endpoint.permission()),
                        json!({ "individual_id": id }),
                    )
                })
                .collect(),
            Change::NewPayment(_) => Vec::new(),
            Change::PaymentEvent {
                id,
                pay_date,
                action,
                statements,
                entity: index,
            } => {
                let mut events = vec![Outgoing::for_entity(
                    source,
                    entity(index),
                    &format!("{}.{action}", Product::Payment.permission()),
                    json!({ "payment_id": id, "pay_date": webhook_pay_date(&pay_date) }),
                )];
                // One event per pay statement: a 20-person payrun gives 20.
                events.extend(statements.into_iter().map(|individual_id| {
                    Outgoing::for_entity(
                        source,
                        entity(index),
                        &format!("{}.{action}", Product::PayStatement.permission()),
                        json!({ "payment_id": id, "individual_id": individual_id }),
                    )
                }));
                events
            }
        }
    }
}

/// The Webhooks chapter shows a payment event's `pay_date` as `MM-DD-YYYY`
/// ("10-23-2023"), unlike the API's `YYYY-MM-DD`; we send what it shows.
fn webhook_pay_date(iso_date: &str) -> String {
    iso_date.parse::<NaiveDate>().map_or_else(
        |_| iso_date.to_owned(),
        |d| d.format("%m-%d-%Y").to_string(),
    )
}

/// Every change between two states, in the order Finch's chapter lists
/// endpoints: company, people (directory, individual, employment), payments.
pub fn diff(old: &Dataset, new: &Dataset) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.company != new.company {
        changes.push(Change::Company);
    }
    let old_people: HashMap<&str, &Arc<Person>> = old.people.iter().map(|p| (p.id(), p)).collect();
    let new_ids: HashSet<&str> = new.people.iter().map(|p| p.id()).collect();
    for person in &new.people {
        match old_people.get(person.id()) {
            // Untouched since the last sync: the very same record.
            Some(before) if Arc::ptr_eq(before, person) => {}
            None => changes.push(Change::Person {
                id: person.id().to_owned(),
                action: "created",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment],
            }),
            Some(before) => {
                let (before, after) = (before.record(), person.record());
                let mut endpoints = Vec::new();
                if before.directory_entry() != after.directory_entry() {
                    endpoints.push(Product::Directory);
                }
                if before.individual != after.individual {
                    endpoints.push(Product::Individual);
                }
                if before.employment != after.employment {
                    endpoints.push(Product::Employment);
                }
                if !endpoints.is_empty() {
                    changes.push(Change::Person {
                        id: person.id().to_owned(),
                        action: "updated",
                        endpoints,
                    });
                }
            }
        }
    }
    for person in &old.people {
        if !new_ids.contains(person.id()) {
            changes.push(Change::Person {
                id: person.id().to_owned(),
                action: "deleted",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment],
            });
        }
    }
    let old_payments: HashSet<&str> = old.payments.iter().map(|r| r.payment.id.as_str()).collect();
    let new_payments: HashSet<&str> = new.payments.iter().map(|r| r.payment.id.as_str()).collect();
    for record in &new.payments {
        if !old_payments.contains(record.payment.id.as_str()) {
            changes.push(Change::NewPayment(record.payment.id.clone()));
            changes.push(Change::payment_event(record, "created"));
        }
    }
    for record in &old.payments {
        if !new_payments.contains(record.payment.id.as_str()) {
            changes.push(Change::payment_event(record, "deleted"));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::super::seed;
    use super::*;

    fn dataset() -> Dataset {
        let mut rng = seed::stream(5, 5);
        let company = seed::company(&mut rng);
        let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
        let people: Vec<Arc<Person>> = seed::people(&mut rng, &company, 5, today)
            .into_iter()
            .map(Arc::new)
            .collect();
        let payments = vec![seed::payment(
            &mut rng,
            &people,
            seed::PayRun::paid_on(today),
        )];
        Dataset {
            company,
            people,
            payments,
        }
    }

    #[test]
    fn no_change_no_events() {
        let data = dataset();
        assert!(diff(&data, &data.clone()).is_empty());
    }

    #[test]
    fn a_new_hire_is_created_on_three_endpoints() {
        let old = dataset();
        let mut new = old.clone();
        let mut rng = seed::stream(5, 6);
        let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
        let hire = seed::new_hire(&mut rng, &new.company, &new.people, today);
        let id = hire.id().to_owned();
        new.people.push(Arc::new(hire));
        assert_eq!(
            diff(&old, &new),
            vec![Change::Person {
                id,
                action: "created",
                endpoints: vec![Product::Directory, Product::Individual, Product::Employment]
            }]
        );
    }

    #[test]
    fn a_title_change_is_an_employment_update_only() {
        let old = dataset();
        let mut new = old.clone();
        Arc::make_mut(&mut new.people[1]).employment.title = Some("Chief Vibes Officer".into());
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0], Change::Person { endpoints, .. } if endpoints == &vec![Product::Employment])
        );
    }

    #[test]
    fn compact_edits_touch_the_endpoints_they_change() {
        let old = dataset();
        let today = NaiveDate::from_ymd_opt(2025, 6, 16).unwrap();
        let mut new = old.clone();
        Arc::make_mut(&mut new.people[2]).terminate(today);
        assert!(new.people[2].profile().is_some(), "still compact");
        assert!(
            matches!(&diff(&old, &new)[..], [Change::Person { endpoints, .. }]
                if endpoints == &vec![Product::Directory, Product::Employment])
        );
        // Every kind of everyday edit shows on exactly one endpoint.
        let mut seen = HashSet::new();
        let mut rng = seed::stream(5, 7);
        for _ in 0..30 {
            let mut new = old.clone();
            seed::edit(&mut rng, Arc::make_mut(&mut new.people[3]));
            match &diff(&old, &new)[..] {
                [] => {}
                [Change::Person { endpoints, .. }] => {
                    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
                    seen.insert(endpoints[0]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            HashSet::from([Product::Individual, Product::Employment])
        );
    }

    #[test]
    fn a_compact_person_reads_the_same_every_time() {
        let data = dataset();
        let person = &data.people[1];
        let record = person.record().into_owned();
        assert_eq!(person.individual_body(), record.individual);
        assert_eq!(person.employment_body(), record.employment);
        assert_eq!(person.directory_entry(), record.directory_entry());
        assert_eq!(*Person::clone(person).record(), record);
        // Writing through the record keeps the rest of it.
        let mut stored = Person::clone(person);
        stored.employment.title = Some("Chief Vibes Officer".into());
        assert!(stored.profile().is_none());
        assert_eq!(stored.individual_body(), record.individual);
        assert_eq!(stored.id(), person.id());
    }

    #[test]
    fn webhook_pay_dates_follow_the_docs() {
        assert_eq!(webhook_pay_date("2023-10-23"), "10-23-2023");
    }
}
