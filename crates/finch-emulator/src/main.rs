//! `finch-emulator`: the Finch emulator on its own, for a local stack that
//! runs the service from its production image, or for trying Finch's API
//! without the service.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use finch_emulator::{EmulatorArgs, FleetArgs, SendArgs};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "finch-emulator",
    version,
    about = "A local stand-in for the Finch API and its webhook delivery",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log lines as text or as one JSON object each.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Without a subcommand the emulator serves, configured by these flags.
    #[command(flatten)]
    serve: EmulatorArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one signed Finch webhook event to a URL, like the dashboard's Test button.
    Send(SendArgs),
    /// Serve a fleet of connections with a realistic mix, or with `--report`
    /// print its memory and run simulated days.
    Fleet(FleetArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let outcome = runtime.block_on(async {
        match cli.command {
            Some(Command::Send(args)) => finch_emulator::send(args).await,
            Some(Command::Fleet(args)) => {
                finch_emulator::run_fleet(args, finch_core::shutdown::signal()).await
            }
            None => finch_emulator::run(cli.serve, finch_core::shutdown::signal()).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("finch-emulator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
