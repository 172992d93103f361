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
//! `runuser -u postgres --`. The PostgreSQL binaries are found through
//! `SLUICE_PG_BIN`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`.
//!
//! Errors are `io::Error`s that say what failed and include the tail of the
//! server's log, so a failing test explains itself.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A free TCP port on 127.0.0.1 (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("testkit: cannot bind an ephemeral port on 127.0.0.1")
}

/// Calls `start` with a free port, retrying twice with new ports because
/// another process may grab a port between [`free_port`] and the bind.
fn on_free_port<T>(
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
struct TempDir(PathBuf);

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

fn set_mode_755(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The last `n` lines of a log file, or a note saying it could not be read.
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs a command, turning a non-zero exit into an error carrying its stderr.
fn run(cmd: &mut Command, what: &str) -> io::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{what}: cannot run {cmd:?}: {e}")))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(err(format!(
        "{what} failed ({}): {}",
        out.status,
        stderr.trim()
    )))
}

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

    fn log_path(&self) -> PathBuf {
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

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.kill();
        // self.dir (a TempDir) is removed when the fields drop.
    }
}

/// A throwaway `redis-server` child process on a free port.
pub struct Redis {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// redis-server on a free 127.0.0.1 port, run as a child (not
    /// daemonized); waits until it answers PING.
    pub fn start() -> io::Result<Redis> {
        let dir = TempDir::new("redis")?;
        let mut redis = Redis {
            dir,
            child: None,
            port: 0,
        };
        on_free_port(&mut redis, |redis, port| {
            redis.port = port;
            redis.spawn()
        })?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "redis://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// kill the child (SIGKILL) and wait for it.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the child already exited; wait() reaps it.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// start again on the same port (wait until PING works).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("redis.log")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--save", ""])
            .args("--appendonly no --bind 127.0.0.1 --port".split(' '))
            .arg(&port)
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(self.log_path())
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot run redis-server: {e}")))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            let _ = self.stop();
            let tail = log_tail(&self.log_path(), 20);
            return Err(err(format!("{e}\n--- redis log tail ---\n{tail}")));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().transpose()) {
                return Err(err(format!(
                    "redis-server on port {} exited: {}",
                    self.port, status?
                )));
            }
            if ping(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "redis-server on port {} never answered PING",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `PING` over a fresh connection and expects `+PONG`.
fn ping(port: u16) -> io::Result<()> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf)?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(err(format!(
            "unexpected PING reply {:?}",
            String::from_utf8_lossy(&buf[..n])
        )))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
