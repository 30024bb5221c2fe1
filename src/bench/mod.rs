//! Benchmarks that drive a running instance and print figures.

pub mod fleet;
pub mod ingress;
pub mod sync;

use crate::config::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Drive signed events at a running `serve` and print throughput, latency and a balance check.
    Ingress(ingress::IngressBenchArgs),
    /// Drive the worker against the emulator: Finch requests, 429s and time to a correct copy.
    Sync(sync::SyncArgs),
    /// A fleet of connections over simulated days: budget per day, staleness, sweeps, and a diff of every table.
    Fleet(fleet::FleetArgs),
}

pub async fn run(command: BenchCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingress(args) => ingress::run(args, settings).await,
        BenchCommand::Sync(args) => sync::run(args, settings).await,
        BenchCommand::Fleet(args) => fleet::run(args, settings).await,
    }
}
