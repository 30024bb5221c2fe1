//! The `finch-emulator` binary: it serves the seeded connections its banner
//! prints, and SIGTERM (what `docker stop` sends, even to PID 1) stops it
//! cleanly instead of killing it.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

/// Reads the banner until the first access token and sends (base URL, token),
/// then keeps draining stdout so that the emulator never writes to a closed pipe.
fn read_banner(stdout: impl std::io::Read, found: std::sync::mpsc::Sender<(String, String)>) {
    let mut base_url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout is readable");
        if let Some(url) = line.strip_prefix("Finch emulator listening on ") {
            base_url = Some(url.trim().to_owned());
        }
        if let Some(token) = line.trim().strip_prefix("access token:") {
            let base_url = base_url
                .clone()
                .expect("the address comes before the tokens");
            found.send((base_url, token.trim().to_owned())).ok();
        }
    }
}

#[tokio::test]
async fn serves_the_seeded_connections_and_stops_cleanly_on_sigterm() {
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_finch-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--connections",
            "1",
            "--employees",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("finch-emulator starts");
    let stdout = emulator.stdout.take().expect("stdout is piped");
    let (found, banner) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || read_banner(stdout, found));
    let (base_url, token) = tokio::task::spawn_blocking(move || banner.recv())
        .await
        .unwrap()
        .expect("the banner prints an access token");

    let response = reqwest::Client::new()
        .get(format!("{base_url}/employer/directory"))
        .bearer_auth(&token)
        .header("Finch-API-Version", finch_core::API_VERSION)
        .send()
        .await
        .expect("the emulator answers");
    assert_eq!(response.status(), 200);
    let directory: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        directory["individuals"].as_array().map(Vec::len),
        Some(3),
        "{directory}"
    );

    let terminate = Command::new("kill")
        .args(["-TERM", &emulator.id().to_string()])
        .status()
        .unwrap();
    assert!(terminate.success());
    let output = tokio::task::spawn_blocking(move || emulator.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "exits 0 on SIGTERM, not killed by it: {:?} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    reader.join().unwrap();
}
