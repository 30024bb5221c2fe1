//! Benchmarks that drive a running instance and print figures.

use crate::config::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {}

pub async fn run(command: BenchCommand, _settings: &Settings) -> anyhow::Result<()> {
    match command {}
}
