//! `finch-emulator`: the Finch emulator on its own, for a local stack that
//! runs the service from its production image, or for trying Finch's API
//! without the service.

use std::process::ExitCode;

use clap::Parser;
use finch_emulator::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

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
