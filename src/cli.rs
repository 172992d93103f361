//! The command line: `sluice [--config PATH] [--log-format text|json] [--log-level LEVEL] <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, Env, Problem, RedisConfig, SourceMode};
use crate::health::{Health, Phase};
use crate::recover::{backfill, dead_letters, replay_dead, replay_log};
use crate::route::{preview, Router};
use crate::telemetry::{init_logging, LogFormat};
use crate::{check, pg, redact, run, setup, status, tail, teardown};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Change-data-capture from PostgreSQL to per-application Redis channels",
    long_about = "Sluice follows every committed change in PostgreSQL, works out which application and tenant \
it belongs to, and publishes a JSON event on the Redis channel <app>:<tenant>:<type>. It moves its \
checkpoint only past what Redis acknowledged and parks undeliverable events in sluice.dead_letter.\n\n\
First time: write sluice.toml (see config.example.toml), then `sluice check`, `sluice setup`, `sluice run`."
)]
pub struct Cli {
    /// Config file [default: $SLUICE_CONFIG, then ./sluice.toml]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,
    /// Log format
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        help_heading = "Global options"
    )]
    pub log_format: LogFormat,
    /// Log level or tracing filter (e.g. info, debug, sluice=debug)
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "SLUICE_LOG",
        help_heading = "Global options"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: follow changes, publish, checkpoint; stops cleanly on SIGTERM/SIGINT
    Run,
    /// Create or upgrade every SQL object Sluice needs and attach the capture triggers (idempotent)
    Setup {
        /// Print the SQL instead of running it
        #[arg(long)]
        dry_run: bool,
        /// Logical mode: drop the replication slot and create it anew at the current WAL
        /// position. Changes between the old slot's position and now are NOT streamed:
        /// backfill afterwards. Use it after the slot was lost or invalidated.
        #[arg(long)]
        recreate_slot: bool,
    },
    /// Validate the config and the servers; one line per finding, exit 1 if any failed
    Check,
    /// Subscribe to a channel pattern and print events as they arrive
    ///
    /// Needs only Redis: with no config file, --redis-url or REDIS_URL is enough. A config
    /// file, when there is one, gives the [redis] section (TLS files, timeouts); the URL
    /// given here overrides its redis.url.
    Tail {
        /// Redis channel pattern, e.g. crm:tenant-123:*
        #[arg(default_value = "*:*:*")]
        pattern: String,
        /// Print each event's JSON alone, one per line (for jq), without the channel
        #[arg(long)]
        json: bool,
        /// Redis to follow, e.g. redis://127.0.0.1:6379 [default: redis.url, REDIS_URL]
        #[arg(long, value_name = "URL")]
        redis_url: Option<String>,
    },
    /// Look at and clear the dead-letter table: what could not be delivered, and why
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::Command),
    /// Re-publish what a consumer missed: parked dead letters, or a window of past changes
    #[command(subcommand)]
    Replay(Replay),
    /// Publish the current rows of a table as SNAPSHOT events, in order with live changes
    ///
    /// Reads the table in key order, in short transactions that lock each chunk FOR SHARE and
    /// write its snapshot into the stream itself, so a concurrent update of a row always comes
    /// after that row's snapshot. `sluice run` publishes them. Resume with --after.
    Backfill(backfill::Args),
    /// Where the source stands, read from PostgreSQL (works while the daemon is down)
    ///
    /// Position, lag, retained WAL (logical) or pending changes (trigger), open dead letters by
    /// reason, and the last error the daemon stored; plus the daemon's phase and uptime if its
    /// HTTP endpoint at [http] listen answers within a second. Exit 1 only when PostgreSQL
    /// cannot be read.
    Status {
        /// Print one JSON object instead of aligned lines
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (TOML): each value with where it came from
    ///
    /// The file, `SLUICE_<SECTION>_<KEY>` variables over it (and DATABASE_URL, REDIS_URL),
    /// the defaults under it; after each value, `sluice.toml:LINE`, `env VAR` or `default`.
    /// Passwords are shown as ***. Under [postgres], what libpq's variables (PGUSER,
    /// PGPASSWORD, ...) and the password file add when Sluice connects.
    Config,
    /// Show what a row would become: channels, cache keys, or the dead-letter reason
    ///
    /// Routes the row with the same compiled routes the daemon uses, without connecting to
    /// PostgreSQL or Redis and without writing anything. Exit status: 0 when it would be
    /// published, 1 when it would be dead-lettered (the reason is printed), 3 when nothing
    /// would be published (delivery.on_unroutable = "drop", or no app), 2 for an unknown
    /// table or a row that is not a JSON object.
    Route(preview::Args),
    /// Drop the replication slot, publication and capture triggers that setup made
    ///
    /// Without --yes it prints what it would drop and exits 1. It refuses while a daemon is
    /// active (streaming the slot, or reading the change_log): stop `sluice run` first. The
    /// sluice schema (dead letters, change_log history, checkpoints) is kept unless
    /// --drop-schema is given too, so a later `sluice setup` resumes from it.
    Teardown(teardown::Args),
    /// Print a shell completion script (no config needed)
    ///
    /// bash: `sluice completions bash > /etc/bash_completion.d/sluice`
    ///
    /// zsh: `sluice completions zsh > "${fpath[1]}/_sluice"`
    ///
    /// fish: `sluice completions fish > ~/.config/fish/completions/sluice.fish`
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum Replay {
    /// Re-route and re-publish open dead letters (after fixing their cause), marking each
    /// delivered one resolved; one that fails again stays, its attempts counted
    #[command(name = "dead-letters")]
    DeadLetters(replay_dead::Args),
    /// Re-publish past changes kept in sluice.change_log, with their original eventId and
    /// "replay": "change_log"
    #[command(name = "change-log")]
    ChangeLog(replay_log::Args),
}

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    if let Command::Completions { shell } = cli.command {
        return completions(shell);
    }
    let path = cli.config.clone().unwrap_or_else(Config::default_path);
    if let Command::Tail {
        pattern,
        json,
        redis_url,
    } = cli.command
    {
        let explicit = cli.config.is_some() || std::env::var_os("SLUICE_CONFIG").is_some();
        return tail_command(&path, explicit, redis_url, &pattern, json);
    }
    let (config, router) = match load(&path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {}", redact::text(&e.to_string(), &[]));
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Command::Config => {
            print!("{}", crate::config::show(&config, &path));
            return ExitCode::SUCCESS;
        }
        Command::Route(args) => return preview::run(&config, &router, args),
        _ => {}
    }
    let secrets = redact::secrets(&[&config.postgres.url, &config.redis.url]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command, config, router)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {}", masked(&message, &secrets));
            ExitCode::FAILURE
        }
    }
}

