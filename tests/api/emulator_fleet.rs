//! The emulator's fleet interface: the Finch clock and its scheduled
//! refreshes, connections from specs (assisted, multi-entity, pending first
//! syncs), scoped faults, lost webhooks, reconnects with new ids, snapshots
//! and the change log. Each test drives a frozen Finch clock by hand.

use std::collections::HashSet;
use std::time::Duration;

use finch_core::Product;
use finch_emulator::{
    ConnectionKind, ConnectionSpec, EmulatorConfig, FaultKind, FaultScope, PayFrequency,
    ProviderChange, RunningEmulator,
};
use reqwest::Client;
use serde_json::{json, Value};

use crate::emulator::{start, Capture, Delivery};

const VERSION: &str = "2020-09-17";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn frozen(webhook_urls: Vec<String>) -> EmulatorConfig {
    EmulatorConfig {
        connections: 0,
        freeze_clock: true,
        // A Monday at midnight, so the calendar in each test is fixed.
        start_at: Some("2026-03-02T00:00:00Z".parse().unwrap()),
        sync_duration: Duration::ZERO,
        pay_statement_delay: Duration::ZERO,
        rate_limit_scale: 0.0,
        webhook_urls,
        ..EmulatorConfig::default()
    }
}

async fn get(emulator: &RunningEmulator, token: &str, path: &str) -> reqwest::Response {
    Client::new()
        .get(format!("{}{path}", emulator.base_url()))
        .bearer_auth(token)
        .header("Finch-API-Version", VERSION)
        .send()
        .await
        .unwrap()
}

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn of_type(deliveries: &[Delivery], event_type: &str) -> usize {
    deliveries
        .iter()
        .filter(|d| d.event_type() == event_type)
        .count()
}

/// Lets the dispatcher send what the last `advance` emitted.
async fn settle(capture: &Capture, at_least: usize) -> Vec<Delivery> {
    capture
        .wait_until("the deliveries", |d| d.len() >= at_least)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    capture.deliveries()
}

