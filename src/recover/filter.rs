//! The filters the recovery commands share, and the bounds of a replay window.

use std::time::{Duration, SystemTime};

use clap::Args;

/// `--tenant --app --table --reason`: each narrows what a command looks at.
#[derive(Debug, Clone, Default, Args)]
pub struct Filters {
    /// Only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only events for this application (a key of [apps])
    #[arg(long)]
    pub app: Option<String>,
    /// Only this table (schema.table; a bare name means public.name)
    #[arg(long)]
    pub table: Option<String>,
    /// Dead letters only: only this reason (unroutable, missing_tenant, invalid_tenant,
    /// payload_too_large, publish_rejected)
    #[arg(long)]
    pub reason: Option<String>,
}

impl Filters {
    /// The table filter, schema-qualified as the event's `table` is.
    pub fn table(&self) -> Option<String> {
        self.table.as_deref().map(crate::config::qualify)
    }
}

/// One end of a replay window: a `change_log` id, a point in time, or a time ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Id(i64),
    /// RFC 3339, as PostgreSQL's `timestamptz` input accepts it.
    Time(String),
}

impl Bound {
    /// `42` is an id; `2026-11-22T10:00:00Z` a time; `1h` or `90m` a time that long ago.
    pub fn parse(s: &str) -> Result<Bound, String> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            return Ok(Bound::Id(id));
        }
        if let Ok(ago) = humantime::parse_duration(s) {
            return Ok(Bound::Time(ago_rfc3339(ago)));
        }
        if humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).is_ok() || looks_like_time(s) {
            return Ok(Bound::Time(s.to_string()));
        }
        Err(format!("{s:?} is neither a change_log id (42), a time (2026-11-22T10:00:00Z) nor a duration ago (1h)"))
    }
}

fn ago_rfc3339(ago: Duration) -> String {
    let at = SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_micros(at).to_string()
}

/// Times with an offset (`+02:00`) that humantime does not read; PostgreSQL does.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_ids_times_or_durations_ago() {
        assert_eq!(Bound::parse("42"), Ok(Bound::Id(42)));
        assert_eq!(Bound::parse("2026-11-22T10:00:00Z"), Ok(Bound::Time("2026-11-22T10:00:00Z".into())));
        assert_eq!(Bound::parse("2026-11-22 10:00:00+02:00"), Ok(Bound::Time("2026-11-22 10:00:00+02:00".into())));
        let Ok(Bound::Time(t)) = Bound::parse("1h") else { panic!("1h is a time ago") };
        let at = humantime::parse_rfc3339(&t).unwrap();
        let ago = SystemTime::now().duration_since(at).unwrap();
        assert!(ago >= Duration::from_secs(3599) && ago < Duration::from_secs(3700), "{ago:?}");
        assert!(Bound::parse("yesterday").is_err());
    }
}
