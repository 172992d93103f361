//! Pacing re-publication to `--rate` events a second.
//!
//! Redis disconnects a subscriber whose pub/sub output buffer passes its limit (32 MB by
//! default); a replay written as fast as pipelines go fills a slow consumer's buffer in
//! seconds. The pacer spreads events evenly: after `n` events it waits until `n / rate`
//! seconds have passed since it started.

use std::time::{Duration, Instant};

/// The default `--rate`: well under what a consumer reading 1 KB events drains, and a
/// million events in under four minutes.
pub const DEFAULT_RATE: u32 = 5_000;

#[derive(Debug)]
pub struct Pacer {
    /// Events per second; `None` is unlimited (`--rate 0`).
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: u32) -> Pacer {
        Pacer {
            rate: (rate > 0).then_some(f64::from(rate)),
            started: Instant::now(),
            sent: 0,
        }
    }

    /// How long to wait after `n` more events to stay at the rate.
    pub fn delay_after(&mut self, n: u64) -> Duration {
        self.sent += n;
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let due = Duration::from_secs_f64(self.sent as f64 / rate);
        due.saturating_sub(self.started.elapsed())
    }

    /// Waits as long as the rate asks after `n` more events.
    pub async fn pace(&mut self, n: u64) {
        let wait = self.delay_after(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// How many events fit in one pipeline at this rate: about a tenth of a second's worth.
    pub fn batch(&self, max: usize) -> usize {
        match self.rate {
            Some(r) => ((r / 10.0) as usize).clamp(1, max),
            None => max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_keeps_the_average_rate() {
        let mut p = Pacer::new(1000);
        let wait = p.delay_after(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(Pacer::new(0).delay_after(1_000_000), Duration::ZERO);
        assert_eq!(
            (
                Pacer::new(1000).batch(1000),
                Pacer::new(5).batch(1000),
                Pacer::new(0).batch(700)
            ),
            (100, 1, 700)
        );
    }
}
