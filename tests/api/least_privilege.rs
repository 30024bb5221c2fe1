//! Least privilege against real Postgres and the real binaries: `serve` and
//! `worker` run as a database user holding only the grants of
//! `deploy/postgres/runtime-grants.sql` and deliver an event end to end;
//! on a database `migrate` never ran on they stop and name the command; and
//! each warns of the secrets it was given but does not use.

use std::process::Stdio;
use std::time::Duration;

use finch_emulator::{Emulator, EmulatorConfig};
use sqlx::Connection as _;

use crate::admin_listener::free_port;
use crate::helpers::*;
use crate::worker::{worker_settings, TOKEN_KEY};

const RUNTIME_GRANTS: &str = include_str!("../../deploy/postgres/runtime-grants.sql");

/// `DATABASE_URL` of `user` on this environment's database.
fn url_as(env: &TestEnv, user: &str) -> String {
    let mut url = url::Url::parse(&env.database_url).unwrap();
    url.set_username(user).unwrap();
    url.set_password(None).unwrap();
    url.to_string()
}

/// Creates a login role with the runtime grants on the (migrated) database.
async fn create_runtime_user(env: &TestEnv) -> String {
    let user = unique("fw_runtime");
    let mut owner = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE ROLE \"{user}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
    ))
    .execute(&mut owner)
    .await
    .unwrap();
    let grants = RUNTIME_GRANTS
        .replace(":\"database\"", &format!("\"{}\"", env.database))
        .replace(":\"runtime_user\"", &format!("\"{user}\""));
    sqlx::raw_sql(&grants).execute(&mut owner).await.unwrap();
    user
}

async fn drop_runtime_user(env: &TestEnv, user: &str) {
    if let Ok(mut owner) = sqlx::PgConnection::connect(&env.database_url).await {
        sqlx::query(&format!("DROP OWNED BY \"{user}\""))
            .execute(&mut owner)
            .await
            .ok();
        owner.close().await.ok();
    }
    // The role outlives the test database unless dropped; the database is
    // dropped (with its grants) by TestEnv.
    if let Ok(mut server) =
        sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server_url())).await
    {
        sqlx::query(&format!(
            "REVOKE ALL ON DATABASE \"{}\" FROM \"{user}\"",
            env.database
        ))
        .execute(&mut server)
        .await
        .ok();
        sqlx::query(&format!("DROP ROLE IF EXISTS \"{user}\""))
            .execute(&mut server)
            .await
            .ok();
    }
}

async fn terminate(child: tokio::process::Child) -> std::process::Output {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    child.wait_with_output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_worker_deliver_an_event_as_a_runtime_user_without_ddl_rights() {
    let env = TestEnv::new().await;
    let amqp = env.amqp().await;
    let (migrated, _, stderr) = run(&env, &["migrate"]).await;
    assert!(migrated, "migrate as the schema owner: {stderr}");
    let user = create_runtime_user(&env).await;
    let runtime_url = url_as(&env, &user);

    let mut runtime = sqlx::PgConnection::connect(&runtime_url).await.unwrap();
    let refused = sqlx::query("CREATE TABLE sneaky (id int)")
        .execute(&mut runtime)
        .await
        .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "the runtime user cannot change the schema: {refused}"
    );
    runtime.close().await.ok();

    let emulator = Emulator::start(EmulatorConfig {
        connections: 1,
        employees: 2,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let owner_pool = env.pool().await;
    let config = worker_settings(&env, emulator.base_url(), &[])
        .worker()
        .unwrap();
    let finch = finch_webhooks::finch::FinchClient::new(&config.finch);
    let seeded = &emulator.connections()[0];
    let token = secrecy::SecretString::from(seeded.access_token.clone());
    finch_webhooks::ops::connections::add(&owner_pool, &config.token_keys, &finch, &token)
        .await
        .unwrap();

    let port = free_port();
    let serve = binary(&env)
        .arg("serve")
        .env("DATABASE_URL", &runtime_url)
        .env("DATABASE_MIGRATE_ON_START", "false")
        .env("FINCH_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker = binary(&env)
        .arg("worker")
        .env("DATABASE_URL", &runtime_url)
        .env("DATABASE_MIGRATE_ON_START", "false")
        .env("FINCH_TOKEN_KEY", TOKEN_KEY)
        .env("FINCH_API_BASE_URL", emulator.base_url())
        .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("COALESCE_WINDOW_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let ingress = TestIngress::remote(
        format!("127.0.0.1:{port}").parse().unwrap(),
        owner_pool.clone(),
    );
    ingress.wait_for_broker().await;
    let event_id = unique("evt_runtime");
    let response = ingress
        .deliver(
            &event_id,
            &event_body("company.updated", &seeded.connection_id),
        )
        .await;
    assert_eq!(response.status(), 200);
    eventually(
        Duration::from_secs(30),
        "the worker processed the event and stored the company",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE event_id = $1 AND processed_at IS NOT NULL)
                    AND EXISTS (SELECT 1 FROM finch_company WHERE connection_id = $2)",
            )
            .bind(&event_id)
            .bind(&seeded.connection_id)
            .fetch_one(&owner_pool)
            .await
            .unwrap()
        },
    )
    .await;
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE published_at IS NOT NULL")
            .fetch_one(&owner_pool)
            .await
            .unwrap();
    assert_eq!(published, 1);

    let served = terminate(serve).await;
    let worked = terminate(worker).await;
    for (role, output) in [("serve", served), ("worker", worked)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{role}: {stderr}");
        assert!(!stderr.contains("permission denied"), "{role}: {stderr}");
    }
    drop(amqp);
    owner_pool.close().await;
    drop_runtime_user(&env, &user).await;
}

