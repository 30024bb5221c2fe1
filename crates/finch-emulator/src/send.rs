//! `finch-emulator send` (and `finch-webhooks send`): one signed event at any
//! endpoint, like the Test button in Finch's dashboard.

use std::time::Duration;

use anyhow::Context as _;
use finch_core::Product;
use serde_json::{json, Value};

use super::webhooks::{send_once, EventSource, Outgoing};
use finch_core::signature::WebhookSecret;

#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Endpoint to deliver to.
    #[arg(long)]
    pub url: String,
    /// Base64 webhook secret to sign with; repeat to sign with several.
    #[arg(long = "secret", required = true)]
    pub secrets: Vec<String>,
    /// Event type, e.g. `test`, `directory.created`, `job.data_sync_all.completed`.
    #[arg(long, default_value = "test")]
    pub event_type: String,
    /// Connection the event is about; a random one if not given.
    #[arg(long)]
    pub connection_id: Option<String>,
    #[arg(long)]
    pub company_id: Option<String>,
    #[arg(long)]
    pub account_id: Option<String>,
    /// How long to wait for the endpoint's answer.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A plausible `data` object for an event type, shaped as the Webhooks chapter shows.
pub fn sample_data(event_type: &str) -> Value {
    let resource = event_type.split('.').next().unwrap_or_default();
    if let Some(product) = Product::from_permission(resource) {
        return match product {
            Product::Company => Value::Null,
            Product::Directory | Product::Individual | Product::Employment => {
                json!({ "individual_id": new_id() })
            }
            Product::Payment => json!({
                "payment_id": new_id(),
                "pay_date": chrono::Utc::now().format("%m-%d-%Y").to_string(),
            }),
            Product::PayStatement => json!({ "payment_id": new_id(), "individual_id": new_id() }),
        };
    }
    match resource {
        "account" => {
            json!({ "status": "connected", "authentication_method": { "type": "credential" } })
        }
        "job" => {
            let job_id = new_id();
            let kind = if event_type.starts_with("job.benefit_") {
                "manual"
            } else {
                "automated"
            };
            json!({ "job_id": job_id, "job_url": format!("https://api.tryfinch.com/jobs/{kind}/{job_id}") })
        }
        _ => json!({}),
    }
}

/// Sends the event once and reports the answer; a non-2xx answer is an error.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    url::Url::parse(&args.url).with_context(|| format!("--url {:?}", args.url))?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| WebhookSecret::parse(s).map_err(|e| anyhow::anyhow!("--secret: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let source = EventSource {
        company_id: args.company_id.unwrap_or_else(new_id),
        account_id: args.account_id.unwrap_or_else(new_id),
        connection_id: args.connection_id.unwrap_or_else(new_id),
    };
    let event = Outgoing::new(&source, &args.event_type, sample_data(&args.event_type));
    let client = reqwest::Client::new();
    let status = send_once(&client, &args.url, &secrets, &event, args.timeout)
        .await
        .with_context(|| format!("delivering to {}", args.url))?;
    println!("{} {} -> {}", event.id, args.event_type, status);
    anyhow::ensure!(status.is_success(), "{} answered {status}", args.url);
    Ok(())
}
