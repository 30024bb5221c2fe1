//! The `finch-emulator` command line, in the library so the documentation's
//! tests can parse every emulator command they show.

use clap::{Parser, Subcommand, ValueEnum};

use crate::{EmulatorArgs, FleetArgs, SendArgs};

#[derive(Debug, Parser)]
#[command(
    name = "finch-emulator",
    version,
    about = "A local stand-in for the Finch API and its webhook delivery",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines as text or as one JSON object each.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Without a subcommand the emulator serves, configured by these flags.
    #[command(flatten)]
    pub serve: EmulatorArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one signed Finch webhook event to a URL, like the dashboard's Test button.
    Send(SendArgs),
    /// Serve a fleet of connections with a realistic mix, or with `--report`
    /// print its memory and run simulated days.
    Fleet(FleetArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
