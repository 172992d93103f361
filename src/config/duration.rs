//! humantime durations (`250ms`, `30s`, `7d`) for serde; written back in the largest unit that
//! divides them, which humantime reads again.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like \"250ms\", \"30s\" or \"7d\""
        ))
    })
}

pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*value))
}

/// `"250ms"`, `"30s"`, `"7d"`: the largest unit that divides the duration (but `"24h"`, not
/// `"1d"`).
pub fn format(value: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = value.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let (unit, size) = UNITS
        .into_iter()
        .find(|(unit, size)| nanos % size == 0 && !(*unit == "d" && nanos == *size))
        .expect("ns divides everything");
    format!("{}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_largest_whole_unit_and_reads_back() {
        for (d, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d);
        }
    }
}
