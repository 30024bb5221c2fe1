//! Connection URLs keep their passwords out of what the binary prints.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::helpers::*;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_banner_shows_the_database_url_without_its_password() {
    let env = TestEnv::new().await;
    // Postgres trusts local connections here, so the password is never
    // checked: it only has to stay out of the output.
    let database_url = env.database_url.replacen(
        "postgres://postgres@",
        "postgres://postgres:dev-pa55word@",
        1,
    );
    assert!(database_url.contains("dev-pa55word"), "{database_url}");
    let mut dev = binary(&env)
        .env("DATABASE_URL", &database_url)
        .args(["dev", "--connections", "1", "--employees", "2"])
        .args(["--emulator-addr", &free_addr()])
        .args(["--ingress-addr", &free_addr()])
        .args(["--worker-addr", &free_addr()])
        .args(["--admin-addr", &free_addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dev starts");
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops everything") {
                return;
            }
        }
    })
    .await;
    dev.start_kill().ok();
    assert!(read.is_ok(), "no full banner within 60 s:\n{banner}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut dev.stderr.take().unwrap(), &mut stderr)
        .await
        .ok();
    for (name, text) in [("stdout", &banner), ("stderr", &stderr)] {
        assert!(
            !text.contains("dev-pa55word"),
            "{name} shows the password:\n{text}"
        );
    }
    let shown = format!(
        "postgres://postgres:REDACTED@{}",
        &database_url["postgres://postgres:dev-pa55word@".len()..]
    );
    assert_eq!(
        banner.matches(shown.as_str()).count(),
        2,
        "the Database line and the psql hint show the redacted URL:\n{banner}"
    );
}
