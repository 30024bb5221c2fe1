//! The official Finch Python SDK, run against the emulator: it must parse every
//! response and accept every delivery. Needs python3 and network access to PyPI
//! the first time (the venv is then reused), or `FINCH_SDK_PYTHON` pointing at a
//! python that already has `finch-api` installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use finch_emulator::{ConnectionSpec, Emulator, EmulatorConfig, FaultKind, FaultScope};
use serde_json::{json, Value};

use crate::emulator::{Capture, Delivery};

const SDK_VERSION: &str = "2.9.1";

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{command:?} did not start: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A python with the SDK: `FINCH_SDK_PYTHON`, or a venv made once under the
/// target dir. Several tests may ask at once; only one builds the venv.
pub fn sdk_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_or_make_sdk_python).clone()
}

fn find_or_make_sdk_python() -> PathBuf {
    if let Some(python) = std::env::var_os("FINCH_SDK_PYTHON") {
        return PathBuf::from(python);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("finch-sdk-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!("finch-api-{SDK_VERSION}.installed"));
    if !marker.exists() {
        if !python.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).expect("python3 -m venv");
        }
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("finch-api=={SDK_VERSION}"),
        ]))
        .expect("pip install finch-api");
        std::fs::write(&marker, b"").expect("venv marker");
    }
    python
}

fn delivery_json(delivery: &Delivery) -> Value {
    let headers: serde_json::Map<String, Value> = delivery
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
        .collect();
    json!({
        "headers": headers,
        "body": String::from_utf8(delivery.body.to_vec()).expect("deliveries are UTF-8"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_parses_every_response() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let capture = Capture::start(0).await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        webhook_urls: vec![capture.url.clone()],
        // The script makes more requests a minute than Finch allows.
        rate_limit_scale: 0.0,
        sync_duration: Duration::ZERO,
        pay_statement_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts");
    let seeded = emulator.connections()[0].clone();

    // Capture a delivery of each kind for webhooks.unwrap: an account update,
    // data changes and a job completion.
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", emulator.base_url()))
            .header("Finch-API-Version", "2020-09-17")
    };
    let created: Value = call(reqwest::Method::POST, "/sandbox/connections")
        .basic_auth(emulator.client_id(), Some(emulator.client_secret()))
        .json(&json!({"provider_id": "gusto", "employee_size": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["access_token"].as_str().unwrap();
    for (method, path, body) in [
        (reqwest::Method::POST, "/sandbox/directory", json!([{}])),
        (
            reqwest::Method::PUT,
            "/sandbox/company",
            json!({"legal_name": "Renamed LLC"}),
        ),
        (reqwest::Method::POST, "/sandbox/payment", json!({})),
        (
            reqwest::Method::POST,
            "/sandbox/jobs",
            json!({"type": "data_sync_all"}),
        ),
    ] {
        let response = call(method, path)
            .bearer_auth(token)
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
    let deliveries = capture
        .wait_until("a job completion", |d| {
            d.iter()
                .any(|d| d.event_type() == "job.data_sync_all.completed")
        })
        .await;
    let mut seen = std::collections::HashSet::new();
    let samples: Vec<Value> = deliveries
        .iter()
        .filter(|d| seen.insert(d.event_type()))
        .map(delivery_json)
        .collect();

    // Multi-entity reads, introspect's entities and last sync, and a 429 body.
    let multi = emulator
        .add_connection(ConnectionSpec {
            entities: 3,
            ..ConnectionSpec::assisted(12)
        })
        .unwrap();
    let limited = emulator
        .add_connection(ConnectionSpec::automated(2))
        .unwrap();
    emulator.inject_fault(
        FaultScope::Connection(limited.connection_id.clone()),
        FaultKind::UpstreamRateLimit,
        Duration::from_secs(3600),
    );

    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        serde_json::to_vec(&json!({
            "access_token": seeded.access_token,
            "authorization_code": seeded.authorization_code,
            "client_id": emulator.client_id(),
            "client_secret": emulator.client_secret(),
            "webhook_secret": emulator.webhook_secrets()[0],
            "employees": 20,
            "deliveries": samples,
            "multi_entity": {
                "access_token": multi.access_token,
                "entity_ids": multi.entity_ids,
                "employees": 12,
            },
            "rate_limited": limited.access_token,
        }))
        .unwrap(),
    )
    .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/conformance.py");
    let base_url = emulator.base_url().to_owned();
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&base_url)
        .arg(&settings)
        .output()
        .await
        .expect("the conformance script starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    emulator.shutdown().await;
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the SDK conformance script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("conformance: all SDK calls parsed"),
        "{stdout}"
    );
}
