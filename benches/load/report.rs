//! The figures of a run as one flat list (section, mode, metric, value, target), printed as a
//! table and written as figures.json and figures.md. Targets are issue 6's; a figure without
//! one is context (the ceiling, the walsender's share, the writer's achieved rate).

use std::fmt::Write as _;
use std::path::Path;

use crate::catchup::Drained;
use crate::knobs::{Knobs, Mode};
use crate::procs::ticks_us;
use crate::steady::Steady;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
            Target::Below(t) => value < t,
        }
    }

    pub fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {}", num(t)),
            Target::AtMost(t) => format!("≤ {}", num(t)),
            Target::Below(t) => format!("< {}", num(t)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub mode: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub value: f64,
    pub target: Option<Target>,
}

impl Figure {
    pub fn verdict(&self) -> &'static str {
        match self.target {
            None => "",
            Some(t) if t.met(self.value) => "MET",
            Some(_) => "MISSED",
        }
    }
}

/// A number as the table shows it: thousands separated, fewer decimals as it grows.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let decimals = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}")
}

#[derive(Default)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    fn add(
        &mut self,
        section: &'static str,
        mode: Mode,
        metric: &'static str,
        unit: &'static str,
        value: f64,
        target: Option<Target>,
    ) {
        self.0.push(Figure {
            section,
            mode: mode.name(),
            metric,
            unit,
            value,
            target,
        });
    }

    /// Sections (1) and (3).
    pub fn drained(&mut self, section: &'static str, d: &Drained) {
        let (m, rate) = (d.mode, d.rows as f64 / d.sluice.secs);
        if let Some(c) = &d.ceiling {
            let ceiling = d.rows as f64 / c.secs;
            self.add(
                section,
                m,
                "pg_recvlogical (ceiling)",
                "events/s",
                ceiling,
                None,
            );
            self.add(
                section,
                m,
                "sluice",
                "events/s",
                rate,
                Some(Target::AtLeast(0.8 * ceiling)),
            );
            self.add(
                section,
                m,
                "sluice / ceiling",
                "ratio",
                rate / ceiling,
                Some(Target::AtLeast(0.8)),
            );
            self.add(
                section,
                m,
                "walsender CPU (ceiling)",
                "µs/event",
                ticks_us(c.walsender_ticks) / d.rows as f64,
                None,
            );
        } else {
            let target =
                (section == "catch-up" && m == Mode::Trigger).then_some(Target::AtLeast(80_000.0));
            self.add(section, m, "sluice", "events/s", rate, target);
        }
        self.add(section, m, "time to publish all", "s", d.sluice.secs, None);
        self.add(
            section,
            m,
            "first publish after",
            "s",
            d.first_publish,
            None,
        );
        self.add(
            section,
            m,
            "sluice CPU",
            "µs/event",
            d.sluice.usage.us_per_event(d.rows),
            Some(Target::AtMost(5.0)),
        );
        if m == Mode::Logical {
            self.add(
                section,
                m,
                "walsender CPU (sluice)",
                "µs/event",
                ticks_us(d.sluice.walsender_ticks) / d.rows as f64,
                None,
            );
        }
        self.add(
            section,
            m,
            "Redis CPU",
            "µs/event",
            d.redis_cpu_secs * 1e6 / d.rows as f64,
            None,
        );
        let rss = if section == "catch-up" { 50.0 } else { 128.0 };
        self.add(
            section,
            m,
            "sluice peak RSS",
            "MiB",
            d.sluice.usage.rss_mib(),
            Some(Target::Below(rss)),
        );
    }

    /// Section (2).
    pub fn steady(&mut self, s: &Steady) {
        let (m, p99) = (s.mode, if s.mode == Mode::Logical { 10.0 } else { 25.0 });
        self.add(
            "steady",
            m,
            "writer achieved",
            "changes/s",
            s.write_rate,
            None,
        );
        self.add(
            "steady",
            m,
            "writer INSERTs in flight",
            "max",
            s.max_in_flight as f64,
            None,
        );
        self.add(
            "steady",
            m,
            "events received",
            "events",
            s.latencies_us.len() as f64,
            Some(Target::AtLeast(s.written as f64)),
        );
        self.add("steady", m, "latency p50", "ms", s.quantile_ms(0.5), None);
        self.add(
            "steady",
            m,
            "latency p99",
            "ms",
            s.quantile_ms(0.99),
            Some(Target::Below(p99)),
        );
        self.add("steady", m, "latency max", "ms", s.quantile_ms(1.0), None);
        let events = s.latencies_us.len() as u64;
        self.add(
            "steady",
            m,
            "sluice CPU",
            "µs/event",
            s.usage.us_per_event(events),
            Some(Target::AtMost(5.0)),
        );
        self.add(
            "steady",
            m,
            "sluice peak RSS",
            "MiB",
            s.usage.rss_mib(),
            None,
        );
    }

    /// The table, as printed and as markdown (the same rows).
    pub fn table(&self, markdown: bool) -> String {
        let mut out = String::new();
        let header = [
            "section", "mode", "metric", "value", "unit", "target", "verdict",
        ];
        if markdown {
            let _ = writeln!(
                out,
                "| {} |\n|{}",
                header.join(" | "),
                "---|".repeat(header.len())
            );
        } else {
            let _ = writeln!(
                out,
                "{:<9} {:<8} {:<25} {:>12} {:<10} {:<12} {}",
                header[0], header[1], header[2], header[3], header[4], header[5], header[6]
            );
        }
        for f in &self.0 {
            let target = f.target.map(Target::text).unwrap_or_default();
            let value = num(f.value);
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {value} | {} | {target} | {} |",
                    f.section,
                    f.mode,
                    f.metric,
                    f.unit,
                    f.verdict()
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:<9} {:<8} {:<25} {value:>12} {:<10} {target:<12} {}",
                    f.section,
                    f.mode,
                    f.metric,
                    f.unit,
                    f.verdict()
                );
            }
        }
        out
    }

    /// figures.json and figures.md in `dir`.
    pub fn write(&self, dir: &Path, knobs: &Knobs, machine: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let figures: Vec<serde_json::Value> = self.0.iter().map(|f| serde_json::json!({
            "section": f.section, "mode": f.mode, "metric": f.metric, "unit": f.unit, "value": f.value,
            "target": f.target.map(Target::text), "verdict": f.verdict(),
        })).collect();
        let json = serde_json::json!({ "command": knobs.command(), "machine": machine, "quick": knobs.quick, "figures": figures });
        std::fs::write(
            dir.join("figures.json"),
            serde_json::to_string_pretty(&json)? + "\n",
        )?;
        let md = format!(
            "Machine: {machine}\n\nCommand: `{}`\n\n{}",
            knobs.command(),
            self.table(true)
        );
        std::fs::write(dir.join("figures.md"), md)
    }
}
