//! `dev` for people: the real binary, its emulator and a sandbox change; in
//! text mode each step of the change's event is one short line without span
//! context, and `-v` brings the span context back.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `dev` and the lines it has written so far.
struct Dev {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    emulator: String,
}

impl Dev {
    fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let [emulator, ingress, worker, admin] =
            [free_port(), free_port(), free_port(), free_port()];
        let mut child = Command::new(env!("CARGO_BIN_EXE_finch-webhooks"))
            .arg("dev")
            .args(["--connections", "1", "--employees", "3"])
            .args(["--emulator-addr", &format!("127.0.0.1:{emulator}")])
            .args(["--ingress-addr", &format!("127.0.0.1:{ingress}")])
            .args(["--worker-addr", &format!("127.0.0.1:{worker}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(extra)
            .env("DATABASE_URL", &env.database_url)
            .env("AMQP_URL", &env.amqp_url)
            .env("LOG_FORMAT", "text")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dev starts");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
            emulator: format!("http://127.0.0.1:{emulator}"),
        }
    }

    fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Log lines whose message (after time and level) is `step`.
    fn steps(&self, step: &str) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|line| message_of(line).is_some_and(|message| message.starts_with(step)))
            .collect()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&[String]) -> bool) {
        eventually(Duration::from_secs(60), what, || async {
            check(&self.log())
        })
        .await;
    }

    /// The access token the banner prints for the seeded connection.
    fn token(&self) -> String {
        let stdout = self.stdout.lock().unwrap().join("\n");
        let start = stdout.find("Bearer ").expect("the banner shows a token") + "Bearer ".len();
        stdout[start..]
            .split(|c: char| c == '\'' || c.is_whitespace())
            .next()
            .unwrap()
            .to_owned()
    }

    /// The console's URL and the token the banner says to sign in with.
    fn console(&self) -> (String, String) {
        let stdout = self.stdout.lock().unwrap().join("\n");
        let line = stdout
            .lines()
            .find(|line| line.starts_with("Console:"))
            .expect("the banner shows the console");
        let url = line
            .split_whitespace()
            .nth(1)
            .expect("the console's URL")
            .to_owned();
        let token = line
            .split("(sign in with ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(')'))
            .expect("and a token to sign in with")
            .to_owned();
        (url, token)
    }

    fn stop(mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "dev exits 0 on SIGTERM: {status}");
    }
}

/// `HH:MM:SS LEVEL message ...` → `message ...`.
fn message_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let time = words.next()?;
    let level = words.next()?;
    if time.len() != 8 || !["INFO", "WARN", "ERROR", "DEBUG", "TRACE"].contains(&level) {
        return None;
    }
    let start = line.find(level)? + level.len();
    Some(line[start..].trim_start())
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_one_short_line_per_step_of_an_event_and_no_span_context() {
    let env = TestEnv::new().await;
    let dev = Dev::start(&env, &[]);
    dev.wait_for("the first full sync committed", |log| {
        log.iter()
            .any(|line| line.contains(" committed ") && line.contains("finch_webhooks.resync"))
    })
    .await;

    // A sandbox change, then a sync: the emulator sends company.updated.
    let token = dev.token();
    let client = reqwest::Client::new();
    for (method, path, body) in [
        (
            reqwest::Method::PUT,
            "/sandbox/company",
            serde_json::json!({"legal_name": "Terse Output Inc"}),
        ),
        (
            reqwest::Method::POST,
            "/sandbox/jobs",
            serde_json::json!({"type": "data_sync_all"}),
        ),
    ] {
        let response = client
            .request(method, format!("{}{path}", dev.emulator))
            .bearer_auth(&token)
            .header("Finch-API-Version", "2020-09-17")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    dev.wait_for("company.updated received", |_| {
        dev.steps("received")
            .iter()
            .any(|line| field(line, "type") == Some("company.updated"))
    })
    .await;
    let received = dev.steps("received");
    let company: Vec<&String> = received
        .iter()
        .filter(|line| field(line, "type") == Some("company.updated"))
        .collect();
    assert_eq!(company.len(), 1, "one received line: {company:#?}");
    let event_id = field(company[0], "id")
        .expect("the line names the event")
        .to_owned();
    assert!(event_id.starts_with("msg_"), "{event_id}");
    let connection = field(company[0], "conn")
        .expect("and its connection")
        .to_owned();
    assert_eq!(connection.len(), 8, "a short connection id: {connection}");

    dev.wait_for("company.updated committed", |_| {
        dev.steps("committed")
            .iter()
            .any(|line| field(line, "id") == Some(&event_id))
    })
    .await;
    let log = dev.log();
    let about_the_event: Vec<&String> = log
        .iter()
        .filter(|line| field(line, "id") == Some(&event_id))
        .collect();
    let messages: Vec<&str> = about_the_event
        .iter()
        .filter_map(|line| message_of(line)?.split_whitespace().next())
        .collect();
    assert_eq!(
        messages,
        ["received", "committed"],
        "the event's own lines: {about_the_event:#?}"
    );
    let refetched: Vec<String> = dev
        .steps("refetched")
        .into_iter()
        .filter(|line| {
            field(line, "product") == Some("company")
                && field(line, "conn") == Some(&connection)
                && field(line, "requests") == Some("1")
                && field(line, "items") == Some("1")
        })
        .collect();
    assert!(
        refetched.len() >= 2,
        "the first sync's company read and the change's: {refetched:#?}"
    );

    for line in &log {
        assert!(
            !["webhook{", "process{", "sync{", "commit finch data{"]
                .iter()
                .any(|span| line.contains(span)),
            "no span context in text lines: {line}"
        );
    }
    for line in about_the_event
        .iter()
        .chain(&refetched.iter().collect::<Vec<_>>())
    {
        assert!(line.chars().count() <= 120, "fits a terminal: {line}");
    }

    // The console the banner points at takes the token it prints, and only it.
    let (console, console_token) = dev.console();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |token: String| {
        browser
            .post(format!("{console}sign-in"))
            .form(&[("token", token)])
            .send()
    };
    let signed_in = sign_in(console_token.clone()).await.unwrap();
    assert_eq!(signed_in.status(), reqwest::StatusCode::SEE_OTHER);
    assert!(
        signed_in
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .is_some(),
        "a session cookie for the printed token"
    );
    let refused = sign_in(format!("{console_token}x")).await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_verbose_shows_each_line_with_its_span_context() {
    let env = TestEnv::new().await;
    let dev = Dev::start(&env, &["-v"]);
    dev.wait_for("the first full sync committed", |log| {
        log.iter()
            .any(|line| line.contains("committed") && line.contains("finch_webhooks.resync"))
    })
    .await;
    let log = dev.log();
    let committed: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("committed") && line.contains("finch_webhooks.resync"))
        .collect();
    for line in &committed {
        assert!(
            line.contains("process{") && line.contains("messaging.system=\"rabbitmq\""),
            "the event's processing span, with its fields: {line}"
        );
    }
    let refetched: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("refetched"))
        .collect();
    assert!(!refetched.is_empty());
    for line in &refetched {
        assert!(
            line.contains("sync{") && line.contains("finch.product="),
            "the batch span, with its fields: {line}"
        );
    }
    dev.stop();
}
