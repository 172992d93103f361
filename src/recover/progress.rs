//! Progress of a long command: a bar redrawn in place on a terminal, a plain line every few
//! seconds otherwise (logs, CI), and one summary line at the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(5);
const WIDTH: usize = 30;

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    tty: bool,
}

impl Progress {
    /// `what` names the unit (`events`, `rows`); `total` when it is known up front.
    pub fn new(what: &'static str, total: Option<u64>) -> Progress {
        Progress {
            what,
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty { REDRAW } else { PLAIN_EVERY };
        if self.drawn.is_none_or(|t| t.elapsed() >= every) {
            self.drawn = Some(Instant::now());
            self.draw();
        }
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Clears the bar; the caller prints the summary line on stdout.
    pub fn finish(&self) {
        if self.tty && self.drawn.is_some() {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }

    fn draw(&self) {
        let line = self.line();
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }

    /// `[#########.....] 1200/5000 events  950/s  eta 4s`, or without a total `1200 events  950/s`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(total) if total > 0 => {
                let filled = ((self.done.min(total) as f64 / total as f64) * WIDTH as f64) as usize;
                let left = total.saturating_sub(self.done) as f64 / rate.max(1e-9);
                format!(
                    "[{}{}] {}/{} {}  {:.0}/s  eta {}",
                    "#".repeat(filled),
                    ".".repeat(WIDTH - filled),
                    self.done,
                    total,
                    self.what,
                    rate,
                    humantime::format_duration(Duration::from_secs(left.min(1e7) as u64))
                )
            }
            _ => format!("{} {}  {:.0}/s", self.done, self.what, rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_count_total_and_bar() {
        let mut p = Progress {
            tty: false,
            drawn: Some(Instant::now()),
            ..Progress::new("events", Some(100))
        };
        p.add(50);
        let line = p.line();
        assert!(
            line.starts_with(&format!(
                "[{}{}] 50/100 events",
                "#".repeat(15),
                ".".repeat(15)
            )),
            "{line}"
        );
        let p = Progress {
            tty: false,
            ..Progress::new("rows", None)
        };
        assert!(p.line().starts_with("0 rows"), "{}", p.line());
    }
}
