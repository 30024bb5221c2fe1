//! Tokens at rest against real Postgres and the real binary: a ciphertext
//! copied to another connection's row does not decrypt, and says why;
//! `connections rotate-key` moves every token to the current key, and a run
//! killed mid-way resumes.

use std::time::Duration;

use finch_webhooks::finch::token::{KeyRing, TokenKey};
use finch_webhooks::store::connections::{self, NewConnection};
use finch_webhooks::telemetry::ErrorChain;
use secrecy::{ExposeSecret as _, SecretString};

use crate::helpers::*;
use crate::worker::TOKEN_KEY;

const NEW_KEY: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

async fn store(pool: &sqlx::PgPool, keys: &KeyRing, connection_id: &str, token: &str) {
    connections::upsert(
        pool,
        keys,
        &NewConnection {
            connection_id,
            token: &SecretString::from(token.to_owned()),
            provider_id: None,
            products: &[],
            status: "connected",
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_token_copied_to_another_connections_row_does_not_decrypt_and_says_why() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let keys = KeyRing::single(TokenKey::from_base64(TOKEN_KEY).unwrap());
    store(&pool, &keys, "conn-a", "token-of-a").await;
    store(&pool, &keys, "conn-b", "token-of-b").await;
    sqlx::query(
        "UPDATE connections SET access_token = (SELECT access_token FROM connections WHERE connection_id = 'conn-a')
         WHERE connection_id = 'conn-b'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let error = connections::get(&pool, &keys, "conn-b").await.unwrap_err();
    let shown = ErrorChain(&error).to_string();
    assert!(
        shown.contains("token of connection conn-b")
            && shown.contains("encrypted for another connection's row"),
        "{shown}"
    );
    let a = connections::get(&pool, &keys, "conn-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.token.expose_secret(), "token-of-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_moves_every_token_to_the_current_key_and_resumes_after_a_kill() {
    let env = TestEnv::new().await;
    let pool = env.pool().await;
    let old = TokenKey::from_base64(TOKEN_KEY).unwrap();
    let old_ring = KeyRing::single(old.clone());
    const TOTAL: usize = 2000;
    for index in 0..TOTAL {
        store(
            &pool,
            &old_ring,
            &format!("conn-{index:05}"),
            &format!("tok-{index}"),
        )
        .await;
    }
    let rotate = |batch: &str| {
        let mut command = binary(&env);
        command
            .args(["connections", "rotate-key", "--batch-size", batch])
            .env("FINCH_TOKEN_KEY", TOKEN_KEY)
            .env("FINCH_TOKEN_KEYS", format!("new:{NEW_KEY}"))
            .env("FINCH_TOKEN_KEY_ID", "new");
        command
    };
    let on_new = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM connections WHERE token_key_id = 'new' AND token_bound",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let mut first = rotate("1").spawn().unwrap();
    eventually(
        Duration::from_secs(30),
        "the rotation under way",
        || async { on_new().await >= 1 },
    )
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let moved = on_new().await as usize;
    assert!(
        moved > 0 && moved < TOTAL,
        "killed mid-way: {moved} of {TOTAL}"
    );

    let output = rotate("100").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("with key new"), "{stdout}");
    assert_eq!(on_new().await as usize, TOTAL);

    let new_only = KeyRing::single(TokenKey::with_id("new", NEW_KEY).unwrap());
    for index in [0, 5, 9, 10, TOTAL / 2, TOTAL - 1] {
        let id = format!("conn-{index:05}");
        let connection = connections::get(&pool, &new_only, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connection.token.expose_secret(), format!("tok-{index}"));
    }
    let again = rotate("100").output().await.unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-encrypted 0 tokens"));
}
