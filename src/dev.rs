//! `finch-webhooks dev`: the whole service on one machine.
//!
//! Waits for the emulator to be merged; until then it explains itself.

use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct DevArgs {}

pub async fn run(_args: DevArgs, _settings: Settings) -> anyhow::Result<()> {
    anyhow::bail!("`dev` needs the Finch emulator, which this build does not include yet")
}
