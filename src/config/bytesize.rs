//! Byte sizes in the config (`source.max_retained_wal`): `"8GiB"`, `"512MB"`, `"1kB"`, `"0"`.
//!
//! Written by hand because the rules are short and an operator must be able to predict them:
//! `kB`/`MB`/`GB`/`TB` are powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` powers of 1024 (units are
//! matched without regard to case), a bare number is bytes, and a decimal number is allowed
//! (`"1.5GiB"`). A TOML integer is taken as bytes too.

use serde::de::{self, Deserializer, Visitor};

/// Parses a size; `Err` says what is wrong in words for the config error.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor = unit_factor(unit).ok_or_else(|| {
        format!("unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    })?;
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return Err("expected a number followed by a unit".into());
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole
        .parse()
        .map_err(|_| "the number is too large".to_string())?;
    let mut bytes = whole.checked_mul(factor).ok_or("the size is too large")?;
    if !frac.is_empty() {
        // exact for the few digits a size needs; anything below one byte is dropped
        let digits = &frac[..frac.len().min(9)];
        let scale = 10u128.pow(digits.len() as u32);
        let part = u128::from(digits.parse::<u64>().map_err(|e| e.to_string())?)
            * u128::from(factor)
            / scale;
        bytes = bytes
            .checked_add(part as u64)
            .ok_or("the size is too large")?;
    }
    Ok(bytes)
}

fn unit_factor(unit: &str) -> Option<u64> {
    const K: u64 = 1000;
    const KI: u64 = 1024;
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => K,
        "mb" => K.pow(2),
        "gb" => K.pow(3),
        "tb" => K.pow(4),
        "kib" => KI,
        "mib" => KI.pow(2),
        "gib" => KI.pow(3),
        "tib" => KI.pow(4),
        _ => return None,
    })
}

/// serde: a size string or an integer number of bytes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Size;
    impl Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte size such as \"8GiB\", \"512MB\" or \"0\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a byte size cannot be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).map_err(|why| {
                E::custom(format!(
                    "invalid byte size {v:?}: {why}; write it like \"8GiB\", \"512MB\" or \"0\""
                ))
            })
        }
    }
    d.deserialize_any(Size)
}

/// serde: written back as a string `parse` reads (`"8GiB"`, `"512MB"`, `"1000"`).
pub fn serialize<S: serde::Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*value))
}

/// In the largest unit that divides `bytes`, else plain bytes.
pub fn format(bytes: u64) -> String {
    const UNITS: [(&str, u64); 8] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
    ];
    UNITS
        .into_iter()
        .filter(|(_, size)| bytes != 0 && bytes % size == 0)
        .max_by_key(|(_, size)| *size)
        .map_or_else(
            || bytes.to_string(),
            |(unit, size)| format!("{}{unit}", bytes / size),
        )
}

#[cfg(test)]
mod tests {
    use super::{format, parse};

    #[test]
    fn formats_what_it_parses() {
        for (bytes, text) in [
            (8 << 30, "8GiB"),
            (512_000_000, "512MB"),
            (0, "0"),
            (1500, "1500"),
        ] {
            assert_eq!(format(bytes), text);
            assert_eq!(parse(text), Ok(bytes));
        }
    }

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("1kB"), Ok(1000));
        assert_eq!(parse("512MB"), Ok(512_000_000));
        assert_eq!(parse("8GiB"), Ok(8 << 30));
        assert_eq!(parse("8 gib"), Ok(8 << 30));
        assert_eq!(parse("1.5KiB"), Ok(1536));
        assert_eq!(parse("2TiB"), Ok(2 << 40));
        assert_eq!(parse(" 3B "), Ok(3));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "GB",
            "8XB",
            "-1GB",
            "1.2.3MB",
            ".5GB",
            "5.GB",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("8 furlongs").unwrap_err().contains("unknown unit"));
    }
}