#[tokio::test]
async fn daily_refreshes_publish_provider_changes_and_payrolls_on_the_finch_clock() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let added = emulator
        .add_connection(ConnectionSpec {
            pay_frequency: PayFrequency::Weekly,
            ..ConnectionSpec::automated(8)
        })
        .unwrap();
    let before = emulator.snapshot(&added.connection_id).unwrap();
    assert_eq!(before.entities.len(), 1);
    assert_eq!(before.entities[0].directory.len(), 8);
    let payments_before = before.entities[0].payments.len();
    // 90 days of weekly history by default.
    assert!((12..=14).contains(&payments_before), "{payments_before}");

    let hire = emulator
        .change_provider(&added.connection_id, ProviderChange::Hire)
        .unwrap()
        .unwrap();
    // Not served until Finch's refresh.
    assert_eq!(
        emulator.snapshot(&added.connection_id).unwrap().entities[0]
            .directory
            .len(),
        8
    );
    let start = emulator.now();
    assert_eq!(emulator.advance(7 * DAY), start + chrono::Duration::days(7));

    let after = emulator.snapshot(&added.connection_id).unwrap();
    assert_eq!(after.entities[0].directory.len(), 9);
    // One weekly payroll in seven days.
    assert_eq!(after.entities[0].payments.len(), payments_before + 1);
    let deliveries = settle(&capture, 1 + 7 + 3 + 2).await;
    // account.updated at creation, then seven daily job completions.
    assert_eq!(of_type(&deliveries, "account.updated"), 1);
    assert_eq!(of_type(&deliveries, "job.data_sync_all.completed"), 7);
    for product in ["directory", "individual", "employment"] {
        assert_eq!(of_type(&deliveries, &format!("{product}.created")), 1);
    }
    assert_eq!(of_type(&deliveries, "payment.created"), 1);
    let hired: Vec<Value> = deliveries
        .iter()
        .map(Delivery::json)
        .filter(|d| d["event_type"] == "directory.created")
        .collect();
    assert_eq!(hired[0]["data"]["individual_id"], json!(hire));
    assert_eq!(hired[0]["entity_id"], json!(added.entity_ids[0]));

    let log = emulator.change_log(0);
    let hire_records: Vec<_> = log.iter().filter(|r| r.item_id == hire).collect();
    assert_eq!(hire_records.len(), 3);
    assert!(hire_records
        .iter()
        .all(|r| r.announced && r.action == "created" && r.at > start));
    assert_eq!(
        log.iter()
            .filter(|r| r.product == "pay-statement" && r.announced)
            .count(),
        1
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn assisted_connections_change_weekly_without_webhooks_and_say_when_they_synced() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let added = emulator
        .add_connection(ConnectionSpec {
            // No payday in the week, so the hire is the only change.
            pay_frequency: PayFrequency::Monthly,
            ..ConnectionSpec::assisted(5)
        })
        .unwrap();
    emulator
        .change_provider(&added.connection_id, ProviderChange::Hire)
        .unwrap();
    let created_at = emulator.now();
    emulator.advance(7 * DAY);
    let snapshot = emulator.snapshot(&added.connection_id).unwrap();
    assert_eq!(snapshot.entities[0].directory.len(), 6);
    let refreshed = snapshot.data_retrieved.unwrap();
    assert!(refreshed > created_at && refreshed <= emulator.now());

    let response = get(&emulator, &added.access_token, "/employer/directory").await;
    let retrieved = response.headers()["finch-data-retrieved"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&retrieved).unwrap(),
        refreshed
    );
    let (_, introspection) =
        status_and_body(get(&emulator, &added.access_token, "/introspect").await).await;
    assert_eq!(introspection["manual"], json!(true));
    let method = &introspection["authentication_methods"][0];
    assert_eq!(method["type"], "assisted");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(
            method["connection_status"]["last_successful_sync"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        refreshed
    );

    // Only the creation's account.updated: no item events, no job completions.
    let deliveries = settle(&capture, 1).await;
    assert_eq!(
        deliveries.len(),
        1,
        "{:?}",
        deliveries
            .iter()
            .map(Delivery::event_type)
            .collect::<Vec<_>>()
    );
    let log = emulator.change_log(0);
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| !r.announced));
    emulator.shutdown().await;
}

