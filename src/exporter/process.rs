//! The process's own metrics, as the Prometheus client libraries export them (the Go client's
//! process collector): CPU time, resident and virtual memory, open and allowed file
//! descriptors, start time. Read from `/proc` at each scrape, so they cost nothing between
//! scrapes; on a system without `/proc` they are simply absent.
//!
//! They are written as text after the recorder's output rather than through the `metrics`
//! facade, whose counters are integers: `process_cpu_seconds_total` is a counter in seconds
//! with a fraction, as every client library gives it.

use std::fmt::Write;

use crate::telemetry as m;

/// What one look at `/proc/self` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl Process {
    /// The current process; `None` where `/proc` cannot be read.
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let (ticks, page) = (sysconf(libc::_SC_CLK_TCK)?, sysconf(libc::_SC_PAGESIZE)?);
        let mut p = Process::from_stat(&stat, ticks, page, boot)?;
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p.max_fds = max_fds();
        Some(p)
    }

    /// Parses `/proc/self/stat` (proc(5)): `ticks` per second, `page` bytes, `boot` the
    /// system's boot time in seconds since the epoch.
    pub fn from_stat(stat: &str, ticks: u64, page: u64, boot: u64) -> Option<Process> {
        // The command name (field 2) may hold spaces and parentheses: fields count from the
        // last ')', whose next field is field 3 (state).
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
        Some(Process {
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
            resident_bytes: field(24)? * page,
            virtual_bytes: field(23)?,
            start_time_seconds: boot as f64 + start as f64 / ticks as f64,
            open_fds: None,
            max_fds: None,
        })
    }

    /// The Prometheus text format: `# HELP`, `# TYPE` and one sample per metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        };
        let cpu = "Total user and system CPU time spent in seconds.";
        metric(
            m::PROCESS_CPU_SECONDS,
            "counter",
            cpu,
            self.cpu_seconds.to_string(),
        );
        let rss = "Resident memory size in bytes.";
        metric(
            m::PROCESS_RESIDENT_MEMORY,
            "gauge",
            rss,
            self.resident_bytes.to_string(),
        );
        let vsz = "Virtual memory size in bytes.";
        metric(
            m::PROCESS_VIRTUAL_MEMORY,
            "gauge",
            vsz,
            self.virtual_bytes.to_string(),
        );
        if let Some(n) = self.open_fds {
            metric(
                m::PROCESS_OPEN_FDS,
                "gauge",
                "Number of open file descriptors.",
                n.to_string(),
            );
        }
        if let Some(n) = self.max_fds {
            let help = "Maximum number of open file descriptors.";
            metric(m::PROCESS_MAX_FDS, "gauge", help, n.to_string());
        }
        let start = "Start time of the process since unix epoch in seconds.";
        metric(
            m::PROCESS_START_TIME,
            "gauge",
            start,
            self.start_time_seconds.to_string(),
        );
        out
    }
}

/// The `btime` line of `/proc/stat`: when the system booted, seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// The soft limit on open files (`RLIMIT_NOFILE`), as `/proc/self/limits` shows it.
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        // pid (comm) state ppid ... utime=250 stime=50 ... starttime=1000 vsize rss=300
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 \
                    123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = Process::from_stat(stat, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(
            (p.resident_bytes, p.virtual_bytes),
            (300 * 4096, 123_456_789)
        );
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(Process::from_stat("42 (truncated", 100, 4096, 0), None);
    }

    #[test]
    fn this_process_reads_and_renders_as_a_client_library_would() {
        let p = Process::read().expect("/proc is readable on Linux");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0);
        assert!(p.resident_bytes > 1 << 20 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds.unwrap() >= 3 && p.max_fds.unwrap() >= p.open_fds.unwrap());
        let text = p.render();
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ")
        );
        for name in [
            m::PROCESS_RESIDENT_MEMORY,
            m::PROCESS_OPEN_FDS,
            m::PROCESS_MAX_FDS,
            m::PROCESS_START_TIME,
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} gauge\n{name} ")),
                "{text}"
            );
        }
    }
}