#[tokio::test]
async fn serve_and_worker_refuse_a_database_migrate_never_ran_on_and_change_nothing() {
    let env = TestEnv::new().await;
    finch_webhooks::store::create_database_if_missing(&env.database_url)
        .await
        .unwrap();
    for (role, extra) in [
        ("serve", [("FINCH_WEBHOOK_SECRET", SECRET)]),
        ("worker", [("FINCH_TOKEN_KEY", TOKEN_KEY)]),
    ] {
        let child = binary(&env)
            .arg(role)
            .env("DATABASE_MIGRATE_ON_START", "false")
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .envs(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{role} kept running on an unmigrated database"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{role}: {stderr}");
        assert!(
            stderr.contains("run `finch-webhooks migrate` first"),
            "{role}: {stderr}"
        );
    }
    let mut connection = sqlx::PgConnection::connect(&env.database_url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was created");
}

#[tokio::test]
async fn each_role_names_the_secrets_it_was_given_but_does_not_use() {
    let env = TestEnv::new().await;
    let client_secret = "client-secret-value-never-logged";
    let cases = [
        (
            "serve",
            vec![
                ("FINCH_WEBHOOK_SECRET", SECRET),
                ("FINCH_TOKEN_KEY", TOKEN_KEY),
                ("FINCH_CLIENT_SECRET", client_secret),
            ],
            vec!["FINCH_TOKEN_KEY", "FINCH_CLIENT_SECRET"],
        ),
        (
            "worker",
            vec![
                ("FINCH_TOKEN_KEY", TOKEN_KEY),
                ("FINCH_WEBHOOK_SECRET", SECRET),
                ("FINCH_CLIENT_SECRET", client_secret),
            ],
            vec!["FINCH_WEBHOOK_SECRET", "FINCH_CLIENT_SECRET"],
        ),
    ];
    for (role, secrets, unused) in cases {
        // An unmigrated database stops the role right after the warnings.
        finch_webhooks::store::create_database_if_missing(&env.database_url)
            .await
            .unwrap();
        let output = binary(&env)
            .arg(role)
            .env("DATABASE_MIGRATE_ON_START", "false")
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("WORKER_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .envs(secrets.iter().copied())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .unwrap_or_else(|_| panic!("{role} kept running on an unmigrated database"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let warned: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("does not use it"))
            .collect();
        assert_eq!(warned.len(), unused.len(), "{role}: {stderr}");
        for name in unused {
            assert!(
                warned
                    .iter()
                    .any(|line| line.contains(&format!("{name} is set but {role}"))),
                "{role} warns of {name}: {stderr}"
            );
        }
        for (_, value) in secrets {
            assert!(
                !stderr.contains(value),
                "{role} never prints a secret: {stderr}"
            );
        }
    }
}
