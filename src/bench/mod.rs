//! Benchmarks that drive a running instance and print figures.

pub mod ingress;

use crate::config::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Drive signed events at a running `serve` and print throughput, latency and a balance check.
    Ingress(ingress::IngressBenchArgs),
}

pub async fn run(command: BenchCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingress(args) => ingress::run(args, settings).await,
    }
}
