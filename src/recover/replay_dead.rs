//! `sluice replay dead-letters`: re-route and re-publish parked events, then mark them resolved.

use std::process::ExitCode;

use tokio::sync::watch;

use super::filter::Filters;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub filters: Filters,
    /// Print what would be replayed, publish nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Events per second at most (0: unlimited)
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
}

pub async fn run(_config: &Config, _args: Args, _shutdown: watch::Receiver<bool>) -> Result<ExitCode, String> {
    Err("replay dead-letters is not built yet".into())
}
