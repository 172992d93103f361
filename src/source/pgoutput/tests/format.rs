//! `fmt_lsn` and `fmt_timestamp`.

use super::super::{fmt_lsn, fmt_timestamp};

const DAY: i64 = 86_400_000_000;

#[test]
fn lsn() {
    assert_eq!(fmt_lsn(0x16B_3748), "0/16B3748");
    assert_eq!(fmt_lsn(0), "0/0");
    assert_eq!(fmt_lsn(0x1_0000_00AB), "1/AB");
    assert_eq!(fmt_lsn(0xABCD_EF01_0000_0000), "ABCDEF01/0");
    assert_eq!(fmt_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
}

#[test]
fn timestamp_epoch_and_known_date() {
    assert_eq!(fmt_timestamp(0), "2000-01-01T00:00:00.000000Z");
    assert_eq!(
        fmt_timestamp(848_656_800_123_456),
        "2026-11-22T10:00:00.123456Z"
    );
    assert_eq!(
        fmt_timestamp(-946_684_800_000_000),
        "1970-01-01T00:00:00.000000Z"
    );
}

#[test]
fn timestamp_leap_days() {
    assert_eq!(
        fmt_timestamp(762_566_399_999_999),
        "2024-02-29T23:59:59.999999Z"
    );
    assert_eq!(
        fmt_timestamp(762_566_399_999_999 + 1),
        "2024-03-01T00:00:00.000000Z"
    );
    // 2000 is a leap year (divisible by 400), 2100 is not (divisible by 100).
    assert_eq!(
        fmt_timestamp(5_140_800_000_000),
        "2000-02-29T12:00:00.000000Z"
    );
    assert_eq!(
        fmt_timestamp(3_160_857_600_000_000),
        "2100-03-01T00:00:00.000000Z"
    );
    assert_eq!(
        fmt_timestamp(3_160_857_600_000_000 - DAY),
        "2100-02-28T00:00:00.000000Z"
    );
}

#[test]
fn timestamp_before_epoch_and_extremes() {
    assert_eq!(fmt_timestamp(-1), "1999-12-31T23:59:59.999999Z");
    assert_eq!(fmt_timestamp(-DAY), "1999-12-31T00:00:00.000000Z");
    assert_eq!(
        fmt_timestamp(-63_082_281_600_000_000),
        "0001-01-01T00:00:00.000000Z"
    );
    assert_eq!(
        fmt_timestamp(252_455_615_999_999_999),
        "9999-12-31T23:59:59.999999Z"
    );
    assert_eq!(fmt_timestamp(i64::MAX), "infinity");
    assert_eq!(fmt_timestamp(i64::MIN), "-infinity");
    // Far out of range values still format without panicking.
    assert!(fmt_timestamp(i64::MAX - 1).ends_with('Z'));
    assert!(fmt_timestamp(i64::MIN + 1).ends_with('Z'));
}
