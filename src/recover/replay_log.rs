//! `sluice replay change-log`: re-publish past changes kept in `sluice.change_log`.

use std::process::ExitCode;

use tokio::sync::watch;

use super::filter::{Bound, Filters};
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First change to replay: a change_log id (42), a time (2026-11-22T10:00:00Z) or a
    /// duration ago (1h)
    #[arg(long, value_parser = Bound::parse)]
    pub from: Bound,
    /// Last change to replay, inclusive for an id, exclusive for a time [default: now]
    #[arg(long, value_parser = Bound::parse)]
    pub to: Option<Bound>,
    #[command(flatten)]
    pub filters: Filters,
    /// Print how many changes the window holds, publish nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Events per second at most (0: unlimited)
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
}

pub async fn run(_config: &Config, _args: Args, _shutdown: watch::Receiver<bool>) -> Result<ExitCode, String> {
    Err("replay change-log is not built yet".into())
}
