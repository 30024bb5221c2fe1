//! The ingress and the official SDK's `verify_signature` agree on which
//! deliveries are authentic: each case goes through both, and both must give
//! the expected verdict.

use std::io::Write as _;
use std::process::{Command, Stdio};

use finch_webhooks::signature::WebhookSecret;
use serde_json::json;

use crate::helpers::*;
use crate::sdk_conformance::sdk_python;

#[derive(Clone)]
struct Case {
    name: &'static str,
    event_id: String,
    timestamp: String,
    signature: String,
    body: String,
    authentic: bool,
}

fn cases() -> Vec<Case> {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let other = WebhookSecret::parse(NEW_SECRET).unwrap();
    let ts = now();
    let body = event_body("directory.created", "conn-sdk");
    let mut cases = Vec::new();
    let mut add = |name, timestamp: i64, signature: String, body: String, authentic| {
        cases.push(Case {
            name,
            event_id: unique("msg_sdk"),
            timestamp: timestamp.to_string(),
            signature,
            body,
            authentic,
        });
    };
    // Each signature is computed for the id the case will carry, so sign lazily below.
    add("valid v1", ts, String::new(), body.clone(), true);
    add("wrong secret", ts, String::new(), body.clone(), false);
    add(
        "rotation: unknown then valid",
        ts,
        String::new(),
        body.clone(),
        true,
    );
    add("v2 only", ts, String::new(), body.clone(), false);
    add(
        "three-part entry skipped",
        ts,
        String::new(),
        body.clone(),
        true,
    );
    add(
        "empty entries skipped",
        ts,
        String::new(),
        body.clone(),
        true,
    );
    add(
        "body changed after signing",
        ts,
        String::new(),
        body.clone(),
        false,
    );
    add("1000 s old", ts - 1000, String::new(), body.clone(), false);
    add(
        "1000 s ahead",
        ts + 1000,
        String::new(),
        body.clone(),
        false,
    );
    add(
        "multi-byte UTF-8 body",
        ts,
        String::new(),
        r#"{"event_type":"test","data":{"name":"Zoë Ünal 山田"}}"#.into(),
        true,
    );
    add(
        "signature of another id",
        ts,
        String::new(),
        body.clone(),
        false,
    );

    for case in &mut cases {
        let stamp: i64 = case.timestamp.parse().unwrap();
        let good = secret.sign(&case.event_id, stamp, case.body.as_bytes());
        let digest = good.strip_prefix("v1,").unwrap().to_owned();
        case.signature = match case.name {
            "wrong secret" => other.sign(&case.event_id, stamp, case.body.as_bytes()),
            "rotation: unknown then valid" => format!(
                "{} {good}",
                other.sign(&case.event_id, stamp, case.body.as_bytes())
            ),
            "v2 only" => format!("v2,{digest}"),
            "three-part entry skipped" => format!("v1,{digest},extra {good}"),
            "empty entries skipped" => format!("  {good}"),
            "signature of another id" => {
                secret.sign("msg_someone_else", stamp, case.body.as_bytes())
            }
            _ => good,
        };
        if case.name == "body changed after signing" {
            case.body = case.body.replace("directory.created", "directory.deleted");
        }
    }
    cases
}

fn sdk_verdicts(cases: &[Case]) -> Vec<bool> {
    let input: Vec<_> = cases
        .iter()
        .map(|case| {
            json!({
                "secret": SECRET,
                "headers": {
                    "finch-event-id": case.event_id,
                    "finch-timestamp": case.timestamp,
                    "finch-signature": case.signature,
                },
                "body": case.body,
            })
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/verify_agreement.py");
    let mut child = Command::new(sdk_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("SDK python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!(input).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    verdicts.into_iter().map(|v| v == "accept").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_official_sdk_agree_on_every_delivery() {
    let cases = cases();
    let sdk = {
        let cases = cases.clone();
        tokio::task::spawn_blocking(move || sdk_verdicts(&cases))
            .await
            .unwrap()
    };

    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    for (case, sdk_accepts) in cases.iter().zip(sdk) {
        let response = ingress
            .deliver_raw(
                &case.event_id,
                &case.timestamp,
                &case.signature,
                case.body.clone(),
            )
            .await;
        let ingress_accepts = response.status() == 200;
        assert_eq!(
            sdk_accepts, case.authentic,
            "SDK verdict on '{}'",
            case.name
        );
        assert_eq!(
            ingress_accepts,
            case.authentic,
            "ingress verdict on '{}': {}",
            case.name,
            response.status()
        );
    }
}
