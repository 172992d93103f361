//! What a process costs, read from /proc: CPU as utime + stime (clock ticks), peak RSS as
//! VmHWM (KiB). A running process is sampled; a reaped child's CPU is exact through this
//! process's cutime + cstime.

use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A process's CPU and peak memory so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub ticks: u64,
    pub hwm_kib: u64,
}

impl Usage {
    /// CPU µs per event over `events`.
    pub fn us_per_event(&self, events: u64) -> f64 {
        ticks_us(self.ticks) / events.max(1) as f64
    }

    pub fn rss_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// Clock ticks in µs.
pub fn ticks_us(ticks: u64) -> f64 {
    ticks as f64 * 1e6 / clk_tck() as f64
}

/// `pid`'s utime+stime and VmHWM, or None once it is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let ticks = stat_fields(&format!("/proc/{pid}/stat"), 11, 12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    Some(Usage {
        ticks,
        hwm_kib: hwm.trim().trim_end_matches("kB").trim().parse().ok()?,
    })
}

/// cutime+cstime of this process: the CPU of every child reaped so far.
pub fn children_ticks() -> u64 {
    stat_fields("/proc/self/stat", 13, 14).unwrap_or(0)
}

/// The sum of two fields of a /proc stat file, counted from the one after `(comm)`.
fn stat_fields(path: &str, a: usize, b: usize) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(a)?.parse::<u64>().ok()? + fields.get(b)?.parse::<u64>().ok()?)
}

fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, m)| m.trim().to_string())
    });
    model.unwrap_or_else(|| "unknown".into())
}

/// SIGTERM, wait up to 30 s, then SIGKILL.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
