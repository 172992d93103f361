//! Throwaway PostgreSQL servers.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::*;

/// True when the effective uid is 0 (read from /proc, falling back to `id -u`).
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

/// A command for a server-side PostgreSQL tool, run as `postgres` when root.
fn pg_server_cmd(name: &str, cwd: &Path) -> io::Result<Command> {
    let tool = pg_bin::server_tool(name)?;
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.current_dir(cwd);
    Ok(cmd)
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
        let mut initdb = pg_server_cmd("initdb", &dir.0)?;
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
        let mut cmd = Command::new(pg_bin::client_tool("psql"));
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

    /// `server_version_num`, e.g. 170010 for 17.10.
    pub fn version_num(&self) -> io::Result<u32> {
        let text = self.psql("postgres", "SHOW server_version_num")?;
        text.trim()
            .parse()
            .map_err(|_| err(format!("server_version_num: unexpected {text:?}")))
    }

    /// A physical standby of this server, streaming into the physical slot `slot` (created
    /// here) with `primary_conninfo` naming database `db` and `settings` added. Its data
    /// directory is a copy taken while this server is briefly stopped (a cold base backup,
    /// without this server's replication slots, as `pg_basebackup` would leave them out).
    pub fn start_standby(
        &self,
        slot: &str,
        db: &str,
        settings: &[(&str, &str)],
    ) -> io::Result<Postgres> {
        self.psql(
            "postgres",
            &format!("SELECT pg_create_physical_replication_slot('{slot}')"),
        )?;
        self.stop()?;
        let dir = TempDir::new("pg")?;
        let data = dir.0.join("data");
        let copied = run(
            Command::new("cp").arg("-a").arg(&self.data).arg(&data),
            "copy the data directory",
        );
        self.restart()?;
        copied?;
        for entry in std::fs::read_dir(data.join("pg_replslot"))? {
            std::fs::remove_dir_all(entry?.path())?;
        }
        std::fs::write(data.join("log"), "")?;
        if is_root() {
            run(
                Command::new("chown").args(["-R", "postgres"]).arg(&dir.0),
                "chown temp dir",
            )?;
        }
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} application_name={slot}",
            self.port
        );
        let mut options = PgOptions::default();
        options.files.push(("standby.signal".into(), Vec::new()));
        for (k, v) in [
            ("primary_conninfo", conninfo.as_str()),
            ("primary_slot_name", slot),
        ]
        .into_iter()
        .chain(settings.iter().copied())
        {
            options.settings.push((k.to_string(), v.to_string()));
        }
        write_options(&data, &options)?;
        let mut standby = Postgres { dir, data, port: 0 };
        on_free_port(&mut standby, |pg, port| {
            pg.port = port;
            pg.pg_ctl_start()
        })?;
        Ok(standby)
    }

    /// `pg_ctl promote`: a standby becomes a primary; waits until it is one.
    pub fn promote(&self) -> io::Result<()> {
        let mut cmd = pg_server_cmd("pg_ctl", &self.dir.0)?;
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "promote"]);
        self.with_log(run(
            &mut cmd,
            &format!("pg_ctl promote on port {}", self.port),
        ))
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
        let mut cmd = pg_server_cmd("pg_ctl", &self.dir.0)?;
        cmd.arg("-D").arg(&self.data).arg("-l").arg(self.log_path());
        cmd.args(["-w", "-t", "60", "-o", &self.server_options(), "start"]);
        self.with_log(run(
            &mut cmd,
            &format!("pg_ctl start on port {}", self.port),
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> io::Result<()> {
        let mut cmd = pg_server_cmd("pg_ctl", &self.dir.0)?;
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
