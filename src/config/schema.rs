//! Every scalar key of the file, with its type and an example: what checks a value before
//! serde sees it (so errors name the key, what was found and the right form), what maps
//! `SLUICE_<SECTION>_<KEY>` variables to keys, and the order `sluice config` prints them in.
//! `[apps]` and `[[tables]]` are structured and have their own checks (`check.rs`).

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A whole number from 0 to this maximum.
    Int(u64),
    Bool,
    /// A humantime string: `"250ms"`, `"30s"`, `"7d"`.
    Duration,
    /// `"8GiB"`, `"512MB"` or a whole number of bytes.
    ByteSize,
    /// A file path; unset by default.
    Path,
    /// One of these strings.
    Enum(&'static [&'static str]),
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    /// A right value, as written in TOML.
    pub example: &'static str,
}

impl Key {
    /// `delivery.max_attempts`
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// `SLUICE_DELIVERY_MAX_ATTEMPTS`
    pub fn var(&self) -> String {
        format!("SLUICE_{}_{}", self.section, self.name).to_ascii_uppercase()
    }

    /// The example as a file line: `max_attempts = 5`.
    pub fn file_example(&self) -> String {
        format!("{} = {}", self.name, self.example)
    }

    /// The example as a variable: `SLUICE_POSTGRES_CONNECT_TIMEOUT=10s` (no TOML quotes).
    pub fn env_example(&self) -> String {
        format!("{}={}", self.var(), self.example.trim_matches('"'))
    }
}

const U32: u64 = u32::MAX as u64;
const USIZE: u64 = i64::MAX as u64;

const fn key(section: &'static str, name: &'static str, kind: Kind, example: &'static str) -> Key {
    Key {
        section,
        name,
        kind,
        example,
    }
}

use Kind::{Bool, ByteSize, Duration, Enum, Int, Path, Str};

/// The sections of scalar keys, in the order of the file.
pub const SECTIONS: [&str; 6] = ["postgres", "source", "redis", "http", "delivery", "history"];

/// Every scalar key, section by section.
pub const KEYS: &[Key] = &[
    key(
        "postgres",
        "url",
        Str,
        "\"postgres://sluice@db.internal:5432/app\"",
    ),
    key("postgres", "connect_timeout", Duration, "\"10s\""),
    key("postgres", "query_timeout", Duration, "\"10s\""),
    key(
        "source",
        "mode",
        Enum(&["logical", "trigger"]),
        "\"logical\"",
    ),
    key("source", "slot", Str, "\"sluice\""),
    key("source", "publication", Str, "\"sluice\""),
    key("source", "poll_interval", Duration, "\"250ms\""),
    key("source", "batch_size", Int(USIZE), "1000"),
    key("source", "retention", Duration, "\"7d\""),
    key("source", "keep_history", Bool, "false"),
    key("source", "status_interval", Duration, "\"10s\""),
    key("source", "heartbeat_interval", Duration, "\"10s\""),
    key("source", "max_retained_wal", ByteSize, "\"8GiB\""),
    key("redis", "url", Str, "\"redis://127.0.0.1:6379\""),
    key(
        "redis",
        "mode",
        Enum(&["standalone", "cluster"]),
        "\"cluster\"",
    ),
    key("redis", "command_timeout", Duration, "\"5s\""),
    key("redis", "wait_replicas", Int(U32), "1"),
    key("redis", "ca_file", Path, "\"/etc/sluice/redis-ca.pem\""),
    key(
        "redis",
        "cert_file",
        Path,
        "\"/etc/sluice/redis-client.crt\"",
    ),
    key(
        "redis",
        "key_file",
        Path,
        "\"/etc/sluice/redis-client.key\"",
    ),
    key("http", "listen", Str, "\"127.0.0.1:9750\""),
    key("delivery", "max_attempts", Int(U32), "5"),
    key("delivery", "initial_backoff", Duration, "\"100ms\""),
    key("delivery", "max_backoff", Duration, "\"30s\""),
    key("delivery", "max_payload_bytes", Int(USIZE), "1048576"),
    key(
        "delivery",
        "on_unroutable",
        Enum(&["dead_letter", "drop"]),
        "\"dead_letter\"",
    ),
    key("delivery", "shutdown_timeout", Duration, "\"30s\""),
    key("history", "enabled", Bool, "true"),
    key("history", "max_len", Int(USIZE), "10000"),
    key("history", "ttl", Duration, "\"24h\""),
];

/// The keys of one section.
pub fn section(name: &str) -> impl Iterator<Item = &'static Key> + '_ {
    KEYS.iter().filter(move |k| k.section == name)
}

/// The key `section.name`, if there is one.
pub fn find(section: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// What a value is, in words: `the string "1000"`, `the number 10`, `a table`.
pub fn found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {:?}", short(s)),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f:?}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date-time {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn short(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// `None` when `value` is right for `kind`, else what was expected, in words.
pub fn mismatch(kind: Kind, value: &toml::Value) -> Option<String> {
    use toml::Value as V;
    let ok = match (kind, value) {
        (Str | Path, V::String(_)) | (Bool, V::Boolean(_)) => true,
        (Int(max), V::Integer(i)) => u64::try_from(*i).is_ok_and(|i| i <= max),
        (Duration, V::String(s)) => {
            return humantime::parse_duration(s)
                .err()
                .map(|e| format!("a duration ({e}; units: ms, s, m, h, d)"))
        }
        (ByteSize, V::String(s)) => {
            return super::bytesize::parse(s)
                .err()
                .map(|e| format!("a byte size ({e})"))
        }
        (ByteSize, V::Integer(i)) => *i >= 0,
        (Enum(names), V::String(s)) => names.contains(&s.as_str()),
        _ => false,
    };
    (!ok).then(|| expected(kind))
}

/// What a kind of value looks like, in words.
pub fn expected(kind: Kind) -> String {
    match kind {
        Str => "a string in quotes".into(),
        Path => "a file path in quotes".into(),
        Bool => "true or false".into(),
        Int(U32) => "a whole number from 0 to 4294967295".into(),
        Int(_) => "a whole number, 0 or more".into(),
        Duration => "a duration in quotes (units: ms, s, m, h, d)".into(),
        ByteSize => {
            "a byte size in quotes (B, kB, MB, GB, KiB, MiB, GiB) or a number of bytes".into()
        }
        Enum(names) => format!(
            "one of {}",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
