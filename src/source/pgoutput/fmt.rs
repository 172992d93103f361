//! Human-readable forms of LSNs and PostgreSQL timestamps.

/// Microseconds per day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days from 1970-01-01 (the civil-date algorithm's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS_FROM_UNIX: i64 = 10_957;

/// Formats an LSN the way PostgreSQL prints `pg_lsn`: `X/X`, uppercase hex, high and low
/// 32 bits, no padding (`0x16B3748` gives `"0/16B3748"`).
pub fn fmt_lsn(lsn: u64) -> String {
    crate::source::lsn::format(lsn)
}

/// Formats a PostgreSQL timestamp (microseconds since 2000-01-01 00:00:00 UTC) as RFC 3339
/// UTC with microseconds, e.g. `"2026-11-22T10:00:00.123456Z"`.
///
/// PostgreSQL's special values `i64::MAX` and `i64::MIN` become `"infinity"` and
/// `"-infinity"`. Years before 1 or after 9999 are printed as is (RFC 3339 has no form
/// for them).
pub fn fmt_timestamp(micros: i64) -> String {
    match micros {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days + PG_EPOCH_DAYS_FROM_UNIX);
    let secs = in_day / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1_000_000
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`: shift the year to start on March 1 so the leap day
/// is the last day of the shifted year, then split into 400-year eras of 146 097 days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of shifted year, [0, 365]
    let mp = (5 * doy + 2) / 153; // shifted month, March = 0, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are in small ranges shown above, so the conversions cannot fail.
    (year, month as u32, day as u32)
}
