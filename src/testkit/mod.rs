//! Throwaway PostgreSQL and Redis servers for tests, the demo example and
//! benchmarks.
//!
//! Every [`Postgres`] and [`Redis`] started here lives in its own fresh
//! temporary directory and listens on a free `127.0.0.1` port picked with
//! [`free_port`], so nothing ever touches a server the machine already runs
//! (the usual 5432 / 6379 ones are left alone). Dropping a handle stops the
//! server and deletes its directory.
//!
//! Only std is used: the servers are driven through their command-line tools
//! (`initdb`, `pg_ctl`, `psql`, `redis-server`). PostgreSQL refuses to run as
//! root, so when the tests run as root its tools are run through
//! `runuser -u postgres --`. Which PostgreSQL binaries run is chosen by `SLUICE_PG_BIN` or
//! `SLUICE_TEST_PG=13..18` (see `pg_bin`); by default the machine's own.
//!
//! Errors are `io::Error`s that say what failed and include the tail of the
//! server's log, so a failing test explains itself.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A free TCP port on 127.0.0.1 (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("testkit: cannot bind an ephemeral port on 127.0.0.1")
}

/// The address `sluice run` serves HTTP on, from the line it logs once it listens (text or
/// JSON logs). Tests configure `http.listen = "127.0.0.1:0"` and read the port back here: a
/// port picked with [`free_port`] beforehand may be taken by another process before the
/// daemon binds it.
pub fn http_addr_in_log(log: &str) -> Option<std::net::SocketAddr> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics, /healthz, /readyz and /status"))?;
    let (_, rest) = line
        .split_once("addr=")
        .or_else(|| line.split_once("\"addr\":\""))?;
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    addr.parse().ok()
}

/// Waits (at most `limit`) for the daemon logging to `log` to serve HTTP; its port.
pub fn wait_http_port(log: &Path, limit: std::time::Duration) -> Option<u16> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = http_addr_in_log(&text) {
            return Some(addr.port());
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Calls `start` with a free port, retrying twice with new ports because
/// another process may grab a port between [`free_port`] and the bind.
pub(super) fn on_free_port<T>(
    server: &mut T,
    start: impl Fn(&mut T, u16) -> io::Result<()>,
) -> io::Result<()> {
    let mut result = start(server, free_port());
    for _ in 0..2 {
        if result.is_ok() {
            break;
        }
        result = start(server, free_port());
    }
    result
}

/// A uniquely named directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("sluice-{kind}-{}-{n}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        set_mode_755(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn set_mode_755(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

pub(super) fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The last `n` lines of a log file, or a note saying it could not be read.
pub(super) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs a command, turning a non-zero exit into an error carrying the end of its output
/// (`redis-cli` prints its errors on stdout, most tools on stderr).
pub(super) fn run(cmd: &mut Command, what: &str) -> io::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{what}: cannot run {cmd:?}: {e}")))?;
    if out.status.success() {
        return Ok(out);
    }
    let text = [&out.stdout, &out.stderr].map(|b| String::from_utf8_lossy(b).into_owned());
    let lines: Vec<&str> = text.iter().flat_map(|t| t.lines()).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    Err(err(format!("{what} failed ({}): {tail}", out.status)))
}

mod cluster;
mod pg_bin;
mod postgres;
mod proxy;
mod redis;

pub use cluster::RedisCluster;
pub use pg_bin::{selected_major, MAJORS};
pub use postgres::{PgOptions, Postgres};
pub use proxy::Proxy;
pub use redis::Redis;

#[cfg(test)]
mod tests {
    #[test]
    fn the_http_address_is_read_from_text_and_json_logs() {
        let text = "2026-12-06T10:00:00Z  INFO sluice::http: serving /metrics, /healthz, /readyz and /status addr=127.0.0.1:40123\n";
        let json = r#"{"level":"INFO","fields":{"message":"serving /metrics, /healthz, /readyz and /status","addr":"127.0.0.1:40124"}}"#;
        assert_eq!(super::http_addr_in_log(text).unwrap().port(), 40123);
        assert_eq!(super::http_addr_in_log(json).unwrap().port(), 40124);
        assert_eq!(
            super::http_addr_in_log("INFO starting addr=1.2.3.4:5"),
            None
        );
    }
}
