//! The load benchmark of issue 6: how fast and how lean Sluice is end to end, against the
//! ceilings and targets the issue sets, on throwaway servers, with one command:
//!
//! ```text
//! cargo bench --bench load
//! ```
//!
//! Per mode (logical, then trigger; each on its own PostgreSQL and Redis from
//! `sluice::testkit`, never the machine's 5432/6379), the sections run in this order:
//!
//! 1. catch-up (`catchup`): a backlog of `ROWS` rows in `TXN`-row transactions, written while
//!    no daemon runs, drained by `sluice run`; in logical mode also by `pg_recvlogical` on a
//!    second slot, the ceiling. Events/s, ratio, CPU µs per event, peak RSS.
//! 2. steady state (`steady`): `STEADY_RATE` single-row transactions a second for
//!    `STEADY_SECS`, latency from commit to a subscriber receiving the event, p50/p99/max.
//! 3. one big transaction (`big`, logical mode only): `BIG_ROWS` rows in one transaction,
//!    peak RSS and time to publish it all.
//!
//! How each is measured is in its module's docs. The figures are printed as a table with the
//! issue's targets and MET/MISSED, and written to `<target>/load/figures.json`, `figures.md`
//! and drawn to `load.png` (`OUT` overrides the directory). Knobs, all from the environment:
//! ROWS, TXN, ROUNDS, CEILING, STEADY_RATE, STEADY_SECS, WRITERS, BIG_ROWS, MODES, SECTIONS,
//! OUT (see `knobs`). The machine has 2 cores shared by PostgreSQL, Redis, Sluice and this harness, as
//! the issue's targets assume: run it on an otherwise quiet machine.
//!
//! Under `cargo test` (no `--bench` argument), or with QUICK=1, it is a smoke run of a few
//! seconds a mode that still asserts every event was published, writing to
//! `<target>/load/quick/`. The daemon is `env!("CARGO_BIN_EXE_sluice")`, which Cargo builds
//! for benches as for integration tests (release under `cargo bench`).

mod catchup;
mod chart;
mod env;
mod knobs;
mod procs;
mod report;
mod resp;
mod steady;

use env::Env;
use knobs::{Knobs, Mode};
use report::Figures;

fn main() {
    let knobs = Knobs::from_env();
    let machine = format!(
        "{} cores, {}, {}",
        procs::cores(),
        procs::cpu_model(),
        kernel()
    );
    println!(
        "sluice load benchmark{} on {machine}",
        if knobs.quick {
            " (QUICK smoke run)"
        } else {
            ""
        }
    );
    let mut figures = Figures::default();
    for &mode in &knobs.modes {
        run_mode(mode, &knobs, &mut figures);
    }
    println!("\n{}", figures.table(false));
    if let Err(e) = figures.write(&knobs.out, &knobs, &machine) {
        panic!("writing figures to {}: {e}", knobs.out.display());
    }
    let png = knobs.out.join("load.png");
    match chart::draw(&figures, &png, &format!("Sluice load benchmark: {machine}")) {
        Ok(()) => println!(
            "figures: {} (.json, .md), chart: {}",
            knobs.out.join("figures").display(),
            png.display()
        ),
        Err(e) => println!(
            "figures: {} (.json, .md); no chart: {e}",
            knobs.out.join("figures").display()
        ),
    }
    println!("rerun: {}", knobs.command());
}

/// The sections of one mode, on that mode's own servers.
fn run_mode(mode: Mode, knobs: &Knobs, figures: &mut Figures) {
    println!("\n== {} mode", mode.name());
    let env = Env::start(mode, &knobs.pg_settings);
    if knobs.runs("catchup") {
        for round in 1..=knobs.rounds {
            println!(
                "catch-up of {} rows in {}-row transactions, round {round}",
                knobs.rows, knobs.txn
            );
            let ceiling = if knobs.ceiling_last {
                catchup::Ceiling::Last
            } else {
                catchup::Ceiling::First
            };
            let drained = catchup::catchup(&env, knobs.rows, knobs.txn, ceiling);
            println!(
                "  drained in {:.2} s ({:.0} events/s)",
                drained.sluice.secs,
                knobs.rows as f64 / drained.sluice.secs
            );
            figures.drained("catch-up", &drained);
        }
    }
    if knobs.runs("steady") {
        println!(
            "steady: {} changes/s for {} s over {} connections",
            knobs.steady_rate, knobs.steady_secs, knobs.writers
        );
        let steady = steady::steady(&env, knobs);
        println!(
            "  {} events, p99 {:.2} ms, writer reached {:.0}/s",
            steady.latencies_us.len(),
            steady.quantile_ms(0.99),
            steady.write_rate
        );
        figures.steady(&steady);
    }
    if knobs.runs("big") && mode == Mode::Logical {
        println!("one transaction of {} rows", knobs.big_rows);
        let drained = catchup::big_txn(&env, knobs.big_rows);
        println!(
            "  published in {:.2} s, peak RSS {:.1} MiB",
            drained.sluice.secs,
            drained.sluice.usage.rss_mib()
        );
        figures.drained("big txn", &drained);
    }
    if !knobs.pg_settings.is_empty() {
        let log = knobs.out.join(format!("postgres-{}.log", mode.name()));
        env.keep_server_log(&log);
        println!("server log: {}", log.display());
    }
}

fn kernel() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}", release.trim())
}
