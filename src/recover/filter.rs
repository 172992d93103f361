//! The filters the recovery commands share, and the bounds of a replay window.

use std::time::{Duration, SystemTime};

use clap::Args;
use tokio_postgres::types::ToSql;

/// `--tenant --app --table`: each narrows what a recovery command looks at.
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
}

/// The dead-letter commands' filters: [`Filters`] and `--reason`. A reason is why an event
/// was parked, so only dead letters have one: `replay change-log` does not offer it.
#[derive(Debug, Clone, Default, Args)]
pub struct DeadLetterFilters {
    #[command(flatten)]
    pub common: Filters,
    /// Only this reason (unroutable, missing_tenant, invalid_tenant, invalid_key,
    /// unconvertible_value, payload_too_large, publish_rejected)
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

/// `--before`: a time (RFC 3339, or with an offset as PostgreSQL reads it) or a duration ago
/// (`7d`), as text for a `$n::text::timestamptz` parameter.
pub fn time_or_ago(s: &str) -> Result<String, String> {
    match Bound::parse(s) {
        Ok(Bound::Time(t)) => Ok(t),
        _ => Err(format!(
            "{:?} is neither a time (2026-11-01T00:00:00Z) nor a duration ago (7d)",
            s.trim()
        )),
    }
}

/// A WHERE clause made from user input. Each condition names its value `$`, which becomes the
/// next parameter number: values travel as parameters and are never spliced into the SQL.
#[derive(Debug, Default)]
pub struct Where {
    conditions: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    /// A condition without a value, e.g. `resolved_at IS NULL`.
    pub fn fixed(&mut self, condition: &str) -> &mut Where {
        self.conditions.push(condition.to_string());
        self
    }

    /// A condition on one value, e.g. `created_at < $::text::timestamptz`.
    pub fn add(
        &mut self,
        condition: &str,
        value: impl ToSql + Sync + Send + 'static,
    ) -> &mut Where {
        self.params.push(Box::new(value));
        self.conditions
            .push(condition.replace('$', &format!("${}", self.params.len())));
        self
    }

    /// `column = $` when the filter is set; nothing when it is not.
    pub fn eq(&mut self, column: &str, value: Option<String>) -> &mut Where {
        match value {
            Some(v) => self.add(&format!("{column} = $"), v),
            None => self,
        }
    }

    /// `WHERE a AND b` (`WHERE true` without conditions, so more may follow with `AND`).
    pub fn clause(&self) -> String {
        if self.conditions.is_empty() {
            return "WHERE true".into();
        }
        format!("WHERE {}", self.conditions.join(" AND "))
    }

    /// The number the first parameter after these gets (`LIMIT $n`, a keyset bound).
    pub fn next(&self) -> usize {
        self.params.len() + 1
    }

    /// The parameters, in order, to pass with the statement (extend it with later ones).
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn ago_rfc3339(ago: Duration) -> String {
    let at = SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH);
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
        assert_eq!(
            Bound::parse("2026-11-22T10:00:00Z"),
            Ok(Bound::Time("2026-11-22T10:00:00Z".into()))
        );
        assert_eq!(
            Bound::parse("2026-11-22 10:00:00+02:00"),
            Ok(Bound::Time("2026-11-22 10:00:00+02:00".into()))
        );
        let Ok(Bound::Time(t)) = Bound::parse("1h") else {
            panic!("1h is a time ago")
        };
        let at = humantime::parse_rfc3339(&t).unwrap();
        let ago = SystemTime::now().duration_since(at).unwrap();
        assert!(
            ago >= Duration::from_secs(3599) && ago < Duration::from_secs(3700),
            "{ago:?}"
        );
        assert!(Bound::parse("yesterday").is_err());
    }

    #[test]
    fn before_is_a_time_or_a_duration_ago_never_an_id() {
        assert_eq!(
            time_or_ago("2026-11-01T00:00:00Z"),
            Ok("2026-11-01T00:00:00Z".into())
        );
        assert!(time_or_ago("7d").unwrap().ends_with('Z'));
        assert!(time_or_ago("42").unwrap_err().contains("neither a time"));
    }

    #[test]
    fn where_numbers_its_parameters_and_never_splices_values() {
        let mut w = Where::default();
        assert_eq!((w.clause().as_str(), w.next()), ("WHERE true", 1));
        w.fixed("resolved_at IS NULL")
            .eq("tenant_id", Some("x' OR true --".into()))
            .eq("app", None);
        w.add(
            "created_at < $::text::timestamptz",
            "2026-11-01T00:00:00Z".to_string(),
        )
        .eq("reason", Some("unroutable".into()));
        assert_eq!(w.clause(), "WHERE resolved_at IS NULL AND tenant_id = $1 AND created_at < $2::text::timestamptz AND reason = $3");
        assert_eq!((w.params().len(), w.next()), (3, 4));
        assert!(format!("{:?}", w.params()[0]).contains("x' OR true --"));
    }
}
