//! Throwaway PostgreSQL servers.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::*;
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_owned));
        let euid = euid.or_else(|| {
            let out = Command::new("id").arg("-u").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
        euid.as_deref() == Some("0")
    })
}

/// The directory holding `initdb`, `pg_ctl` and `psql` (None: rely on PATH).
fn pg_bin_dir() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(find_pg_bin).as_deref()
}

fn find_pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_initdb(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn pg_tool(name: &str) -> PathBuf {
    pg_bin_dir().map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// A command for a server-side PostgreSQL tool, run as `postgres` when root.
fn pg_server_cmd(name: &str, cwd: &Path) -> Command {
    let tool = pg_tool(name);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.current_dir(cwd);
    cmd
}

/// Extra server configuration for [`Postgres::start_with`]: `settings` are appended to
/// postgresql.conf (so they survive restarts), `files` are written into the data directory,
/// owned by the server's user with mode 0600 (what PostgreSQL demands of `ssl_key_file`), so a
/// setting can name them by relative path, e.g. `ssl_cert_file = 'server.crt'`.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    pub settings: Vec<(String, String)>,
    pub files: Vec<(String, Vec<u8>)>,
}

/// A throwaway PostgreSQL cluster with `wal_level=logical` on a free port.
pub struct Postgres {
    dir: TempDir,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    /// initdb into a fresh temp dir with wal_level=logical, start on a free
    /// 127.0.0.1 port, wait until it accepts connections.
    pub fn start() -> io::Result<Postgres> {
        Postgres::start_with(&PgOptions::default())
    }

    /// As [`Postgres::start`], with extra settings and files (TLS, say).
    pub fn start_with(options: &PgOptions) -> io::Result<Postgres> {
        let dir = TempDir::new("pg")?;
        let data = dir.0.join("data");
        if is_root() {
            run(
                Command::new("chown").args(["-R", "postgres"]).arg(&dir.0),
                "chown temp dir",
            )?;
        }
        let mut initdb = pg_server_cmd("initdb", &dir.0);
        initdb.arg("-D").arg(&data);
        initdb.args("-U postgres -A trust -E UTF8 --no-locale --no-sync".split(' '));
        run(&mut initdb, "initdb")?;
        write_options(&data, options)?;
        let mut pg = Postgres { dir, data, port: 0 };
        on_free_port(&mut pg, |pg, port| {
            pg.port = port;
            pg.pg_ctl_start()
        })?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "postgres://postgres@127.0.0.1:PORT/postgres"
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// url for another database name: "postgres://postgres@127.0.0.1:PORT/{db}"
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl stop -m immediate` (a crash); data dir kept.
    pub fn kill(&self) -> io::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// `pg_ctl stop -m fast`
    pub fn stop(&self) -> io::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// start again on the same port and data dir, wait until ready.
    pub fn restart(&self) -> io::Result<()> {
        self.pg_ctl_start()
    }

    /// run SQL through psql (-v ON_ERROR_STOP=1 -X -q -A -t), return stdout;
    /// error with stderr on failure
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let mut cmd = Command::new(pg_tool("psql"));
        cmd.args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t"]);
        cmd.args("-h 127.0.0.1 -U postgres -p".split(' '));
        cmd.arg(self.port.to_string()).args(["-d", db]);
        cmd.args(["-c", sql]).env("PGCONNECT_TIMEOUT", "10");
        let out = run(
            &mut cmd,
            &format!("psql on port {} db {db:?}: {sql:?}", self.port),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's log file (it lives in the data directory, removed with the cluster).
    pub fn log_path(&self) -> PathBuf {
        self.data.join("log")
    }

    /// Settings for speed, but not `synchronous_commit=off`: with it,
    /// [`Postgres::kill`] would lose commits psql already saw succeed.
    fn server_options(&self) -> String {
        let socket_dir = self.dir.0.display();
        format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir} \
             -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 \
             -c fsync=off -c full_page_writes=off \
             -c shared_buffers=64MB -c max_connections=100",
            self.port
        )
    }

    fn pg_ctl_start(&self) -> io::Result<()> {
        let mut cmd = pg_server_cmd("pg_ctl", &self.dir.0);
        cmd.arg("-D").arg(&self.data).arg("-l").arg(self.log_path());
        cmd.args(["-w", "-t", "60", "-o", &self.server_options(), "start"]);
        self.with_log(run(
            &mut cmd,
            &format!("pg_ctl start on port {}", self.port),
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> io::Result<()> {
        let mut cmd = pg_server_cmd("pg_ctl", &self.dir.0);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "stop"]);
        self.with_log(run(
            &mut cmd,
            &format!("pg_ctl stop -m {mode} on port {}", self.port),
        ))
    }

    /// Appends the server log tail to an error.
    fn with_log(&self, result: io::Result<Output>) -> io::Result<()> {
        result.map(drop).map_err(|e| {
            let tail = log_tail(&self.log_path(), 20);
            err(format!("{e}\n--- postgres log tail ---\n{tail}"))
        })
    }
}

/// Writes `options` into a fresh data directory.
fn write_options(data: &Path, options: &PgOptions) -> io::Result<()> {
    use std::fmt::Write as _;
    use std::os::unix::fs::PermissionsExt;
    for (name, bytes) in &options.files {
        let path = data.join(name);
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if is_root() {
            run(
                Command::new("chown").arg("postgres").arg(&path),
                "chown a server file",
            )?;
        }
    }
    let mut conf = String::from("\n");
    for (key, value) in &options.settings {
        let _ = writeln!(conf, "{key} = '{}'", value.replace('\'', "''"));
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    io::Write::write_all(&mut file, conf.as_bytes())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.kill();
        // self.dir (a TempDir) is removed when the fields drop.
    }
}
