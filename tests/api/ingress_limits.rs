//! The webhook port under slow and hostile clients, against the real
//! `serve` binary with its default limits: clients stalled inside their
//! headers and clients stalled inside a body at the size limit hold little
//! memory, are cut off, and never keep a real delivery waiting.

use std::process::Stdio;
use std::time::{Duration, Instant};

use finch_webhooks::config::Settings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Of each kind; the figure.
const STALLED: usize = 300;
/// Longer than any stalled client may stay connected.
const NEVER_CUT: Duration = Duration::from_secs(65);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .expect("VmRSS in /proc");
    kib * 1024
}

/// Opens a connection, sends `opening`, then sends nothing more; resolves
/// with how long after opening the server closed it.
async fn stall(port: u16, opening: Vec<u8>) -> Duration {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may already refuse (431, 413): that also ends the stall.
    stream.write_all(&opening).await.ok();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return opened.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_hold_little_memory_are_cut_off_and_never_delay_a_delivery() {
    let defaults = Settings::with_overrides(&[]).unwrap();
    let body_limit = usize::try_from(defaults.max_body_bytes).unwrap();
    let env = TestEnv::new().await;
    let port = free_port();
    let serve = binary(&env)
        .arg("serve")
        .env("FINCH_WEBHOOK_SECRET", SECRET)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let pid = serve.id().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ingress = TestIngress::remote(addr, env.pool().await);
    eventually(Duration::from_secs(30), "serve ready", || async {
        ingress
            .client
            .get(ingress.url("/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    let idle_rss = resident_bytes(pid);

    // Headers cut short after a few KB; a declared body at the limit, all
    // of it sent but the last byte.
    let in_headers = format!(
        "POST /webhooks/finch HTTP/1.1\r\nHost: ingress\r\nX-Padding: {}",
        "p".repeat(4096)
    )
    .into_bytes();
    let mut in_body = format!(
        "POST /webhooks/finch HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\n\
         Content-Length: {body_limit}\r\nFinch-Event-Id: msg_slow\r\n\
         Finch-Timestamp: {}\r\nFinch-Signature: v1,AAAA\r\n\r\n",
        now()
    )
    .into_bytes();
    in_body.extend(std::iter::repeat_n(b'x', body_limit - 1));
    let started = Instant::now();
    let stalled: Vec<_> = (0..STALLED)
        .flat_map(|_| [in_headers.clone(), in_body.clone()])
        .map(|opening| {
            tokio::spawn(async move {
                // Bounded, so a server that never cuts them off fails the test.
                tokio::time::timeout(NEVER_CUT, stall(port, opening))
                    .await
                    .unwrap_or(NEVER_CUT)
            })
        })
        .collect();
    // Time for every opening to arrive and be buffered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_rss = resident_bytes(pid);

    let delivered = Instant::now();
    let status = ingress
        .try_deliver("msg_meanwhile", &event_body("directory.created", "conn-1"))
        .await
        .expect("the delivery is answered");
    let answered_in = delivered.elapsed();

    let mut cut_after = Vec::with_capacity(stalled.len());
    for client in stalled {
        cut_after.push(client.await.unwrap());
    }
    let slowest = cut_after.iter().max().copied().unwrap();
    println!(
        "rss idle {} MB, with {} stalled {} MB; delivery answered in {answered_in:?}; \
         slowest cut off after {slowest:?} (all within {:?})",
        idle_rss / 1_000_000,
        2 * STALLED,
        held_rss / 1_000_000,
        started.elapsed()
    );
    assert_eq!(status, 200);
    assert!(
        answered_in < Duration::from_secs(1),
        "a real delivery waited {answered_in:?}"
    );
    assert!(
        held_rss < 100_000_000,
        "{} stalled clients hold {} MB",
        2 * STALLED,
        held_rss / 1_000_000
    );
    assert!(
        slowest < Duration::from_secs(60),
        "a stalled client was still open after {slowest:?}"
    );
    assert_eq!(
        row_count(&ingress.pool).await,
        1,
        "only the real delivery is stored"
    );
}
