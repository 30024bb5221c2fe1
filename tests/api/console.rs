//! The operator console in a real browser (headless Chromium driven over
//! WebDriver) and over plain HTTP, against real Postgres and RabbitMQ:
//! sign-in, the overview, finding an event, replaying a dead letter until
//! it is processed, and the refusals (wrong token, missing CSRF token,
//! expired session, unconfirmed purge). Each page's screenshot is saved
//! into docs/console/.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use finch_webhooks::queue::{DEAD_LETTER_QUEUE, WORK_QUEUE};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use crate::helpers::*;
use crate::worker::{event_state, worker_settings, TestWorker};

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";

/// Chromium under chromedriver, both killed when dropped.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver; .ci/run does)");
        let status = format!("http://127.0.0.1:{port}/status");
        eventually(Duration::from_secs(20), "chromedriver answers", || async {
            reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", format!("--window-size={width},{height}"),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Self {
            client,
            _driver: driver,
        }
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The path once navigation has reached one that `wanted` accepts, or
    /// the last one seen after 15 s (for the assertion to show).
    async fn path_once(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let path = self.path().await;
            if wanted(&path) || std::time::Instant::now() > deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element, once the page shows it: a click that submits a form
    /// can return before the next page has loaded, above all on a busy machine.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css} on the page: {error}"))
    }

    /// The element's text; found again when a self-refreshing region
    /// replaced it between finding and reading.
    async fn text(&self, css: &str) -> String {
        for _ in 0..20 {
            match self.element(css).await.text().await {
                Ok(text) => return text,
                Err(error) if error.is_stale_element_reference() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("text of {css}: {error}"),
            }
        }
        panic!("{css} kept being replaced while it was read")
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.element(css).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    /// Saves the page as docs/console/<name>.png, and checks that the
    /// admin token is nowhere in it.
    async fn shoot(&self, name: &str) {
        let source = self.client.source().await.unwrap();
        assert!(!source.contains(ADMIN_TOKEN), "the token is on {name}");
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.client
            .goto(&format!("{base}/console/sign-in"))
            .await
            .unwrap();
        self.fill("#token", token).await;
        self.click("form button[type=submit]").await;
    }

    async fn close(self) {
        self.client.close().await.ok();
    }
}

/// Settings that mount the admin API, and with it the console.
const CONSOLE: [(&str, &str); 1] = [("admin_token", ADMIN_TOKEN)];

#[tokio::test]
async fn a_browser_signs_in_sees_the_overview_and_finds_an_event_by_id() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &CONSOLE).await;
    ingress.wait_for_broker().await;
    let ids = [unique("evt"), unique("evt")];
    for id in &ids {
        let body = event_body("employment.updated", "conn_console");
        assert_eq!(ingress.deliver(id, &body).await.status(), 200);
    }
    let base = ingress.admin_url("");
    let browser = Browser::start(1280, 900).await;

    browser
        .client
        .goto(&format!("{base}/console/"))
        .await
        .unwrap();
    assert_eq!(
        browser.path().await,
        "/console/sign-in",
        "no session: sign in first"
    );
    browser.shoot("sign-in").await;

    browser.sign_in(&base, "not-the-admin-token-at-all").await;
    assert_eq!(
        browser.text("#refused").await,
        "That token was not accepted."
    );
    assert!(
        browser
            .client
            .get_named_cookie("finch_console")
            .await
            .is_err(),
        "a wrong token gets no session"
    );
    browser
        .client
        .goto(&format!("{base}/console/events"))
        .await
        .unwrap();
    assert_eq!(browser.path().await, "/console/sign-in");

    browser.sign_in(&base, ADMIN_TOKEN).await;
    assert_eq!(
        browser.path_once(|path| path == "/console/").await,
        "/console/"
    );
    let cookie = browser
        .client
        .get_named_cookie("finch_console")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie
            .same_site()
            .map(|same_site| same_site.to_string())
            .as_deref(),
        Some("Strict")
    );
    assert_eq!(browser.text("#outbox").await, "0");
    // The ingress's per-minute counts reach the overview after a flush.
    eventually(
        Duration::from_secs(20),
        "two accepted deliveries shown",
        || async {
            browser.client.refresh().await.unwrap();
            let cells = browser
                .client
                .find_all(Locator::Css("#ingress-h + .scroll tbody td:nth-child(2)"))
                .await
                .unwrap();
            let mut accepted = 0;
            for cell in cells {
                accepted += cell.text().await.unwrap().parse::<u32>().unwrap();
            }
            accepted == 2
        },
    )
    .await;
    browser.shoot("overview").await;

    browser
        .client
        .goto(&format!(
            "{base}/console/events?event_type=employment.updated"
        ))
        .await
        .unwrap();
    let rows = browser
        .client
        .find_all(Locator::Css("#results tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    browser.shoot("events").await;

    browser.fill("input[name=event_type]", "").await;
    browser.fill("input[name=event_id]", &ids[1]).await;
    browser.click("form[role=search] button").await;
    let event_page = format!("/console/events/{}", ids[1]);
    assert_eq!(
        browser.path_once(|path| path == event_page).await,
        event_page
    );
    assert_eq!(browser.text("#event-id").await, ids[1]);
    let body = browser.text("pre.body").await;
    assert!(
        body.contains("\"event_type\": \"employment.updated\""),
        "{body}"
    );
    let timeline = browser.text("#timeline").await;
    assert!(timeline.contains("Received and stored"), "{timeline}");
    browser.shoot("event").await;

    // At phone width, from the keyboard: the first Tab reaches the skip link.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser
        .client
        .goto(&format!("{base}/console/"))
        .await
        .unwrap();
    browser.shoot("overview-390px").await;
    let tab = "\u{e004}";
    browser
        .client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(tab)
        .await
        .unwrap();
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Skip to content");

    browser.close().await;
    ingress.stop().await;
}

/// Publishes a dead letter straight into the DLQ, as the worker would.
async fn dead_letter(amqp: &lapin::Connection, event_id: &str, connection: &str) {
    let channel = amqp.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(LongString::from(value));
    headers.insert("dead_letter_reason".into(), text("unknown_connection"));
    headers.insert("connection_id".into(), text(connection));
    headers.insert(
        "dead_lettered_at".into(),
        text(&chrono::Utc::now().to_rfc3339()),
    );
    channel
        .basic_publish(
            "".into(),
            DEAD_LETTER_QUEUE.into(),
            BasicPublishOptions::default(),
            event_body("company.updated", connection).as_bytes(),
            BasicProperties::default()
                .with_message_id(event_id.into())
                .with_type("company.updated".into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_letter_is_replayed_from_the_browser_and_then_processed() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let settings = worker_settings(&env, "http://127.0.0.1:9", &CONSOLE);
    let ingress = TestIngress::start_with(settings.clone(), None).await;
    ingress.wait_for_broker().await;
    let worker = TestWorker::start(settings.clone()).await;
    let connection_id = unique("conn");
    let event_id = unique("evt");
    ingress
        .deliver(&event_id, &event_body("company.updated", &connection_id))
        .await;
    eventually(
        Duration::from_secs(20),
        "the event is dead-lettered",
        || async {
            event_state(&ingress.pool, &event_id).await.1.as_deref() == Some("unknown_connection")
        },
    )
    .await;
    // The connection turns up, parked: the worker acknowledges its events.
    let key = settings.worker().unwrap().token_keys;
    finch_webhooks::store::connections::upsert(
        &ingress.pool,
        &key,
        &finch_webhooks::store::connections::NewConnection {
            connection_id: &connection_id,
            token: &secrecy::SecretString::from("a-token-for-the-console-test"),
            provider_id: Some("gusto"),
            products: &["company".to_owned(), "directory".to_owned()],
            status: "reauth",
        },
    )
    .await
    .unwrap();

    let base = ingress.admin_url("");
    let browser = Browser::start(1280, 1000).await;
    browser.sign_in(&base, ADMIN_TOKEN).await;
    browser
        .client
        .goto(&format!("{base}/console/dead-letters"))
        .await
        .unwrap();
    assert_eq!(browser.text("#matched strong").await, "1");
    let groups = browser.text("#by-reason-h + table").await;
    assert!(groups.contains("unknown_connection"), "{groups}");
    let groups = browser.text("#by-conn-h + table").await;
    assert!(groups.contains(&connection_id), "{groups}");
    browser.shoot("dead-letters").await;

    browser.fill("#rate", "5").await;
    browser.click("#replay").await;
    let job_page = browser
        .path_once(|path| path.starts_with("/console/replays/"))
        .await;
    assert!(job_page.starts_with("/console/replays/"), "{job_page}");
    eventually(
        Duration::from_secs(20),
        "the replay job is done",
        || async { browser.text("#job-state").await == "done" },
    )
    .await;
    assert_eq!(browser.text("#job-progress").await, "1 of 1");
    browser.shoot("replay").await;
    eventually(
        Duration::from_secs(20),
        "the replayed event is processed",
        || async { event_state(&ingress.pool, &event_id).await.0 },
    )
    .await;
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);

    browser
        .client
        .goto(&format!("{base}/console/events/{event_id}"))
        .await
        .unwrap();
    assert_eq!(browser.text("#stage").await, "processed");
    // Each attempt with its outcome and the replay, in the order they happened.
    let timeline = browser.text("#timeline").await;
    let at = |step: &str| {
        timeline
            .find(step)
            .unwrap_or_else(|| panic!("no `{step}` in the timeline: {timeline}"))
    };
    let dead_lettered = at("Dead-lettered after attempt 1: unknown_connection");
    let replayed = at("Replayed from the dead-letter queue");
    let processed = at("Attempt 1: processed");
    assert!(
        dead_lettered < replayed && replayed < processed,
        "{timeline}"
    );
    assert_eq!(
        timeline.matches("Replayed").count(),
        1,
        "one replay: {timeline}"
    );

    browser
        .client
        .goto(&format!("{base}/console/connections"))
        .await
        .unwrap();
    let section = browser.text("section.connection").await;
    assert!(section.contains("Parked"), "{section}");
    assert!(section.contains("reauth"), "{section}");
    assert!(
        section.contains("company, directory") && !section.contains("last_read_at"),
        "the products it holds, by name: {section}"
    );
    browser.shoot("connections").await;

    // The same form without its CSRF token changes nothing.
    browser
        .client
        .execute(
            "document.querySelector('section.connection form input[name=csrf]').remove()",
            vec![],
        )
        .await
        .unwrap();
    browser.click("section.connection form button").await;
    assert_eq!(
        browser.text("p[role=alert]").await,
        "this form is out of date or did not come from the console; reload the page and try again"
    );
    assert_eq!(
        queue_len(&amqp, WORK_QUEUE).await,
        0,
        "no resync was queued"
    );

    browser.close().await;
    worker.stop().await;
    ingress.stop().await;
}

/// The session cookie a successful sign-in sets.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// A client that shows redirects instead of following them, as the
/// console's answers are checked one by one.
fn console_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Signs in with the admin token; the session's cookie.
async fn signed_in_cookie(http: &reqwest::Client, ingress: &TestIngress) -> String {
    let signed_in = http
        .post(ingress.admin_url("/console/sign-in"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    session_cookie(&signed_in)
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn wrong_tokens_missing_csrf_expired_sessions_and_unconfirmed_purges_are_refused() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &CONSOLE).await;
    let http = console_client();
    let url = |path: &str| ingress.admin_url(&format!("/console{path}"));

    let refused = http
        .post(url("/sign-in"))
        .form(&[("token", "console-admin-token-0123456788")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    let page = refused.text().await.unwrap();
    assert!(!page.contains("0123456788"), "a guess is not echoed");
    let no_token = http
        .post(url("/sign-in"))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);

    for path in [
        "/",
        "/events",
        "/dead-letters",
        "/connections",
        "/events/x",
        "/replays/1",
    ] {
        let response = http.get(url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/console/sign-in", "{path}");
    }

    let signed_in = http
        .post(url("/sign-in"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set = signed_in.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP without a proxy: {set}");
    let cookie = session_cookie(&signed_in);
    let behind_tls = http
        .post(url("/sign-in"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(behind_tls.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let overview = http
        .get(url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    assert_eq!(overview.headers()["cache-control"], "no-store");
    assert!(overview.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let page = overview.text().await.unwrap();
    assert!(!page.contains(ADMIN_TOKEN));
    let csrf = csrf_of(&page);

    // A DLQ of one, and a purge that is not confirmed as asked.
    let letter = unique("evt");
    dead_letter(&amqp, &letter, "conn_x").await;
    let purge = |csrf: Option<&str>, confirmation: &str| {
        let mut form = vec![
            ("expected", "1".to_owned()),
            ("confirmation", confirmation.to_owned()),
            ("reason", "unknown_connection".to_owned()),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf.to_owned()));
        }
        http.post(url("/dead-letters/purge"))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
    };
    assert_eq!(
        purge(None, "purge 1").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        purge(Some("forged"), "purge 1").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        purge(Some(&csrf), "purge").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        purge(Some(&csrf), "purge 2").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        queue_len(&amqp, DEAD_LETTER_QUEUE).await,
        1,
        "nothing purged yet"
    );
    let purged = purge(Some(&csrf), "purge 1").await.unwrap();
    assert_eq!(purged.status(), StatusCode::SEE_OTHER);
    assert_eq!(purged.headers()[LOCATION], "/console/dead-letters?purged=1");
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 0);

    // A replay without its token queues nothing.
    dead_letter(&amqp, &unique("evt"), "conn_x").await;
    let replay = http
        .post(url("/dead-letters/replay"))
        .header(COOKIE, &cookie)
        .form(&[("expected", "1"), ("rate", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::FORBIDDEN);
    assert_eq!(queue_len(&amqp, DEAD_LETTER_QUEUE).await, 1);

    let sign_out = http
        .post(url("/sign-out"))
        .header(COOKIE, &cookie)
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        sign_out.status(),
        StatusCode::FORBIDDEN,
        "sign-out needs the token too"
    );
    let still = http
        .get(url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    // Sessions expire.
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&ingress.pool)
        .await
        .unwrap();
    let expired = http
        .get(url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::SEE_OTHER);

    // Signing out ends the session for good.
    let cookie = signed_in_cookie(&http, &ingress).await;
    let page = http
        .get(url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    let out = http
        .post(url("/sign-out"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = http
        .get(url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    ingress.stop().await;
}

#[tokio::test]
async fn the_ingress_counts_its_answers_per_minute_and_outcome() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let id = unique("evt");
    let body = event_body("employment.updated", "conn_x");
    assert_eq!(ingress.deliver(&id, &body).await.status(), 200);
    assert_eq!(ingress.deliver(&id, &body).await.status(), 200);
    assert_eq!(ingress.deliver(&unique("evt"), &body).await.status(), 200);
    let forged = ingress
        .deliver_raw(
            &unique("evt"),
            &now().to_string(),
            "v1,c2lnbmF0dXJl",
            body.clone(),
        )
        .await;
    assert_eq!(forged.status(), 401);
    let unsigned = ingress
        .client
        .post(ingress.url("/webhooks/finch"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 400);
    let pool = ingress.pool.clone();
    let counts = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT outcome, sum(count)::int8 FROM ingress_minute_counts GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let expected = vec![
        ("accepted".to_owned(), 2),
        ("duplicate".to_owned(), 1),
        ("invalid_signature".to_owned(), 1),
        ("missing_header".to_owned(), 1),
    ];
    eventually(
        Duration::from_secs(15),
        "the counts are flushed",
        || async { counts().await == expected },
    )
    .await;
    ingress.stop().await;
    assert_eq!(
        counts().await,
        expected,
        "nothing counted twice at shutdown"
    );
}

#[tokio::test]
async fn a_replay_recorded_after_its_copy_was_processed_still_reads_before_it() {
    use finch_webhooks::store::events::{self, NewEvent, Processed};
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let event_id = unique("evt_steps");
    events::insert_batch(
        &pool,
        &[NewEvent {
            event_id: event_id.clone(),
            event_type: Some("company.updated".into()),
            connection_id: Some("conn-steps".into()),
            finch_timestamp: now(),
            body: bytes::Bytes::from_static(b"{}"),
            dead_letter_reason: None,
            traceparent: None,
        }],
    )
    .await
    .unwrap();
    events::record_failed_attempt(&pool, &event_id, 1, "HTTP 500")
        .await
        .unwrap();
    events::mark_dead_lettered(&pool, &event_id, "server_error", 2, "HTTP 500")
        .await
        .unwrap();
    // The replayed copy is tried and processed before the replay's confirm
    // is recorded, as happens when the worker is quicker than the DLQ tool.
    events::record_failed_attempt(&pool, &event_id, 1, "HTTP 502")
        .await
        .unwrap();
    events::mark_processed(
        &pool,
        &[Processed {
            event_id: &event_id,
            attempts: 2,
            note: None,
        }],
    )
    .await
    .unwrap();
    events::mark_replayed(&pool, std::slice::from_ref(&event_id))
        .await
        .unwrap();

    let steps: Vec<(String, Option<i32>, Option<String>)> = events::steps(&pool, &event_id)
        .await
        .unwrap()
        .into_iter()
        .map(|step| (step.kind, step.attempt, step.detail))
        .collect();
    let step = |kind: &str, attempt: Option<i32>, detail: Option<&str>| {
        (kind.to_owned(), attempt, detail.map(str::to_owned))
    };
    assert_eq!(
        steps,
        vec![
            step("retrying", Some(1), Some("HTTP 500")),
            step("dead_lettered", Some(2), Some("server_error: HTTP 500")),
            step("replayed", None, None),
            step("retrying", Some(1), Some("HTTP 502")),
            step("processed", Some(2), None),
        ]
    );
}

#[tokio::test]
async fn the_dead_letter_page_answers_at_once_while_a_slow_replay_holds_the_queue() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let ingress = TestIngress::start(&env, &CONSOLE).await;
    let http = console_client();
    let cookie = signed_in_cookie(&http, &ingress).await;
    let url = |path: &str| ingress.admin_url(&format!("/console{path}"));
    let page = |path: &str| {
        let request = http.get(url(path)).header(COOKIE, &cookie);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    for _ in 0..4 {
        dead_letter(&amqp, &unique("evt"), "conn_slow").await;
    }
    let listing = page("/dead-letters").await;
    assert!(listing.contains("<strong>4</strong>"), "{listing}");

    // One a second: the job holds the queue for about four seconds.
    let replay = http
        .post(url("/dead-letters/replay"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf_of(&listing).as_str()),
            ("expected", "4"),
            ("rate", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::SEE_OTHER);
    let job = replay.headers()[LOCATION]
        .to_str()
        .unwrap()
        .strip_prefix("/console")
        .expect("the job's page is in the console")
        .to_owned();
    eventually(Duration::from_secs(10), "the job has started", || async {
        queue_len(&amqp, DEAD_LETTER_QUEUE).await < 4
    })
    .await;
    // A page that waited for the lock would list the queue after the job.
    let during = page("/dead-letters").await;
    assert!(during.contains("id=\"busy\""), "{during}");

    eventually(Duration::from_secs(20), "the job is done", || async {
        page(&job).await.contains("4 of 4")
    })
    .await;
    let after = page("/dead-letters").await;
    assert!(!after.contains("id=\"busy\""), "{after}");
    assert!(after.contains("<strong>0</strong>"), "{after}");
}