#[tokio::test]
async fn multi_entity_connections_serve_one_named_entity_per_request() {
    let emulator = start(frozen(Vec::new())).await;
    let added = emulator
        .add_connection(ConnectionSpec {
            entities: 3,
            ..ConnectionSpec::automated(30)
        })
        .unwrap();
    assert_eq!(added.entity_ids.len(), 3);
    let token = &added.access_token;

    for path in [
        "/employer/directory",
        "/employer/company",
        "/employer/payment?start_date=2020-01-01&end_date=2100-01-01",
    ] {
        let (status, body) = status_and_body(get(&emulator, token, path).await).await;
        assert_eq!(
            (status, body["name"].as_str()),
            (400, Some("invalid_request_error")),
            "{path}"
        );
    }
    let two = format!(
        "/employer/directory?entity_ids[]={}&entity_ids[]={}",
        added.entity_ids[0], added.entity_ids[1]
    );
    assert_eq!(get(&emulator, token, &two).await.status(), 400);
    let unknown = "/employer/directory?entity_ids[]=00000000-0000-4000-8000-000000000000";
    assert_eq!(get(&emulator, token, unknown).await.status(), 400);

    let mut seen = HashSet::new();
    let snapshot = emulator.snapshot(&added.connection_id).unwrap();
    for (index, entity) in added.entity_ids.iter().enumerate() {
        let path = format!("/employer/directory?limit=1000&entity_ids[]={entity}");
        let (status, body) = status_and_body(get(&emulator, token, &path).await).await;
        assert_eq!(status, 200);
        let ids: Vec<String> = body["individuals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(body["paging"]["count"], json!(ids.len()));
        assert_eq!(snapshot.entities[index].entity_id, *entity);
        assert_eq!(snapshot.entities[index].directory.len(), ids.len());
        seen.extend(ids);
        // Each entity runs its own payroll.
        let payments = format!(
            "/employer/payment?start_date=2020-01-01&end_date=2100-01-01&entity_ids[]={entity}"
        );
        let (_, payments) = status_and_body(get(&emulator, token, &payments).await).await;
        assert_eq!(
            payments.as_array().unwrap().len(),
            snapshot.entities[index].payments.len()
        );
        assert!(!snapshot.entities[index].payments.is_empty());
    }
    assert_eq!(seen.len(), 30);
    let payment_ids: HashSet<&str> = snapshot
        .entities
        .iter()
        .flat_map(|e| &e.payments)
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let payments: usize = snapshot.entities.iter().map(|e| e.payments.len()).sum();
    assert_eq!(
        payment_ids.len(),
        payments,
        "payment ids are unique across entities"
    );
    let (_, introspection) = status_and_body(get(&emulator, token, "/introspect").await).await;
    assert_eq!(introspection["entities"].as_array().unwrap().len(), 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_pending_first_sync_answers_202_until_it_lands() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let added = emulator
        .add_connection(ConnectionSpec {
            first_sync_pending_for: Some(3 * DAY),
            ..ConnectionSpec::automated(4)
        })
        .unwrap();
    let token = &added.access_token;
    emulator.advance(2 * DAY);
    let (status, body) = status_and_body(get(&emulator, token, "/employer/directory").await).await;
    assert_eq!(
        (status, body["finch_code"].as_str()),
        (202, Some("pending"))
    );
    emulator.advance(DAY);
    assert_eq!(
        get(&emulator, token, "/employer/directory").await.status(),
        200
    );
    let deliveries = settle(&capture, 2).await;
    assert_eq!(of_type(&deliveries, "job.data_sync_all.completed"), 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_hit_their_scope_for_their_window_with_finch_bodies() {
    let emulator = start(frozen(Vec::new())).await;
    let a = emulator
        .add_connection(ConnectionSpec::automated(3))
        .unwrap();
    let b = emulator
        .add_connection(ConnectionSpec::automated(3))
        .unwrap();
    let payments = "/employer/payment?start_date=2020-01-01&end_date=2100-01-01";

    emulator.inject_fault(
        FaultScope::Product(Product::Payment),
        FaultKind::ApplicationRateLimit,
        Duration::from_secs(120),
    );
    let response = get(&emulator, &a.access_token, payments).await;
    assert_eq!(response.headers()["retry-after"], "120");
    let (status, body) = status_and_body(response).await;
    assert_eq!(
        (
            status,
            body["finch_code"].as_str(),
            body["statusCode"].as_u64()
        ),
        (429, Some("finch_application_rl"), Some(429))
    );
    assert_eq!(
        get(&emulator, &b.access_token, payments).await.status(),
        429
    );
    assert_eq!(
        get(&emulator, &a.access_token, "/employer/directory")
            .await
            .status(),
        200
    );
    emulator.advance(Duration::from_secs(120));
    assert_eq!(
        get(&emulator, &a.access_token, payments).await.status(),
        200
    );

    emulator.inject_fault(
        FaultScope::Connection(a.connection_id.clone()),
        FaultKind::UpstreamRateLimit,
        Duration::from_secs(600),
    );
    let (status, body) =
        status_and_body(get(&emulator, &a.access_token, "/employer/company").await).await;
    assert_eq!(
        (status, body["finch_code"].as_str()),
        (429, Some("upstream_rate_limit_exceeded"))
    );
    assert_eq!(
        get(&emulator, &b.access_token, "/employer/company")
            .await
            .status(),
        200
    );
    emulator.clear_faults();

    emulator.inject_fault(
        FaultScope::Application,
        FaultKind::IpRateLimit,
        Duration::from_secs(3600),
    );
    for token in [&a.access_token, &b.access_token] {
        let response = get(&emulator, token, "/employer/directory").await;
        assert_eq!(response.headers()["retry-after"], "3600");
        let (_, body) = status_and_body(response).await;
        assert_eq!(body["finch_code"], "finch_api_ip_rl");
    }
    emulator.clear_faults();

    for (kind, status, finch_code) in [
        (FaultKind::ServerError, 500, None),
        (FaultKind::BadGateway, 502, Some("upstream_provider_error")),
        (FaultKind::Reauthenticate, 401, Some("reauthenticate_user")),
        (
            FaultKind::AccountSetupRequired,
            401,
            Some("account_setup_required"),
        ),
        (
            FaultKind::InsufficientPermissions,
            403,
            Some("insufficient_account_permissions"),
        ),
    ] {
        emulator.inject_fault(
            FaultScope::Connection(b.connection_id.clone()),
            kind,
            Duration::from_secs(60),
        );
        let (got, body) =
            status_and_body(get(&emulator, &b.access_token, "/employer/company").await).await;
        assert_eq!(
            (got, body["finch_code"].as_str()),
            (status, finch_code),
            "{kind:?}"
        );
        emulator.advance(Duration::from_secs(60));
        assert_eq!(
            get(&emulator, &b.access_token, "/employer/company")
                .await
                .status(),
            200
        );
    }
    let stats = emulator.stats();
    assert_eq!(stats.rate_limited_by_code["finch_application_rl"], 2);
    assert_eq!(
        stats.rate_limited_by_code["upstream_rate_limit_exceeded"],
        1
    );
    assert_eq!(stats.rate_limited_by_code["finch_api_ip_rl"], 2);
    assert_eq!(stats.data_requests_by_connection[&a.connection_id], 5);
    emulator.shutdown().await;
}

#[tokio::test]
async fn rate_limit_windows_run_on_finch_time() {
    let emulator = start(EmulatorConfig {
        rate_limit_scale: 0.1,
        ..frozen(Vec::new())
    })
    .await;
    let a = emulator
        .add_connection(ConnectionSpec::automated(3))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            get(&emulator, &a.access_token, "/employer/company")
                .await
                .status(),
            200
        );
    }
    let response = get(&emulator, &a.access_token, "/employer/company").await;
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(response.status(), 429);
    // A frozen clock: no wall-clock wait lets it through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(&emulator, &a.access_token, "/employer/company")
            .await
            .status(),
        429
    );
    emulator.advance(Duration::from_secs(60));
    assert_eq!(
        get(&emulator, &a.access_token, "/employer/company")
            .await
            .status(),
        200
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn lost_webhooks_leave_the_change_unannounced_in_the_log() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let added = emulator
        .add_connection(ConnectionSpec::automated(5))
        .unwrap();
    let snapshot = emulator.snapshot(&added.connection_id).unwrap();
    let victim = snapshot.entities[0].directory[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = snapshot.entities[0].directory[2]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    emulator.lose_webhooks(&added.connection_id, 1).unwrap();
    for id in [&victim, &kept] {
        emulator
            .change_provider(
                &added.connection_id,
                ProviderChange::Retitle {
                    individual_id: id.clone(),
                    title: "Chief Vibes Officer".into(),
                },
            )
            .unwrap();
    }
    emulator
        .change_provider(
            &added.connection_id,
            ProviderChange::Delete {
                individual_id: snapshot.entities[0].directory[3]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            },
        )
        .unwrap();
    emulator.advance(DAY);
    // account.updated, one retitle announced, three deletion events, one job completion.
    let deliveries = settle(&capture, 6).await;
    assert_eq!(of_type(&deliveries, "employment.updated"), 1);
    assert_eq!(of_type(&deliveries, "directory.deleted"), 1);
    let updated: Vec<Value> = deliveries
        .iter()
        .map(Delivery::json)
        .filter(|d| d["event_type"] == "employment.updated")
        .collect();
    assert_eq!(updated[0]["data"]["individual_id"], json!(kept));
    let log = emulator.change_log(0);
    let lost: Vec<_> = log.iter().filter(|r| !r.announced).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        (lost[0].item_id.as_str(), lost[0].product.as_str()),
        (victim.as_str(), "employment")
    );
    assert_eq!(log.iter().filter(|r| r.action == "deleted").count(), 3);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_with_new_ids_replaces_every_id_unannounced() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let added = emulator
        .add_connection(ConnectionSpec::automated(6))
        .unwrap();
    let ids = |snapshot: &finch_emulator::Snapshot| -> (HashSet<String>, HashSet<String>) {
        let entity = &snapshot.entities[0];
        (
            entity
                .directory
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect(),
            entity
                .payments
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect(),
        )
    };
    let (people, payments) = ids(&emulator.snapshot(&added.connection_id).unwrap());
    let token = emulator
        .reconnect_with_new_ids(&added.connection_id)
        .unwrap();
    let after = emulator.snapshot(&added.connection_id).unwrap();
    let (new_people, new_payments) = ids(&after);
    assert_eq!(
        (new_people.len(), new_payments.len()),
        (people.len(), payments.len())
    );
    assert!(people.is_disjoint(&new_people));
    assert!(payments.is_disjoint(&new_payments));
    // Managers follow their people.
    for person in &after.entities[0].directory {
        if let Some(manager) = person["manager"]["id"].as_str() {
            assert!(new_people.contains(manager));
        }
    }
    for statements in after.entities[0].pay_statements.values() {
        for statement in statements {
            assert!(new_people.contains(statement["individual_id"].as_str().unwrap()));
        }
    }
    assert_eq!(
        get(&emulator, &token, "/employer/company").await.status(),
        200
    );
    let log = emulator.change_log(0);
    assert!(!log.is_empty() && log.iter().all(|r| !r.announced));
    assert_eq!(
        log.iter()
            .filter(|r| r.product == "directory" && r.action == "deleted")
            .count(),
        6
    );
    let deliveries = settle(&capture, 2).await;
    assert_eq!(of_type(&deliveries, "account.updated"), 2);
    assert_eq!(deliveries.len(), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_http_twins_drive_the_same_controls() {
    let emulator = start(frozen(Vec::new())).await;
    let http = Client::new();
    let url = |path: &str| format!("{}{path}", emulator.base_url());

    let refused = http
        .post(url("/_emulator/connections"))
        .json(&json!({"kind": "automated", "employees": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "creating needs the client credentials"
    );
    let bad = http
        .post(url("/_emulator/connections"))
        .basic_auth(emulator.client_id(), Some(emulator.client_secret()))
        .json(&json!({"kind": "automated", "employees": 4, "entities": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let added: Value = http
        .post(url("/_emulator/connections"))
        .basic_auth(emulator.client_id(), Some(emulator.client_secret()))
        .json(&json!({
            "kind": "assisted",
            "employees": 4,
            "entities": 2,
            "pay_frequency": "semi_monthly",
            "first_sync_pending_for": "2days",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = added["connection_id"].as_str().unwrap();
    assert_eq!(added["entity_ids"].as_array().unwrap().len(), 2);

    let before: Value = http
        .get(url("/_emulator/clock"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after: Value = http
        .post(url("/_emulator/clock/advance"))
        .json(&json!({"seconds": 2 * 86_400}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let elapsed = chrono::DateTime::parse_from_rfc3339(after["now"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(before["now"].as_str().unwrap()).unwrap();
    assert_eq!(elapsed, chrono::Duration::days(2));

    let fault = http
        .post(url("/_emulator/faults"))
        .json(&json!({"scope": {"type": "product", "value": "pay_statement"}, "kind": "server_error", "seconds": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 200);
    let faults: Value = fault.json().await.unwrap();
    assert_eq!(faults[0]["scope"]["value"], "pay-statement");

    let change: Value = http
        .post(url(&format!("/_emulator/connections/{id}/changes")))
        .json(&json!({"type": "hire"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(change["created_id"].is_string());
    let snapshot: Value = http
        .get(url(&format!("/_emulator/connections/{id}/snapshot")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let people: usize = snapshot["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["directory"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        people, 4,
        "the first sync landed; the hire waits for a refresh"
    );
    let unknown = http
        .get(url("/_emulator/connections/nope/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let changes: Value = http
        .get(url("/_emulator/changes?since=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changes.as_array().unwrap().len(), 0);
    let kind = ConnectionKind::Assisted;
    assert_eq!(serde_json::to_value(kind).unwrap(), "assisted");
    emulator.shutdown().await;
}

#[tokio::test]
async fn pace_and_rate_limits_change_while_the_emulator_runs() {
    let emulator = start(frozen(Vec::new())).await;
    let http = Client::new();
    let url = |path: &str| format!("{}{path}", emulator.base_url());
    let a = emulator
        .add_connection(ConnectionSpec::automated(3))
        .unwrap();

    // Limits off: a warm-up burst goes through whole.
    for _ in 0..25 {
        let status = get(&emulator, &a.access_token, "/employer/company")
            .await
            .status();
        assert_eq!(status, 200);
    }
    let limits: Value = http
        .post(url("/_emulator/rate-limits"))
        .json(&json!({"scale": 0.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["per_minute"]["company"], 2);
    assert_eq!(limits["per_minute"]["pay-statement"], 1);
    let statuses = futures_statuses(&emulator, &a.access_token, 3).await;
    assert_eq!(statuses, vec![200, 200, 429]);
    let refused = http
        .post(url("/_emulator/rate-limits"))
        .json(&json!({"scale": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    emulator.set_rate_limit_scale(0.0);
    assert_eq!(
        futures_statuses(&emulator, &a.access_token, 3).await,
        vec![200; 3]
    );

    // The frozen clock starts running at the new pace from where it stood.
    let frozen_at = emulator.now();
    let clock: Value = http
        .post(url("/_emulator/clock/pace"))
        .json(&json!({"time_scale": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock["frozen"], false);
    assert_eq!(clock["time_scale"], 3600.0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ran = emulator.now() - frozen_at;
    assert!(ran >= chrono::Duration::minutes(5), "{ran}");
    assert!(ran < chrono::Duration::days(1), "{ran}");
    emulator.set_time_scale(0.0);
    assert_eq!(emulator.time_scale(), 0.0);
    let stopped_at = emulator.now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(emulator.now(), stopped_at);
    emulator.shutdown().await;
}

async fn futures_statuses(emulator: &RunningEmulator, token: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(
            get(emulator, token, "/employer/company")
                .await
                .status()
                .as_u16(),
        );
    }
    statuses
}

#[tokio::test]
async fn stopped_refreshes_change_nothing_more_and_leave_no_schedule() {
    let capture = Capture::start(0).await;
    let emulator = start(frozen(vec![capture.url.clone()])).await;
    let automated = emulator
        .add_connection(ConnectionSpec::automated(40))
        .unwrap();
    let assisted = emulator
        .add_connection(ConnectionSpec::assisted(40))
        .unwrap();
    emulator.advance(Duration::from_secs(60));
    let schedule = emulator.next_refreshes();
    assert_eq!(schedule.len(), 2, "{schedule:?}");
    let now = emulator.now();
    assert!(schedule[&automated.connection_id] <= now + chrono::Duration::days(1));
    assert!(schedule[&assisted.connection_id] <= now + chrono::Duration::days(7));
    assert!(schedule[&assisted.connection_id] > schedule[&automated.connection_id]);

    emulator.advance(3 * DAY);
    let syncs_while_running = emulator.stats().syncs;
    assert!(syncs_while_running >= 3, "{syncs_while_running}");
    let changes_while_running = emulator.change_log(0).len();

    let stopped: Value = Client::new()
        .post(format!("{}/_emulator/refreshes/stop", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["refreshes"], "stopped");
    emulator.advance(14 * DAY);
    assert_eq!(emulator.stats().syncs, syncs_while_running);
    assert_eq!(emulator.change_log(0).len(), changes_while_running);
    assert!(emulator.next_refreshes().is_empty());

    capture
        .wait_until("every delivery", |_| emulator.webhooks_pending() == 0)
        .await;
    let stats = emulator.stats();
    assert!(stats.webhooks.emitted > 0);
    assert_eq!(stats.webhooks.delivered, stats.webhooks.emitted);
    emulator.shutdown().await;
}
