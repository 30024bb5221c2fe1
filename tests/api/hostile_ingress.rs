//! Hostile and unlucky input: what each gets from the ingress and the worker,
//! and that none of it stalls the pipeline.

use finch_webhooks::signature::{WebhookSecret, MAX_SIGNATURE_ENTRIES};

use crate::helpers::*;

/// `count` entries, the valid signature last, so only a verifier that looks
/// at every entry finds it.
fn signature_list(event_id: &str, timestamp: i64, body: &str, count: usize) -> String {
    let good = WebhookSecret::parse(SECRET)
        .unwrap()
        .sign(event_id, timestamp, body.as_bytes());
    let mut entries = vec!["v1,bm90IHRoZSBzaWduYXR1cmU=".to_owned(); count - 1];
    entries.push(good);
    entries.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_header_over_the_entry_cap_is_a_400_and_stores_nothing() {
    let env = TestEnv::new().await;
    let ingress = TestIngress::start(&env, &[]).await;
    let body = event_body("directory.created", "conn-cap");
    let timestamp = now();

    let at_cap = signature_list("msg_cap_ok", timestamp, &body, MAX_SIGNATURE_ENTRIES);
    let response = ingress
        .deliver_raw("msg_cap_ok", &timestamp.to_string(), &at_cap, body.clone())
        .await;
    assert_eq!(response.status(), 200, "{MAX_SIGNATURE_ENTRIES} entries");

    for count in [MAX_SIGNATURE_ENTRIES + 1, 300] {
        let over = signature_list("msg_cap_over", timestamp, &body, count);
        let response = ingress
            .deliver_raw("msg_cap_over", &timestamp.to_string(), &over, body.clone())
            .await;
        assert_eq!(response.status(), 400, "{count} entries");
        let refusal: serde_json::Value = response.json().await.unwrap();
        assert_eq!(refusal["error"], "malformed_header", "{count} entries");
        assert_eq!(refusal["header"], "finch-signature", "{count} entries");
    }
    assert_eq!(
        row_count(&ingress.pool).await,
        1,
        "only the delivery at the cap is stored"
    );
}