/// `sluice completions SHELL`: the script on stdout (a closed pipe, as with `| head`, is no
/// error).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write the completion script: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Reads and validates the config, and compiles its routes: every problem at once, each with
/// its line.
fn load(path: &std::path::Path) -> Result<(Config, Router), ConfigError> {
    let config = Config::load(path)?;
    let router = Router::compile(&config).map_err(|found| {
        let problems = found
            .into_iter()
            .map(|p| Problem::key(&p.locate, p.message))
            .collect();
        config.invalid(path, problems)
    })?;
    Ok((config, router))
}

async fn dispatch(command: Command, config: Config, router: Router) -> Result<ExitCode, String> {
    match command {
        Command::Run => Ok(run_daemon(config, router).await),
        Command::Setup {
            dry_run,
            recreate_slot,
        } => setup_command(&config, dry_run, recreate_slot).await,
        Command::Check => {
            let findings = check::check(&config).await;
            findings.iter().for_each(|f| println!("{f}"));
            Ok(if findings.iter().all(|f| f.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::DeadLetters(command) => dead_letters::run(&config, command).await,
        Command::Replay(Replay::DeadLetters(args)) => {
            replay_dead::run(&config, &router, args, interrupted()).await
        }
        Command::Replay(Replay::ChangeLog(args)) => {
            replay_log::run(&config, &router, args, interrupted()).await
        }
        Command::Backfill(args) => backfill::run(&config, args, interrupted()).await,
        Command::Status { json } => status::run(&config, json).await,
        Command::Teardown(args) => teardown::run(&config, args).await,
        Command::Config | Command::Route(_) => unreachable!("answered before the runtime starts"),
        Command::Tail { .. } | Command::Completions { .. } => {
            unreachable!("tail and completions run without the whole config")
        }
    }
}

/// `sluice tail`: only Redis is needed (see [`tail_redis`]).
fn tail_command(
    path: &std::path::Path,
    explicit: bool,
    redis_url: Option<String>,
    pattern: &str,
    json: bool,
) -> ExitCode {
    let config = match tail_redis(path, explicit, redis_url) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {}", redact::text(&message, &[]));
            return ExitCode::from(2);
        }
    };
    let secrets = redact::secrets(&[&config.url]);
    let output = if json {
        tail::Output::Json
    } else {
        tail::Output::Text
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(tail::tail(&config, pattern, output, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", masked(&message, &secrets));
            ExitCode::FAILURE
        }
    }
}

/// The config file's `[redis]` section when the file exists (or was named); without one, the
/// defaults with the environment over them (`REDIS_URL`, `SLUICE_REDIS_*`). `--redis-url` wins
/// either way.
fn tail_redis(
    path: &std::path::Path,
    explicit: bool,
    redis_url: Option<String>,
) -> Result<RedisConfig, String> {
    let redis_url = redis_url.filter(|u| !u.is_empty());
    let config = if explicit || path.exists() {
        load(path).map_err(|e| e.to_string())?.0.redis
    } else {
        let env = Env::from_process();
        let named = ["REDIS_URL", "SLUICE_REDIS_URL"]
            .iter()
            .any(|v| env.nonempty(v).is_some());
        if redis_url.is_none() && !named {
            return Err(format!(
                "no config file at {}: give the Redis to follow with --redis-url or REDIS_URL, or a config with --config",
                path.display()
            ));
        }
        // Only [redis] matters here; naming [postgres] asks the environment for no database.
        Config::from_sources("[postgres]\n", path, &env)
            .map_err(|e| e.to_string())?
            .redis
    };
    Ok(RedisConfig {
        url: redis_url.unwrap_or(config.url),
        ..config
    })
}

/// `message` with the passwords in `secrets` (and in any URL it holds) masked, for the terminal.
fn masked(message: &str, secrets: &[String]) -> String {
    redact::text(
        message,
        &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// `sluice run`: the daemon, stopped by SIGTERM/SIGINT within `delivery.shutdown_timeout`.
async fn run_daemon(config: Config, router: Router) -> ExitCode {
    let limit = config.delivery.shutdown_timeout;
    let secrets = redact::secrets(&[&config.postgres.url, &config.redis.url]);
    let health = std::sync::Arc::new(Health::new());
    ignore_sighup();
    let (tx, rx) = watch::channel(false);
    let (overdue_tx, overdue) = tokio::sync::oneshot::channel::<&'static str>();
    let stopping = health.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopping.set_phase(Phase::ShuttingDown);
        tracing::info!(timeout = ?limit, "shutdown requested; finishing the batch in flight");
        let _ = tx.send(true);
        let why = tokio::select! {
            _ = tokio::time::sleep(limit) => "shutdown did not finish within delivery.shutdown_timeout",
            _ = shutdown_signal() => "a second signal arrived",
        };
        let _ = overdue_tx.send(why);
    });
    tokio::select! {
        result = run::run(config, router, health, rx) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", masked(&e.to_string(), &secrets));
                ExitCode::from(crate::error::exit_code(&e))
            }
        },
        Ok(why) = overdue => {
            eprintln!("error: {why}; exiting without confirming the batch in flight (it is read again at the next start)");
            ExitCode::FAILURE
        }
    }
}

