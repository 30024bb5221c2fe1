//! `bench ingress`: drives signed, unique events at a running `serve` and
//! checks that every one is accounted for: sent = 200s = rows = messages
//! that reached the work queue. The queue is counted by its depth, so no
//! worker may consume it during a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use secrecy::ExposeSecret as _;
use tokio::sync::Mutex;

use crate::config::Settings;
use crate::queue::WORK_QUEUE;
use crate::signature::{signature_header, WebhookSecret};
use crate::store;

/// Event type of benchmark events: Finch's own test type, which workers
/// acknowledge without calling Finch.
const BENCH_EVENT_TYPE: &str = "test";

#[derive(Debug, clap::Args)]
pub struct IngressBenchArgs {
    /// Webhook endpoint of the running ingress.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/finch")]
    pub url: String,
    /// Secret to sign with; defaults to FINCH_WEBHOOK_SECRET (the first, when several).
    #[arg(long)]
    pub secret: Option<String>,
    /// Events to send.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Requests in flight at once (closed loop). Ignored with --rate.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Send at this steady rate (events/s, open loop) instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to wait for the outbox to publish everything after the last response.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
}

impl Tally {
    async fn record(&self, started: Instant, result: Result<reqwest::Response, reqwest::Error>) {
        let micros = started.elapsed().as_micros() as u64;
        match result {
            Ok(response) if response.status().is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latencies.lock().await.saturating_record(micros.max(1));
    }
}

pub async fn run(args: IngressBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let secret_text = match &args.secret {
        Some(secret) => secret.clone(),
        None => settings
            .finch_webhook_secret
            .as_ref()
            .map(|secret| secret.expose_secret().to_owned())
            .context("give --secret or set FINCH_WEBHOOK_SECRET to the secret the ingress uses")?,
    };
    let secret = WebhookSecret::parse_list(&secret_text)
        .context("the signing secret is not valid base64")?;
    let secret = vec![secret
        .into_iter()
        .next()
        .expect("parse_list returns at least one")];
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("msg_bench_{}_", &run_id[..12]);

    let pool = crate::store::connect(&settings.database_url()?, 2).await?;
    let amqp = crate::queue::connect(&settings.amqp_url()?).await?;
    let depth_before = work_queue_depth(&amqp).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(256))
        .build()?;
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let send = {
        let (client, url, prefix, secret) = (
            client.clone(),
            args.url.clone(),
            prefix.clone(),
            Arc::new(secret),
        );
        move |index: u64| {
            let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
            let event_id = format!("{prefix}{index}");
            async move {
                let body = serde_json::json!({
                    "company_id": "00000000-0000-0000-0000-000000000000",
                    "account_id": "00000000-0000-0000-0000-000000000000",
                    "connection_id": "bench",
                    "event_type": BENCH_EVENT_TYPE,
                    "data": { "index": index }
                })
                .to_string();
                let timestamp = chrono::Utc::now().timestamp();
                let signature = signature_header(&secret, &event_id, timestamp, body.as_bytes());
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("finch-event-id", event_id)
                    .header("finch-timestamp", timestamp.to_string())
                    .header("finch-signature", signature)
                    .body(body)
                    .send()
                    .await
            }
        }
    };

    println!(
        "bench ingress: {} events to {} ({})",
        args.events,
        args.url,
        match args.rate {
            Some(rate) => format!("steady {rate} events/s"),
            None => format!("concurrency {}", args.concurrency),
        }
    );
    let started = Instant::now();
    match args.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            let workers = (0..args.concurrency).map(|_| {
                let (next, tally, send) = (next.clone(), tally.clone(), send.clone());
                let total = args.events;
                tokio::spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= total {
                            return;
                        }
                        let sent_at = Instant::now();
                        let result = send(index).await;
                        tally.record(sent_at, result).await;
                    }
                })
            });
            futures::future::join_all(workers).await;
        }
        Some(rate) => {
            // Open loop: each request is timed from when it was due, so a
            // slow server cannot hide its delay by slowing the sender.
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut in_flight = Vec::with_capacity(args.events as usize);
            for index in 0..args.events {
                let due = started + interval.mul_f64(index as f64);
                tokio::time::sleep_until(due.into()).await;
                let (tally, send) = (tally.clone(), send.clone());
                in_flight.push(tokio::spawn(async move {
                    let result = send(index).await;
                    tally.record(due, result).await;
                }));
            }
            futures::future::join_all(in_flight).await;
        }
    }
    let elapsed = started.elapsed();

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let latencies = tally.latencies.lock().await;
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "throughput: {:.0} events/s over {:.2} s",
        args.events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(latencies.value_at_quantile(0.50)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max())
    );

    // Publishing follows the 200; give the outbox time to finish.
    let deadline = Instant::now() + args.settle;
    let (rows, messages) = loop {
        let rows = store::events::count_run(&pool, &prefix).await?;
        let messages = work_queue_depth(&amqp).await?.saturating_sub(depth_before);
        if messages >= rows as u64 || Instant::now() > deadline {
            break (rows, messages);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let balanced = args.events == ok && ok == rows as u64 && rows as u64 == messages && failed == 0;
    println!(
        "balance: sent {} = 200s {} = rows {} = messages {} (non-200: {failed}) -> {}",
        args.events,
        ok,
        rows,
        messages,
        if balanced {
            "balanced"
        } else {
            "VOID: the run does not balance"
        }
    );
    store::events::delete_run(&pool, &prefix).await.ok();
    amqp.close(200, "bench done".into()).await.ok();
    anyhow::ensure!(
        balanced,
        "benchmark run does not balance; its figures are void"
    );
    Ok(())
}

/// Ready messages in the work queue.
async fn work_queue_depth(amqp: &lapin::Connection) -> anyhow::Result<u64> {
    let channel = amqp.create_channel().await?;
    let ready = crate::queue::ready_messages(&channel, WORK_QUEUE)
        .await
        .context(
            "the work queue does not exist: run `finch-webhooks migrate` or start `serve` first",
        )?;
    channel.close(200, "counted".into()).await.ok();
    Ok(u64::from(ready))
}
