//! `finch-webhooks connections ...` through the real binary: tokens come in
//! from a file or stdin and never go out; a sync is queued unless refused.

use std::process::Stdio;

use finch_emulator::{Emulator, EmulatorConfig};
use finch_webhooks::queue::WORK_QUEUE;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::*;
use crate::worker::TOKEN_KEY;

#[tokio::test]
async fn connections_add_reads_the_token_from_stdin_and_no_sync_queues_nothing() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 2,
        employees: 1,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let quiet = emulator.connections()[0].clone();
    let synced = emulator.connections()[1].clone();
    let finch_env = [
        ("FINCH_TOKEN_KEY", TOKEN_KEY),
        ("FINCH_API_BASE_URL", emulator.base_url()),
    ];

    let mut child = binary(&env)
        .envs(finch_env)
        .args([
            "connections",
            "add",
            "--access-token-file",
            "-",
            "--no-sync",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", quiet.access_token).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let added = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&added.stdout).into_owned(),
        String::from_utf8_lossy(&added.stderr).into_owned(),
    );
    assert!(added.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("added connection {}", quiet.connection_id)),
        "{stdout}"
    );
    assert!(!stdout.contains("sync queued"), "{stdout}");
    assert!(
        !(stdout + &stderr).contains(&quiet.access_token),
        "the token is never printed"
    );
    assert_eq!(
        queue_len(&amqp, WORK_QUEUE).await,
        0,
        "--no-sync queues nothing"
    );

    // The same command without --no-sync queues the initial full sync.
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), &synced.access_token).unwrap();
    let added = binary(&env)
        .envs(finch_env)
        .args(["connections", "add", "--access-token-file"])
        .arg(token_file.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(stdout.contains("full sync queued"), "{stdout}");
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 1);

    let (ok, out, err) = run(&env, &["connections", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|row| row["connection_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [quiet.connection_id.as_str(), synced.connection_id.as_str()]
    );
    assert!(!out.contains(&quiet.access_token) && !out.contains(&synced.access_token));
}

#[tokio::test]
async fn connections_show_resync_and_remove_act_on_the_named_connection_only() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let pool = env.pool().await;
    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 1,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let seeded = emulator.connections()[0].clone();
    let config = crate::worker::worker_settings(&env, emulator.base_url(), &[])
        .worker()
        .unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    let token = secrecy::SecretString::from(seeded.access_token.clone());
    finch_webhooks::ops::connections::add(&pool, &config.token_keys, &finch, &token)
        .await
        .unwrap();
    let id = seeded.connection_id.as_str();

    let (ok, out, err) = run(&env, &["connections", "show", id, "--json"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["connection_id"].as_str(), shown["status"].as_str()),
        (Some(id), Some("connected"))
    );
    assert!(!out.contains(&seeded.access_token));
    let (ok, out, err) = run(&env, &["connections", "show", id]).await;
    assert!(
        ok && out.starts_with(&format!("Connection {id}\n")),
        "{out}{err}"
    );

    let (ok, _, err) = run(&env, &["connections", "show", "conn-missing"]).await;
    assert!(!ok && err.contains("no connection conn-missing"), "{err}");
    let (ok, _, err) = run(&env, &["connections", "resync", "conn-missing"]).await;
    assert!(!ok && err.contains("no connection conn-missing"), "{err}");
    assert_eq!(queue_len(&amqp, WORK_QUEUE).await, 0, "nothing queued");

    let (ok, out, err) = run(&env, &["connections", "resync", id]).await;
    assert!(
        ok && out.contains(&format!("full sync of {id} queued")),
        "{err}"
    );
    let queued = take_all(&amqp, WORK_QUEUE).await;
    assert_eq!(queued.len(), 1);
    let body: Value = serde_json::from_slice(&queued[0].delivery.data).unwrap();
    assert_eq!(body["connection_id"], id);

    let (ok, _, err) = run(&env, &["connections", "remove", "conn-missing"]).await;
    assert!(!ok && err.contains("no connection conn-missing"), "{err}");
    let (ok, out, err) = run(&env, &["connections", "remove", id]).await;
    assert!(
        ok && out.contains(&format!("removed connection {id}")),
        "{err}"
    );
    let (ok, _, _) = run(&env, &["connections", "show", id]).await;
    assert!(!ok, "removed connections are gone");
}
