//! The ingress and the official SDK's `verify_signature` agree on which
//! deliveries are authentic: each case goes through both, and both must give
//! the expected verdict. The SDK answers case by case, by name, so a missing,
//! extra or reordered answer fails as surely as a wrong one.

use std::io::Write as _;
use std::process::{Command, Stdio};

use finch_webhooks::signature::WebhookSecret;
use serde_json::json;

use crate::helpers::*;
use crate::sdk_conformance::sdk_python;

/// How a case's `Finch-Signature` is made, chosen per case.
#[derive(Clone, Copy, Debug)]
enum Signing {
    /// `v1,` HMAC with the configured secret over this delivery.
    Valid,
    /// `v1,` HMAC with a secret the receiver does not have.
    OtherSecret,
    /// An entry of the unknown secret, then the valid one (rotation).
    UnknownThenValid,
    /// The right digest under a version nobody accepts.
    V2Only,
    /// A malformed three-part entry, then the valid one.
    ThreePartThenValid,
    /// Leading blanks before the valid entry.
    BlanksThenValid,
    /// A valid signature, but of another event id.
    OfAnotherId,
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    event_id: String,
    timestamp: String,
    signature: String,
    body: String,
    authentic: bool,
}

/// One case: signed as `signing` says over `signed_body` at `timestamp`,
/// and delivered with `sent_body`.
fn case(
    name: &'static str,
    signing: Signing,
    timestamp: i64,
    signed_body: &str,
    sent_body: &str,
    authentic: bool,
) -> Case {
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let other = WebhookSecret::parse(NEW_SECRET).unwrap();
    let event_id = unique("msg_sdk");
    let good = secret.sign(&event_id, timestamp, signed_body.as_bytes());
    let digest = good.strip_prefix("v1,").unwrap();
    let unknown = other.sign(&event_id, timestamp, signed_body.as_bytes());
    let signature = match signing {
        Signing::Valid => good.clone(),
        Signing::OtherSecret => unknown,
        Signing::UnknownThenValid => format!("{unknown} {good}"),
        Signing::V2Only => format!("v2,{digest}"),
        Signing::ThreePartThenValid => format!("v1,{digest},extra {good}"),
        Signing::BlanksThenValid => format!("  {good}"),
        Signing::OfAnotherId => secret.sign("msg_someone_else", timestamp, signed_body.as_bytes()),
    };
    Case {
        name,
        event_id,
        timestamp: timestamp.to_string(),
        signature,
        body: sent_body.to_owned(),
        authentic,
    }
}

fn cases() -> Vec<Case> {
    let ts = now();
    let body = event_body("directory.created", "conn-sdk");
    let tampered = body.replace("directory.created", "directory.deleted");
    let utf8 = r#"{"event_type":"test","data":{"name":"Zoë Ünal 山田"}}"#;
    vec![
        case("valid v1", Signing::Valid, ts, &body, &body, true),
        case(
            "wrong secret",
            Signing::OtherSecret,
            ts,
            &body,
            &body,
            false,
        ),
        case(
            "rotation: unknown then valid",
            Signing::UnknownThenValid,
            ts,
            &body,
            &body,
            true,
        ),
        case("v2 only", Signing::V2Only, ts, &body, &body, false),
        case(
            "three-part entry skipped",
            Signing::ThreePartThenValid,
            ts,
            &body,
            &body,
            true,
        ),
        case(
            "empty entries skipped",
            Signing::BlanksThenValid,
            ts,
            &body,
            &body,
            true,
        ),
        case(
            "body changed after signing",
            Signing::Valid,
            ts,
            &body,
            &tampered,
            false,
        ),
        case("1000 s old", Signing::Valid, ts - 1000, &body, &body, false),
        case(
            "1000 s ahead",
            Signing::Valid,
            ts + 1000,
            &body,
            &body,
            false,
        ),
        case(
            "multi-byte UTF-8 body",
            Signing::Valid,
            ts,
            utf8,
            utf8,
            true,
        ),
        case(
            "signature of another id",
            Signing::OfAnotherId,
            ts,
            &body,
            &body,
            false,
        ),
    ]
}

/// The SDK's verdict on each case, by case name: `true` when it accepts.
fn sdk_verdicts(cases: &[Case]) -> Vec<(String, bool)> {
    let input: Vec<_> = cases
        .iter()
        .map(|case| {
            json!({
                "name": case.name,
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
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    answers
        .into_iter()
        .map(|answer| {
            let name = answer["name"].as_str().expect("each answer names its case");
            let accepts = match answer["verdict"].as_str() {
                Some("accept") => true,
                Some("reject") => false,
                other => panic!("SDK verdict on '{name}' is {other:?}, not accept or reject"),
            };
            (name.to_owned(), accepts)
        })
        .collect()
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
    let answered: Vec<&str> = sdk.iter().map(|(name, _)| name.as_str()).collect();
    let asked: Vec<&str> = cases.iter().map(|case| case.name).collect();
    assert_eq!(answered, asked, "the SDK answers every case, in order");

    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let mut accepted = 0;
    for (case, (_, sdk_accepts)) in cases.iter().zip(sdk) {
        assert_eq!(
            sdk_accepts, case.authentic,
            "SDK verdict on '{}'",
            case.name
        );
        let response = ingress
            .deliver_raw(
                &case.event_id,
                &case.timestamp,
                &case.signature,
                case.body.clone(),
            )
            .await;
        assert_eq!(
            response.status() == 200,
            case.authentic,
            "ingress verdict on '{}': {}",
            case.name,
            response.status()
        );
        accepted += i64::from(case.authentic);
    }
    assert_eq!(row_count(&ingress.pool).await, accepted);
}