async fn setup_command(
    config: &Config,
    dry_run: bool,
    recreate_slot: bool,
) -> Result<ExitCode, String> {
    let url = redact::url(&config.postgres.url);
    let conn = pg::connect(&config.postgres.url, config.postgres.connect_timeout)
        .await
        .map_err(|e| {
            format!(
                "cannot connect to PostgreSQL at {url}: {e}; check postgres.url (or DATABASE_URL)"
            )
        })?;
    let mut plan = setup::plan(&conn.client, config)
        .await
        .map_err(|e| e.to_string())?;
    if recreate_slot {
        plan.recreate_slot(&config.source.slot)
            .map_err(|e| e.to_string())?;
    }
    if dry_run {
        print!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    setup::apply(&conn.client, &plan)
        .await
        .map_err(|e| e.to_string())?;
    match config.source.mode {
        SourceMode::Trigger => println!(
            "setup complete: schema sluice and capture triggers on {} tables",
            config.tables.len()
        ),
        SourceMode::Logical => println!(
            "setup complete: schema sluice, publication {} on {} tables, slot {}",
            config.source.publication,
            config.tables.len(),
            config.source.slot
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A flag that turns true on SIGTERM or SIGINT: long commands stop after the batch in flight.
fn interrupted() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("interrupted; stopping after the batch in flight");
        let _ = tx.send(true);
    });
    rx
}

/// SIGHUP would end the process silently (its default), and systemd would count that as a
/// clean stop. The daemon keeps running and says so: nothing is reloaded in place.
fn ignore_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received and ignored: nothing is reloaded in place; restart sluice to apply config changes");
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
