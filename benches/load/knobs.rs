//! The sizes of a run, from the environment. Full sizes are the issue's; `QUICK=1`, or running
//! under `cargo test` (no `--bench` argument), picks a smoke size that finishes in seconds.

use std::path::PathBuf;

/// Which source the daemon follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Logical,
    Trigger,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Logical => "logical",
            Mode::Trigger => "trigger",
        }
    }
}

/// Every knob, with the environment variable that sets it.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// QUICK=1, or no `--bench` argument: smoke sizes, and every event is asserted published.
    pub quick: bool,
    /// ROWS: the catch-up backlog.
    pub rows: u64,
    /// TXN: rows per backlog transaction.
    pub txn: u64,
    /// ROUNDS: catch-up rounds per mode, each on a fresh backlog.
    pub rounds: u64,
    /// CEILING=last: pg_recvlogical reads the logical backlog after Sluice, not before.
    pub ceiling_last: bool,
    /// STEADY_RATE: changes per second in the steady section.
    pub steady_rate: u64,
    /// STEADY_SECS: how long the steady writer runs.
    pub steady_secs: f64,
    /// WRITERS: connections the steady writer spreads its single-row transactions over.
    pub writers: usize,
    /// BIG_ROWS: the rows of the one big transaction (logical mode).
    pub big_rows: u64,
    /// MODES: "logical,trigger" by default.
    pub modes: Vec<Mode>,
    /// SECTIONS: "catchup,steady,big" by default.
    pub sections: Vec<String>,
    /// OUT: where figures.json, figures.md and load.png go.
    pub out: PathBuf,
    /// PG_SETTINGS: extra postgresql.conf lines for the servers, `key=value` separated by `;`
    /// (e.g. `log_min_duration_statement=20ms`); each mode's server log is then kept in OUT.
    pub pg_settings: Vec<(String, String)>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name)
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<String> {
    var(name)
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn pg_settings() -> Vec<(String, String)> {
    let text = var("PG_SETTINGS").unwrap_or_default();
    let pair = |item: &str| match item.split_once('=') {
        Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
        None => panic!("PG_SETTINGS: {item:?} is not key=value"),
    };
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(pair)
        .collect()
}

impl Knobs {
    pub fn from_env() -> Knobs {
        let bench = std::env::args().any(|a| a == "--bench");
        let quick = !bench || var("QUICK").is_some_and(|v| v != "0");
        let pick = |full: u64, smoke: u64| if quick { smoke } else { full };
        let modes = list("MODES", "logical,trigger")
            .iter()
            .map(|m| match m.as_str() {
                "logical" => Mode::Logical,
                "trigger" => Mode::Trigger,
                other => panic!("MODES: unknown mode {other:?} (logical, trigger)"),
            })
            .collect();
        let sections = list("SECTIONS", "catchup,steady,big");
        for s in &sections {
            assert!(
                ["catchup", "steady", "big"].contains(&s.as_str()),
                "SECTIONS: unknown section {s:?} (catchup, steady, big)"
            );
        }
        Knobs {
            quick,
            rows: num("ROWS", pick(200_000, 2_000)).max(1),
            txn: num("TXN", pick(1_000, 100)).max(1),
            rounds: num("ROUNDS", 1u64).max(1),
            ceiling_last: match var("CEILING").as_deref().map(str::trim) {
                None | Some("first") => false,
                Some("last") => true,
                Some(other) => panic!("CEILING={other:?}: first or last"),
            },
            steady_rate: num("STEADY_RATE", pick(5_000, 400)).max(1),
            steady_secs: num("STEADY_SECS", if quick { 1.5 } else { 60.0 }),
            writers: num("WRITERS", if quick { 2 } else { 4 }).max(1),
            big_rows: num("BIG_ROWS", pick(1_000_000, 5_000)).max(1),
            modes,
            sections,
            out: var("OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_out(quick)),
            pg_settings: pg_settings(),
        }
    }

    pub fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    /// The command that reruns exactly this configuration.
    pub fn command(&self) -> String {
        let modes: Vec<&str> = self.modes.iter().map(|m| m.name()).collect();
        let pg: Vec<String> = self
            .pg_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let pg = if pg.is_empty() {
            String::new()
        } else {
            format!("PG_SETTINGS='{}' ", pg.join(";"))
        };
        format!(
            "{}{pg}ROWS={} TXN={} ROUNDS={} CEILING={} STEADY_RATE={} STEADY_SECS={} WRITERS={} BIG_ROWS={} MODES={} SECTIONS={} cargo bench --bench load",
            if self.quick { "QUICK=1 " } else { "" },
            self.rows, self.txn, self.rounds, if self.ceiling_last { "last" } else { "first" }, self.steady_rate, self.steady_secs, self.writers, self.big_rows,
            modes.join(","), self.sections.join(",")
        )
    }
}

/// `<target dir>/load` (`/quick` for smoke runs, so a test run never overwrites real figures).
/// The target dir is found from this executable, `<target>/<profile>/deps/load-<hash>`.
fn default_out(quick: bool) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let out = target.join("load");
    if quick {
        out.join("quick")
    } else {
        out
    }
}
