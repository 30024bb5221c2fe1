//! The emulator's behaviours, each checked against a running in-process emulator.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use finch_emulator::{Emulator, EmulatorConfig, RunningEmulator, SendArgs};
use finch_webhooks::signature::{Verifier, WebhookSecret};
use reqwest::{Client, Response};
use serde_json::{json, Value};

const VERSION: &str = "2020-09-17";
const WAIT: Duration = Duration::from_secs(20);

/// One request the capture server received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }

    pub fn event_type(&self) -> String {
        self.json()["event_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn event_id(&self) -> String {
        self.headers["finch-event-id"].to_str().unwrap().to_owned()
    }
}

/// A webhook receiver that records every delivery and refuses the first
/// `fail_first` of them with a 500 (or all of them, with `usize::MAX`).
#[derive(Clone)]
pub struct Capture {
    pub url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Capture {
    pub async fn start(fail_first: usize) -> Self {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let (d, f) = (deliveries.clone(), fail.clone());
        let app = axum::Router::new().route(
            "/webhooks",
            post(move |headers: HeaderMap, body: Bytes| {
                let (d, f) = (d.clone(), f.clone());
                async move {
                    d.lock().unwrap().push(Delivery { headers, body });
                    let refused = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            (n > 0).then(|| if n == usize::MAX { n } else { n - 1 })
                        })
                        .is_ok();
                    if refused {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            deliveries,
            fail_first: fail,
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn accept_all(&self) {
        self.fail_first.store(0, Ordering::SeqCst);
    }

    /// Waits until `done` holds for the deliveries so far, or fails the test.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.deliveries();
            if done(&got) {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                let types: Vec<String> = got.iter().map(Delivery::event_type).collect();
                panic!("timed out waiting for {what}; got {types:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn test_config() -> EmulatorConfig {
    EmulatorConfig {
        connections: 1,
        sync_duration: Duration::ZERO,
        ..EmulatorConfig::default()
    }
}

pub async fn start(config: EmulatorConfig) -> RunningEmulator {
    Emulator::start(config).await.expect("the emulator starts")
}

struct Api<'a> {
    http: Client,
    emulator: &'a RunningEmulator,
}

impl<'a> Api<'a> {
    fn new(emulator: &'a RunningEmulator) -> Self {
        Self {
            http: Client::new(),
            emulator,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.base_url())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("Finch-API-Version", VERSION);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the emulator answers")
    }

    async fn get(&self, token: &str, path: &str) -> Response {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Response {
        self.call(reqwest::Method::POST, token, path, Some(body))
            .await
    }

    async fn put(&self, token: &str, path: &str, body: Value) -> Response {
        self.call(reqwest::Method::PUT, token, path, Some(body))
            .await
    }

    /// Basic client credentials, as the sandbox connection endpoints take.
    async fn post_basic(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .basic_auth(
                self.emulator.client_id(),
                Some(self.emulator.client_secret()),
            )
            .header("Finch-API-Version", VERSION)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn new_connection(&self, body: Value) -> Value {
        let response = self.post_basic("/sandbox/connections", body).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Runs a sandbox sync and waits until its job is complete.
    async fn sync(&self, token: &str) -> String {
        let response = self
            .post(token, "/sandbox/jobs", json!({"type": "data_sync_all"}))
            .await;
        assert_eq!(response.status(), 200);
        let job: Value = response.json().await.unwrap();
        let job_id = job["job_id"].as_str().unwrap().to_owned();
        self.wait_for_job(token, &job_id).await;
        job_id
    }

    async fn wait_for_job(&self, token: &str, job_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let job: Value = self
                .get(token, &format!("/jobs/automated/{job_id}"))
                .await
                .json()
                .await
                .unwrap();
            if job["completed_at"].is_string() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} never completed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn error_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn token(emulator: &RunningEmulator) -> String {
    emulator.connections()[0].access_token.clone()
}

#[tokio::test]
async fn directory_pages_with_limit_and_offset_and_carries_data_headers() {
    let emulator = start(EmulatorConfig {
        employees: 25,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let mut ids = Vec::new();
    for offset in [0, 10, 20] {
        let response = api
            .get(
                &token,
                &format!("/employer/directory?limit=10&offset={offset}"),
            )
            .await;
        assert_eq!(response.status(), 200);
        for header in [
            "finch-request-id",
            "finch-data-retrieved",
            "finch-last-attempted-update-date",
        ] {
            assert!(response.headers().contains_key(header), "missing {header}");
        }
        assert_eq!(
            response.headers()["finch-last-attempted-update-result"],
            "success"
        );
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["paging"], json!({"count": 25, "offset": offset}));
        ids.extend(
            page["individuals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(ids.len(), 25);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25);
    emulator.shutdown().await;
}

#[tokio::test]
async fn requests_need_a_known_token_and_an_api_version() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);

    let response = api
        .http
        .get(api.url("/employer/company"))
        .header("Finch-API-Version", VERSION)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("finch-request-id"));
    let (status, body) = error_of(response).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (401, Some("unauthorized_request_error"))
    );

    let (status, body) = error_of(api.get("not-a-token", "/employer/company").await).await;
    assert_eq!(status, 401);
    assert_eq!(body["name"], "invalid_token_error");
    assert_eq!(body["code"], 401);
    assert!(body["message"].is_string());

    let response = api
        .http
        .get(api.url("/employer/company"))
        .bearer_auth(token(&emulator))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(
        (status, body["finch_code"].as_str()),
        (400, Some("invalid_request"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn batch_endpoints_answer_per_item_404_for_unknown_ids() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let directory: Value = api
        .get(&token, "/employer/directory")
        .await
        .json()
        .await
        .unwrap();
    let known = directory["individuals"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let requests = json!({"requests": [{"individual_id": known}, {"individual_id": unknown}]});
    for path in ["/employer/individual", "/employer/employment"] {
        let response = api.post(&token, path, requests.clone()).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        let responses = body["responses"].as_array().unwrap();
        assert_eq!(responses[0]["code"], 200);
        assert_eq!(responses[0]["body"]["id"], known.as_str());
        assert_eq!(responses[1]["code"], 404);
        assert_eq!(responses[1]["individual_id"], unknown);
        assert_eq!(responses[1]["body"]["name"], "not_found_error");
        assert_eq!(responses[1]["body"]["finch_code"], "individual_not_found");
    }
    let employment: Value = api
        .post(
            &token,
            "/employer/employment",
            json!({"requests": [{"individual_id": known}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let manager = employment["responses"][0]["body"]["manager"]["id"]
        .as_str()
        .expect("has a manager");
    assert!(directory["individuals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == manager));

    let (status, body) = error_of(
        api.post(&token, "/employer/individual", json!({"nope": 1}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["finch_code"].as_str()),
        (400, Some("invalid_request"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn assisted_connection_answers_202_until_connected() {
    let capture = Capture::start(0).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let connection = api
        .new_connection(json!({"provider_id": "paychex_flex", "authentication_type": "assisted"}))
        .await;
    let token = connection["access_token"].as_str().unwrap();

    let (status, body) = error_of(api.get(token, "/employer/directory").await).await;
    assert_eq!(status, 202);
    assert_eq!(body["name"], "authorization_pending");
    assert_eq!(body["finch_code"], "pending");
    let introspection: Value = api.get(token, "/introspect").await.json().await.unwrap();
    assert_eq!(introspection["connection_status"]["status"], "pending");
    assert_eq!(introspection["manual"], true);

    let response = api
        .put(
            token,
            "/sandbox/connections/accounts",
            json!({"connection_status": "connected"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = api.get(token, "/employer/directory").await;
    assert_eq!(response.status(), 200);
    let directory: Value = response.json().await.unwrap();
    assert_eq!(directory["individuals"].as_array().unwrap().len(), 20);

    let updates = capture
        .wait_until("two account.updated events", |d| d.len() >= 2)
        .await;
    // Delivery order is not guaranteed, as with Finch.
    let statuses: HashSet<String> = updates
        .iter()
        .map(|d| d.json()["data"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        HashSet::from(["pending".to_owned(), "connected".to_owned()])
    );
    for update in &updates {
        let body = update.json();
        assert_eq!(body["event_type"], "account.updated");
        assert_eq!(body["connection_id"], connection["connection_id"]);
        assert_eq!(body["data"]["authentication_method"]["type"], "assisted");
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn new_payment_statements_answer_202_then_200() {
    let emulator = start(EmulatorConfig {
        pay_statement_delay: Duration::from_secs(4),
        // Polling would otherwise run into the 12/min pay-statement limit.
        rate_limit_scale: 0.0,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let created: Value = api
        .post(&token, "/sandbox/payment", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let payment_id = created["payment_id"].as_str().unwrap();
    let pay_date = created["pay_date"].as_str().unwrap();
    let range = format!("/employer/payment?start_date={pay_date}&end_date={pay_date}");

    // Sandbox changes are invisible until a sync.
    let before: Value = api.get(&token, &range).await.json().await.unwrap();
    assert!(before
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != payment_id));
    api.sync(&token).await;
    let after: Value = api.get(&token, &range).await.json().await.unwrap();
    let payment = after
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == payment_id)
        .expect("the payment is synced")
        .clone();

    let request = json!({"requests": [{"payment_id": payment_id, "limit": 3}]});
    let body: Value = api
        .post(&token, "/employer/pay-statement", request.clone())
        .await
        .json()
        .await
        .unwrap();
    let item = &body["responses"][0];
    assert_eq!(item["code"], 202);
    assert_eq!(item["body"]["finch_code"], "data_sync_in_progress");
    assert_eq!(item["body"]["name"], "accepted");

    let deadline = tokio::time::Instant::now() + WAIT;
    let item = loop {
        let body: Value = api
            .post(&token, "/employer/pay-statement", request.clone())
            .await
            .json()
            .await
            .unwrap();
        if body["responses"][0]["code"] == 200 {
            break body["responses"][0].clone();
        }
        assert_eq!(body["responses"][0]["code"], 202);
        assert!(
            tokio::time::Instant::now() < deadline,
            "statements never became ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let employees = payment["individual_ids"].as_array().unwrap().len();
    assert_eq!(
        item["body"]["paging"],
        json!({"count": employees, "offset": 0})
    );
    assert_eq!(
        item["body"]["pay_statements"].as_array().unwrap().len(),
        3.min(employees)
    );
    let gross: i64 = payment["gross_pay"]["amount"].as_i64().unwrap();
    assert!(gross > 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn reauth_status_answers_401_until_the_user_reconnects() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let response = api
        .put(
            &token,
            "/sandbox/connections/accounts",
            json!({"connection_status": "reauth"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (status, body) = error_of(api.get(&token, "/employer/company").await).await;
    assert_eq!(status, 401);
    assert_eq!(body["name"], "authentication_error");
    assert_eq!(body["finch_code"], "reauthenticate_user");
    let introspection: Value = api.get(&token, "/introspect").await.json().await.unwrap();
    assert_eq!(introspection["connection_status"]["status"], "reauth");

    // Reconnecting through "Connect" yields a code for a new token and repairs the connection.
    let connection_id = &emulator.connections()[0].connection_id;
    let code: Value = api
        .post_basic(
            "/_emulator/authorize",
            json!({"connection_id": connection_id}),
        )
        .await
        .json()
        .await
        .unwrap();
    let exchanged: Value = api
        .http
        .post(api.url("/auth/token"))
        .header("Finch-API-Version", VERSION)
        .json(&json!({"code": code["code"], "client_id": emulator.client_id(), "client_secret": emulator.client_secret()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_token = exchanged["access_token"].as_str().unwrap();
    assert_ne!(new_token, token);
    assert_eq!(api.get(new_token, "/employer/company").await.status(), 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn auth_token_exchanges_each_code_once() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);
    let seeded = &emulator.connections()[0];
    let exchange = |code: String, secret: String| {
        let api = &api;
        async move {
            api.http
                .post(api.url("/auth/token"))
                .header("Finch-API-Version", VERSION)
                .json(&json!({"code": code, "client_id": api.emulator.client_id(), "client_secret": secret}))
                .send()
                .await
                .unwrap()
        }
    };
    let (status, body) =
        error_of(exchange(seeded.authorization_code.clone(), "wrong".into()).await).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (401, Some("invalid_client_error"))
    );

    let response = exchange(
        seeded.authorization_code.clone(),
        emulator.client_secret().into(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["connection_id"], seeded.connection_id.as_str());
    assert_eq!(body["token_type"], "bearer");
    let introspection: Value = api
        .get(body["access_token"].as_str().unwrap(), "/introspect")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        introspection["connection_id"],
        seeded.connection_id.as_str()
    );
    assert_eq!(introspection["client_id"], emulator.client_id());

    let (status, body) = error_of(
        exchange(
            seeded.authorization_code.clone(),
            emulator.client_secret().into(),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["name"].as_str()),
        (400, Some("invalid_grant_error"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn disconnect_revokes_the_connections_tokens() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let body: Value = api
        .post(&token, "/disconnect", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success");
    let (status, body) = error_of(api.get(&token, "/employer/company").await).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (401, Some("invalid_token_error"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn rate_limits_answer_429_finch_application_rl_per_product() {
    // 0.1 of 20/min is 2 requests per product per window.
    let emulator = start(EmulatorConfig {
        rate_limit_scale: 0.1,
        connections: 2,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let first = emulator.connections()[0].access_token.clone();
    let second = emulator.connections()[1].access_token.clone();
    assert_eq!(api.get(&first, "/employer/company").await.status(), 200);
    // Limits are per application: another token shares the bucket.
    assert_eq!(api.get(&second, "/employer/company").await.status(), 200);
    let response = api.get(&first, "/employer/company").await;
    // Until the oldest request leaves the 60-second window.
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(body["name"], "rate_limit_exceeded_error");
    assert_eq!(body["finch_code"], "finch_application_rl");
    // Another product has its own bucket.
    assert_eq!(api.get(&first, "/employer/directory").await.status(), 200);

    let stats: Value = api
        .http
        .get(api.url("/_emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rate_limited"], 1);
    assert_eq!(stats["rate_limited_by_product"]["company"], 1);
    assert_eq!(stats["requests"]["GET /employer/company"]["429"], 1);
    assert_eq!(stats["requests"]["GET /employer/company"]["200"], 2);
    assert_eq!(emulator.stats().rate_limited, 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn fault_injection_serves_500s_and_502s() {
    let emulator = start(EmulatorConfig {
        error_rate: 1.0,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let (status, body) = error_of(api.get(&token, "/employer/company").await).await;
    assert_eq!((status, body["name"].as_str()), (500, Some("server_error")));
    // Sandbox and management endpoints are not faulted, so tests can set up state.
    assert_eq!(api.get(&token, "/introspect").await.status(), 200);
    assert_eq!(emulator.stats().injected_500, 1);
    emulator.shutdown().await;

    let emulator = start(EmulatorConfig {
        upstream_error_rate: 1.0,
        latency: Duration::from_millis(50),
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let started = std::time::Instant::now();
    let (status, body) = error_of(api.get(&token_of(&emulator), "/employer/directory").await).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(status, 502);
    assert_eq!(body["name"], "bad_gateway_error");
    assert_eq!(body["finch_code"], "upstream_provider_error");
    assert_eq!(emulator.stats().injected_502, 1);
    emulator.shutdown().await;
}

fn token_of(emulator: &RunningEmulator) -> String {
    token(emulator)
}

fn verifier(emulator: &RunningEmulator) -> Verifier {
    let secrets = emulator
        .webhook_secrets()
        .iter()
        .map(|s| WebhookSecret::parse(s).unwrap())
        .collect();
    Verifier::new(secrets, 300)
}

fn verify(verifier: &Verifier, delivery: &Delivery) {
    assert_eq!(delivery.headers["content-type"], "application/json");
    let now = chrono::Utc::now().timestamp();
    let verified = verifier
        .verify(&delivery.headers, &delivery.body, now)
        .expect("the delivery verifies");
    assert!(verified.event_id.starts_with("msg_"));
}

#[tokio::test]
async fn sync_emits_one_signed_webhook_per_changed_item_then_job_completion() {
    let capture = Capture::start(0).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let seeded = emulator.connections()[0].clone();
    let directory: Value = api
        .get(&token, "/employer/directory")
        .await
        .json()
        .await
        .unwrap();
    let someone = directory["individuals"][3]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let hires: Value = api
        .post(
            &token,
            "/sandbox/directory",
            json!([{"first_name": "Ada", "last_name": "Lovelace"}, {}]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(hires[0]["first_name"], "Ada");
    let hire_ids: Vec<String> = hires
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect();
    let response = api
        .put(
            &token,
            &format!("/sandbox/employment/{someone}"),
            json!({"title": "Principal Engineer"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = api
        .put(
            &token,
            "/sandbox/company",
            json!({"primary_email": "people@example.com"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let payment: Value = api
        .post(&token, "/sandbox/payment", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let payment_id = payment["payment_id"].as_str().unwrap().to_owned();

    // Nothing is announced before the sync runs.
    assert_eq!(emulator.stats().webhooks.emitted, 0);
    let job_id = api.sync(&token).await;

    let pay_date = payment["pay_date"].as_str().unwrap();
    let payments: Value = api
        .get(
            &token,
            &format!("/employer/payment?start_date={pay_date}&end_date={pay_date}"),
        )
        .await
        .json()
        .await
        .unwrap();
    let paid: Vec<String> = payments
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == payment_id.as_str())
        .unwrap()["individual_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_owned())
        .collect();

    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (event, n) in [
        ("company.updated", 1),
        ("directory.created", 2),
        ("individual.created", 2),
        ("employment.created", 2),
        ("employment.updated", 1),
        ("payment.created", 1),
        ("pay_statement.created", paid.len()),
        ("job.data_sync_all.completed", 1),
    ] {
        expected.insert(event.to_owned(), n);
    }
    let total: usize = expected.values().sum();
    let deliveries = capture
        .wait_until("every sync event", |d| d.len() >= total)
        .await;
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for delivery in &deliveries {
        *got.entry(delivery.event_type()).or_default() += 1;
    }
    assert_eq!(got, expected);
    assert_eq!(emulator.stats().webhooks.emitted, total as u64);

    let verifier = verifier(&emulator);
    let ids: HashSet<String> = deliveries.iter().map(Delivery::event_id).collect();
    assert_eq!(ids.len(), total, "event ids are unique");
    for delivery in &deliveries {
        verify(&verifier, delivery);
        let body = delivery.json();
        assert_eq!(body["connection_id"], seeded.connection_id.as_str());
        assert_eq!(body["company_id"], seeded.company_id.as_str());
        assert_eq!(body["account_id"], seeded.account_id.as_str());
        match body["event_type"].as_str().unwrap() {
            "directory.created" | "individual.created" | "employment.created" => {
                assert!(hire_ids
                    .iter()
                    .any(|h| body["data"]["individual_id"] == h.as_str()));
            }
            "employment.updated" => assert_eq!(body["data"]["individual_id"], someone.as_str()),
            "company.updated" => assert!(body["data"].is_null()),
            "payment.created" => {
                assert_eq!(body["data"]["payment_id"], payment_id.as_str());
                let date = chrono::NaiveDate::parse_from_str(pay_date, "%Y-%m-%d").unwrap();
                assert_eq!(
                    body["data"]["pay_date"],
                    date.format("%m-%d-%Y").to_string()
                );
            }
            "pay_statement.created" => {
                assert_eq!(body["data"]["payment_id"], payment_id.as_str());
                assert!(paid
                    .iter()
                    .any(|p| body["data"]["individual_id"] == p.as_str()));
            }
            "job.data_sync_all.completed" => {
                let job_url = format!("{}/jobs/automated/{job_id}", emulator.base_url());
                assert_eq!(body["data"]["job_id"], job_id.as_str());
                assert_eq!(body["data"]["job_url"], job_url.as_str());
                let job: Value = api
                    .http
                    .get(&job_url)
                    .bearer_auth(&token)
                    .header("Finch-API-Version", VERSION)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(job["status"], "complete");
                assert_eq!(job["type"], "data_sync_all");
            }
            other => panic!("unexpected event {other}"),
        }
    }

    // A sync with no changes announces only the job.
    let before = emulator.stats().webhooks.emitted;
    api.sync(&token).await;
    capture
        .wait_until("the second job event", |d| d.len() > total)
        .await;
    assert_eq!(emulator.stats().webhooks.emitted, before + 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_signed_with_every_secret() {
    let capture = Capture::start(0).await;
    let (_, old) = WebhookSecret::generate();
    let (_, new) = WebhookSecret::generate();
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        webhook_secrets: vec![old.clone(), new.clone()],
        ..test_config()
    })
    .await;
    emulator.send_test_webhook(None).expect("a test event");
    let deliveries = capture
        .wait_until("the test event", |d| !d.is_empty())
        .await;
    let signature = deliveries[0].headers["finch-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(signature.split(' ').count(), 2);
    for secret in [old, new] {
        let only = Verifier::new(vec![WebhookSecret::parse(&secret).unwrap()], 300);
        verify(&only, &deliveries[0]);
    }
    assert_eq!(deliveries[0].event_type(), "test");
    emulator.shutdown().await;
}

#[tokio::test]
async fn refused_deliveries_are_retried_with_the_same_event_id() {
    let capture = Capture::start(2).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        // Compresses the 5 s retry to 5 ms.
        time_scale: 1000.0,
        ..test_config()
    })
    .await;
    let event_id = emulator.send_test_webhook(None).unwrap();
    let deliveries = capture.wait_until("three attempts", |d| d.len() >= 3).await;
    assert!(deliveries.iter().all(|d| d.event_id() == event_id));
    let verifier = verifier(&emulator);
    for delivery in &deliveries {
        verify(&verifier, delivery);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while emulator.stats().webhooks.delivered < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = emulator.stats().webhooks;
    assert_eq!(
        (stats.attempts, stats.retried, stats.delivered, stats.failed),
        (3, 2, 1, 0)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_given_up_after_the_whole_schedule() {
    let capture = Capture::start(usize::MAX).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        // Two hours become 72 ms.
        time_scale: 100_000.0,
        ..test_config()
    })
    .await;
    emulator.send_test_webhook(None).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while emulator.stats().webhooks.failed < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never gave up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = emulator.stats().webhooks;
    // A first attempt and the five retries of Finch's schedule.
    assert_eq!((stats.attempts, stats.retried, stats.delivered), (6, 5, 0));
    assert_eq!(capture.deliveries().len(), 6);
    capture.accept_all();
    emulator.shutdown().await;
}

#[tokio::test]
async fn duplicate_rate_one_delivers_every_event_twice() {
    let capture = Capture::start(0).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        duplicate_rate: 1.0,
        shuffle: true,
        ..test_config()
    })
    .await;
    let event_id = emulator.send_test_webhook(None).unwrap();
    let deliveries = capture.wait_until("two copies", |d| d.len() >= 2).await;
    assert!(deliveries.iter().all(|d| d.event_id() == event_id));
    assert_eq!(emulator.stats().webhooks.duplicated, 1);
    emulator.shutdown().await;
}

#[tokio::test]
async fn jobs_run_one_at_a_time_within_the_hourly_quota() {
    let emulator = start(EmulatorConfig {
        // Long enough that the second request surely finds the job still running.
        sync_duration: Duration::from_secs(2),
        refreshes_per_hour: 1,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let first: Value = api
        .post(&token, "/jobs/automated", json!({"type": "data_sync_all"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["allowed_refreshes"], 1);
    assert_eq!(first["remaining_refreshes"], 0);
    // While a job runs, Finch hands back the same job.
    let again: Value = api
        .post(&token, "/jobs/automated", json!({"type": "data_sync_all"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["job_id"], first["job_id"]);
    let job = api
        .wait_for_job(&token, first["job_id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "complete");
    let response = api
        .post(&token, "/jobs/automated", json!({"type": "data_sync_all"}))
        .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert!(body["retry_at"].is_string());

    let list: Value = api
        .get(&token, "/jobs/automated")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["meta"]["quotas"]["data_sync_all"]["remaining_refreshes"],
        0
    );
    let (status, body) = error_of(api.get(&token, "/jobs/manual/whatever").await).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (404, Some("not_found_error"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn failed_sync_jobs_keep_the_old_data_and_report_errors() {
    let capture = Capture::start(0).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    let token = token(&emulator);
    let configured: Value = api
        .put(
            &token,
            "/sandbox/jobs/configuration",
            json!({"type": "data_sync_all", "completion_status": "reauth_error"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(configured["completion_status"], "reauth_error");
    api.post(&token, "/sandbox/directory", json!([{}])).await;
    let job_id = api.sync(&token).await;
    let job: Value = api
        .get(&token, &format!("/jobs/automated/{job_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "reauth_error");
    let deliveries = capture
        .wait_until("account and job events", |d| d.len() >= 2)
        .await;
    let types: HashSet<String> = deliveries.iter().map(Delivery::event_type).collect();
    assert_eq!(
        types,
        HashSet::from([
            "account.updated".to_owned(),
            "job.data_sync_all.completed".to_owned()
        ])
    );
    let (status, body) = error_of(api.get(&token, "/employer/directory").await).await;
    assert_eq!(
        (status, body["finch_code"].as_str()),
        (401, Some("reauthenticate_user"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_sync_timer_syncs_on_its_own() {
    let capture = Capture::start(0).await;
    let emulator = start(EmulatorConfig {
        webhook_urls: vec![capture.url.clone()],
        sync_interval: Some(Duration::from_secs(1)),
        time_scale: 10.0,
        ..test_config()
    })
    .await;
    let api = Api::new(&emulator);
    api.post(&token(&emulator), "/sandbox/directory", json!([{}]))
        .await;
    capture
        .wait_until("a directory.created from a scheduled sync", |d| {
            d.iter().any(|d| d.event_type() == "directory.created")
        })
        .await;
    emulator.shutdown().await;
}

async fn directory_of(emulator: &RunningEmulator) -> Value {
    Api::new(emulator)
        .get(&token(emulator), "/employer/directory")
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_seed_gives_the_same_data() {
    let config = || EmulatorConfig {
        seed: 7,
        ..test_config()
    };
    let a = start(config()).await;
    let b = start(config()).await;
    let c = start(EmulatorConfig {
        seed: 8,
        ..test_config()
    })
    .await;
    assert_eq!(
        a.connections()[0].connection_id,
        b.connections()[0].connection_id
    );
    assert_ne!(
        a.connections()[0].connection_id,
        c.connections()[0].connection_id
    );
    assert_ne!(
        a.connections()[0].access_token,
        b.connections()[0].access_token
    );
    assert_eq!(directory_of(&a).await, directory_of(&b).await);
    for e in [a, b, c] {
        e.shutdown().await;
    }
}

#[tokio::test]
async fn send_fires_one_signed_event() {
    let capture = Capture::start(0).await;
    let (_, secret) = WebhookSecret::generate();
    let connection_id = "0057d3d2-fb43-4815-9f71-01ba4862d09f".to_owned();
    finch_emulator::send(SendArgs {
        url: capture.url.clone(),
        secrets: vec![secret.clone()],
        event_type: "directory.created".into(),
        connection_id: Some(connection_id.clone()),
        company_id: None,
        account_id: None,
        timeout: Duration::from_secs(5),
    })
    .await
    .expect("the event is accepted");
    let deliveries = capture.deliveries();
    assert_eq!(deliveries.len(), 1);
    verify(
        &Verifier::new(vec![WebhookSecret::parse(&secret).unwrap()], 300),
        &deliveries[0],
    );
    let body = deliveries[0].json();
    assert_eq!(body["connection_id"], connection_id.as_str());
    assert!(body["data"]["individual_id"].is_string());

    let refusing = Capture::start(usize::MAX).await;
    let result = finch_emulator::send(SendArgs {
        url: refusing.url.clone(),
        secrets: vec![secret],
        event_type: "test".into(),
        connection_id: None,
        company_id: None,
        account_id: None,
        timeout: Duration::from_secs(5),
    })
    .await;
    assert!(result.is_err(), "a refused event is an error");
    refusing.accept_all();
}

#[tokio::test]
async fn sandbox_connections_need_client_credentials() {
    let emulator = start(test_config()).await;
    let api = Api::new(&emulator);
    let response = api
        .http
        .post(api.url("/sandbox/connections"))
        .header("Finch-API-Version", VERSION)
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("who:knows")
            ),
        )
        .json(&json!({"provider_id": "gusto"}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (401, Some("invalid_client_error"))
    );

    let created = api
        .new_connection(json!({"provider_id": "gusto", "employee_size": 5}))
        .await;
    let token = created["access_token"].as_str().unwrap();
    let directory: Value = api
        .get(token, "/employer/directory")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(directory["paging"]["count"], 5);
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let payments: Value = api
        .get(
            token,
            &format!("/employer/payment?start_date=2000-01-01&end_date={today}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        payments.as_array().unwrap().len(),
        1,
        "one payment, as Finch's sandbox makes"
    );
    assert_eq!(payments[0]["pay_date"], today.as_str());
    emulator.shutdown().await;
}
