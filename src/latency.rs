//! `sluice_end_to_end_latency_seconds`: from a change's timestamp (the commit time in logical
//! mode, the write time in trigger mode) to Redis acknowledging its batch.
//!
//! It is recorded for every change of every batch, so it must cost next to nothing: the
//! timestamp is parsed in place from its fixed RFC 3339 form (no allocation, no time zone
//! database), and a transaction's changes, which share one timestamp, are parsed once and
//! recorded with a single `record_many`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::Change;
use crate::telemetry as m;

/// Records the latency of `changes`, acknowledged at `acked`.
pub fn record(changes: &[Change], acked: SystemTime) {
    let Ok(now) = acked.duration_since(UNIX_EPOCH) else {
        return;
    };
    let now = now.as_secs_f64();
    let histogram = metrics::histogram!(m::END_TO_END_LATENCY);
    let flush = |stamp: &str, count: usize| {
        if let Some(at) = unix_seconds(stamp) {
            // a database clock ahead of ours would give a negative latency
            histogram.record_many((now - at).max(0.0), count);
        }
    };
    let mut run: Option<(&str, usize)> = None;
    for change in changes {
        match &mut run {
            Some((stamp, count)) if *stamp == change.timestamp => *count += 1,
            _ => {
                if let Some((stamp, count)) = run {
                    flush(stamp, count);
                }
                run = Some((&change.timestamp, 1));
            }
        }
    }
    if let Some((stamp, count)) = run {
        flush(stamp, count);
    }
}

/// Seconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; `None` for anything else
/// (PostgreSQL's `infinity`, say).
pub fn unix_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let fraction = match &b[19..b.len() - 1] {
        [] => 0.0,
        [b'.', f @ ..] if !f.is_empty() && f.len() <= 9 => {
            digits(f)? as f64 / 10f64.powi(f.len() as i32)
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    Some((days * 86_400 + (hour * 3600 + minute * 60 + second) as i64) as f64 + fraction)
}

/// The value of a run of ASCII digits.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// the inverse of the one in `source::pgoutput::fmt`).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_event_timestamp() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00.000000Z"), Some(0.0));
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        let t = unix_seconds("2026-11-22T10:00:00.123456Z").unwrap();
        assert!((t - 1_795_341_600.123_456).abs() < 1e-6, "{t}");
        assert_eq!(
            unix_seconds("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199.5)
        );
    }

    #[test]
    fn agrees_with_the_formatter_of_commit_times() {
        // PostgreSQL's epoch is 2000-01-01; fmt_timestamp formats microseconds since then
        for micros in [
            0i64,
            1,
            86_399_999_999,
            835_401_600_123_456,
            -1_000_000,
            5_000_000_000_000_000,
        ] {
            let text = crate::source::pgoutput::fmt_timestamp(micros);
            let expected = 946_684_800.0 + micros as f64 / 1e6;
            let got = unix_seconds(&text).unwrap_or_else(|| panic!("{text}"));
            assert!((got - expected).abs() < 1e-3, "{text}: {got} vs {expected}");
        }
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "infinity",
            "-infinity",
            "",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00+01:00",
            "2026-13-01T00:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00.1234567890Z",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }
}
