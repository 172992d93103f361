//! Exponential backoff with jitter, for every retry of the daemon and the commands.
//!
//! The wait starts near `delivery.initial_backoff`, grows 1.5 times per retry up to
//! `delivery.max_backoff`, and never gives up. Each wait is drawn at random between half and
//! one and a half times the current interval (never above `max_backoff`), so daemons that lost
//! the same server at the same moment do not all come back in step. These are the rules the
//! `backoff` crate's `ExponentialBackoff` followed with its defaults; that crate is no longer
//! maintained (RUSTSEC-2025-0012), and a dozen lines do the same.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::DeliveryConfig;

/// How much the interval grows per retry.
const MULTIPLIER: f64 = 1.5;
/// A wait is the interval times a factor drawn from `1 ± JITTER`.
const JITTER: f64 = 0.5;

/// The waits between retries of one operation; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// `delivery.initial_backoff` up to `delivery.max_backoff`.
    pub fn for_delivery(policy: &DeliveryConfig) -> Backoff {
        Backoff::new(policy.initial_backoff, policy.max_backoff)
    }

    /// The next wait: the current interval with jitter, at most `max`; the interval grows.
    pub fn next_wait(&mut self) -> Duration {
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit_random();
        let wait = self.current.mul_f64(factor).min(self.max);
        self.current = self.current.mul_f64(MULTIPLIER).min(self.max);
        wait
    }

    /// Back to `initial`, after the operation succeeded.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A number in [0, 1): std's per-instance random hash keys are enough for jitter.
fn unit_random() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn waits_grow_with_jitter_and_never_pass_the_max() {
        let mut b = Backoff::new(MS(100), MS(1000));
        let first = b.next_wait();
        assert!(first >= MS(50) && first <= MS(150), "{first:?}");
        let mut interval = 150.0;
        for _ in 0..20 {
            let wait = b.next_wait();
            assert!(wait <= MS(1000), "{wait:?} is past the max");
            assert!(
                wait.as_secs_f64() * 1000.0 >= interval * (1.0 - JITTER) - 1.0,
                "{wait:?} below half the interval {interval}"
            );
            interval = (interval * MULTIPLIER).min(1000.0);
        }
        assert!(
            b.next_wait() >= MS(500),
            "at the max the wait stays within half of it"
        );
    }

    #[test]
    fn waits_are_spread_not_in_step() {
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| Backoff::new(MS(1000), MS(60_000)).next_wait())
            .collect();
        assert!(waits.len() > 40, "jitter: {waits:?}");
        let (lo, hi) = (waits.first().unwrap(), waits.last().unwrap());
        assert!(*lo >= MS(500) && *hi <= MS(1500), "{lo:?}..{hi:?}");
        assert!(*hi - *lo > MS(300), "spread over the range: {lo:?}..{hi:?}");
    }

    #[test]
    fn reset_starts_again_from_the_initial_interval() {
        let mut b = Backoff::new(MS(100), MS(30_000));
        for _ in 0..30 {
            b.next_wait();
        }
        assert!(b.next_wait() >= MS(15_000));
        b.reset();
        assert!(b.next_wait() <= MS(150));
    }

    #[test]
    fn an_initial_above_the_max_is_the_max() {
        let mut b = Backoff::new(MS(5000), MS(3000));
        assert!((0..10).map(|_| b.next_wait()).all(|w| w <= MS(3000)));
    }
}
