//! libpq's password file (`PGPASSFILE`, else `~/.pgpass`), read as libpq reads it: lines of
//! `hostname:port:database:username:password`, `#` comments, a field of only `*` matching
//! anything, `\:` and `\\` for a literal colon or backslash, the first matching line wins, and
//! a file that is not a plain file or that its group or others may read is refused (with a
//! warning) rather than trusted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a line is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub host: String,
    pub port: String,
    pub dbname: String,
    pub user: String,
}

/// Why a password file was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("password file {0:?} is not a plain file")]
    NotPlain(PathBuf),
    #[error(
        "password file {0:?} has group or world access; permissions should be u=rw (0600) or less"
    )]
    Open(PathBuf),
    #[error("password file {0:?}: cannot read it: {1}")]
    Unreadable(PathBuf, String),
}

/// The password file's path: `PGPASSFILE`, else `$HOME/.pgpass`.
pub fn path(get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| get(name).filter(|v| !v.is_empty());
    set("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| Path::new(&home).join(".pgpass")))
}

/// The password of the first line matching `want`, and that line's number; `Ok(None)` when
/// the file does not exist or no line matches.
pub fn find(path: &Path, want: &Want) -> Result<Option<(String, usize)>, Refused> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Refused::Unreadable(path.into(), e.to_string())),
    };
    if !meta.is_file() {
        return Err(Refused::NotPlain(path.into()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Refused::Open(path.into()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Refused::Unreadable(path.into(), e.to_string()))?;
    Ok(lookup(&text, want))
}

/// The first line of `text` that matches, as (password, line number).
pub fn lookup(text: &str, want: &Want) -> Option<(String, usize)> {
    let fields = [&want.host, &want.port, &want.dbname, &want.user];
    text.lines().enumerate().find_map(|(n, line)| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            return None;
        }
        let mut rest = line;
        for token in fields {
            rest = matches(rest, token)?;
        }
        Some((unescape_password(rest), n + 1))
    })
}

/// If the field at the start of `line` matches `token` (`*` matches anything), what follows
/// its colon.
fn matches<'a>(line: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut chars = line.char_indices();
    let mut expect = token.chars();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = match c {
            '\\' => match chars.next() {
                Some((_, next)) => (next, true),
                None => return None,
            },
            c => (c, false),
        };
        if c == ':' && !escaped {
            return expect.next().is_none().then(|| &line[i + 1..]);
        }
        if expect.next() != Some(c) {
            return None;
        }
    }
    None
}

/// The password field: up to an unescaped `:`, with `\` escapes removed.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(host: &str, port: &str, dbname: &str, user: &str) -> Want {
        Want {
            host: host.into(),
            port: port.into(),
            dbname: dbname.into(),
            user: user.into(),
        }
    }

    #[test]
    fn the_first_matching_line_wins_with_wildcards() {
        let text = "# a comment:*:*:*:nope\n\
                    db.internal:5432:app:sluice:first\n\
                    *:*:app:sluice:second\n\
                    *:*:*:*:any\n";
        let w = want("db.internal", "5432", "app", "sluice");
        assert_eq!(lookup(text, &w), Some(("first".into(), 2)));
        let w = want("other", "6432", "app", "sluice");
        assert_eq!(lookup(text, &w), Some(("second".into(), 3)));
        let w = want("other", "6432", "x", "y");
        assert_eq!(lookup(text, &w), Some(("any".into(), 4)));
        assert_eq!(lookup("h:1:d:u:p\n", &want("h", "1", "d", "v")), None);
    }

    #[test]
    fn escaped_colons_and_backslashes() {
        let text = "fe80\\:\\:1:5432:app:us\\\\er:pa\\:ss\\\\word:ignored\n";
        let w = want("fe80::1", "5432", "app", "us\\er");
        assert_eq!(lookup(text, &w), Some(("pa:ss\\word".into(), 1)));
        // a field that starts with '*' but is longer is literal
        assert_eq!(
            lookup("*x:5432:a:u:p\n", &want("h", "5432", "a", "u")),
            None
        );
        assert_eq!(
            lookup("*x:5432:a:u:p\n", &want("*x", "5432", "a", "u")),
            Some(("p".into(), 1))
        );
        // a line with too few fields matches nothing
        assert_eq!(lookup("h:5432:a\n", &want("h", "5432", "a", "u")), None);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        let w = want("h", "5432", "a", "u");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find(&file, &w), Err(Refused::Open(file.clone())));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(find(&file, &w), Ok(Some(("secret".into(), 1))));
        assert_eq!(
            find(dir.path(), &w),
            Err(Refused::NotPlain(dir.path().into()))
        );
        assert_eq!(find(&dir.path().join("none"), &w), Ok(None));
    }

    #[test]
    fn pgpassfile_wins_over_home() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "PGPASSFILE" => Some("/etc/sluice/pgpass".to_string()),
            _ => None,
        };
        assert_eq!(path(&env), Some("/etc/sluice/pgpass".into()));
        let home = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        assert_eq!(path(&home), Some("/home/u/.pgpass".into()));
    }
}
