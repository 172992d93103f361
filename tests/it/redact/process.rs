//! `sluice` as a child process for the redact tests: one-shot commands and a daemon watched
//! until it settles, everything they print kept as [`Capture`]s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::common::wait::within_blocking;
use crate::common::{exit_within, ConfigText, Env};

/// How long one `sluice run` is watched at most: long enough for a slow start, short enough
/// for 21 runs.
pub const RUN_LIMIT: Duration = Duration::from_secs(15);

/// One thing Sluice printed or stored.
pub struct Capture {
    pub case: String,
    pub what: &'static str,
    pub text: String,
}

/// The tests' config for `pg` and `redis`, quick to give up on a server (`Run` reads the HTTP
/// port the system picked from the daemon's log).
pub fn config(pg: &str, redis: &str) -> String {
    ConfigText::new(pg, redis)
        .postgres("connect_timeout = \"1s\"")
        .redis("command_timeout = \"1s\"")
        .extra("[delivery]\nmax_backoff = \"1s\"")
        .text()
}

/// A config for `pg` and `redis` in a directory of its own; its path.
pub fn write_config(env: &Env, name: &str, pg: &str, redis: &str) -> PathBuf {
    let path = env.dir.path().join(name).join("sluice.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, config(pg, redis)).unwrap();
    path
}

/// The `sluice` binary with `config`, and no URL from the environment.
pub fn sluice(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("--config")
        .arg(config)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    command
}

/// `GET path` on 127.0.0.1:`port`, the whole answer; empty when nothing answers (or no port).
pub fn http_get(port: Option<u16>, path: &str) -> String {
    let Some(port) = port else {
        return String::new();
    };
    let exchange = || -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    exchange().unwrap_or_default()
}

/// A `sluice run` in the background, its stdout and stderr in files beside its config.
pub struct Run {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    pub fn start(config: &Path) -> Run {
        let dir = config.parent().unwrap();
        let (stdout, stderr) = (dir.join("run.out"), dir.join("run.err"));
        let child = sluice(config)
            .args(["--log-level", "sluice=debug,info", "run"])
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn sluice run");
        Run {
            child,
            stdout,
            stderr,
        }
    }

    /// The port the daemon serves HTTP on, once it has logged it (`None` before, or when it
    /// stopped before serving).
    fn http_port(&self) -> Option<u16> {
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        sluice::testkit::http_addr_in_log(&log).map(|a| a.port())
    }

    pub fn ready(&self) -> bool {
        http_get(self.http_port(), "/readyz").starts_with("HTTP/1.1 200")
    }

    /// Ready, or it has noticed a failure: it logged a warning or an error, or `/readyz` names
    /// a server as unreachable (a daemon may exit on a server that is down, or stay and retry).
    pub fn settled(&self) -> bool {
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let readyz = http_get(self.http_port(), "/readyz");
        readyz.starts_with("HTTP/1.1 200")
            || readyz.contains("unreachable")
            || log.contains("WARN")
            || log.contains("ERROR")
    }

    /// Waits until `done`, the process exits, or [`RUN_LIMIT`] passes.
    pub fn watch(&mut self, done: impl Fn(&Run) -> bool) {
        within_blocking(RUN_LIMIT, || {
            self.child.try_wait().unwrap().is_some() || done(self)
        });
    }

    /// `/readyz` and `/status`, SIGTERM, then what it printed.
    pub fn finish(mut self, case: &str, out: &mut Vec<Capture>) {
        for what in ["/readyz", "/status"] {
            let text = http_get(self.http_port(), what);
            out.push(Capture {
                case: case.into(),
                what,
                text,
            });
        }
        stop(&mut self.child);
        for (what, path) in [("run stdout", &self.stdout), ("run stderr", &self.stderr)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.push(Capture {
                case: case.into(),
                what,
                text,
            });
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if exit_within(child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The one-shot commands, each with stdout and stderr.
pub fn commands(config: &Path, case: &str, out: &mut Vec<Capture>) {
    for (what, args) in [
        ("check", &["check"][..]),
        ("status", &["status"]),
        ("setup --dry-run", &["setup", "--dry-run"]),
    ] {
        let output = sluice(config).args(args).output().expect("run sluice");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        out.push(Capture {
            case: case.into(),
            what,
            text,
        });
    }
}

/// A command to Redis as its default user (`password`); panics unless it answers `+OK`.
pub fn redis_admin(port: u16, password: &str, args: &[&str]) {
    use std::io::BufRead;
    let frame = |args: &[&str]| {
        let parts: String = args
            .iter()
            .map(|a| format!("${}\r\n{a}\r\n", a.len()))
            .collect();
        format!("*{}\r\n{parts}", args.len())
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = frame(&["AUTH", password]) + &frame(args);
    stream.write_all(request.as_bytes()).unwrap();
    let mut replies = std::io::BufReader::new(stream);
    for _ in 0..2 {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "+OK", "{args:?}");
    }
}
