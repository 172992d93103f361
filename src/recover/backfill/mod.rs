//! `sluice backfill`: publish the current rows of a table as `SNAPSHOT` events, in order with
//! live changes.

use std::process::ExitCode;

use tokio::sync::watch;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table (schema.table; a bare name means public.name); it must have a route
    #[arg(long)]
    pub table: String,
    /// Only this tenant's rows
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only rows matching this SQL condition, e.g. "updated_at > now() - interval '1 day'"
    #[arg(long = "where", value_name = "SQL")]
    pub filter: Option<String>,
    /// Resume after this primary key (printed by an interrupted backfill; composite keys
    /// joined by ',')
    #[arg(long, value_name = "KEY")]
    pub after: Option<String>,
    /// Print how many rows would be snapshotted, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Rows per second at most (0: unlimited)
    #[arg(long, default_value_t = super::pace::DEFAULT_RATE)]
    pub rate: u32,
    /// Rows per chunk (one short transaction each)
    #[arg(long, default_value_t = 500)]
    pub chunk: i64,
}

pub async fn run(_config: &Config, _args: Args, _shutdown: watch::Receiver<bool>) -> Result<ExitCode, String> {
    Err("backfill is not built yet".into())
}
