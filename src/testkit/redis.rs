//! Throwaway Redis servers.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A throwaway `redis-server` child process on a free port.
pub struct Redis {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    /// [`Redis::start_tls`]: the TLS port, beside the plain one the harness uses.
    tls_port: Option<u16>,
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
            tls_port: None,
        };
        on_free_port(&mut redis, |redis, port| {
            redis.port = port;
            redis.spawn()
        })?;
        Ok(redis)
    }

    /// As [`Redis::start`], plus a TLS port serving this certificate and key (PEM). With
    /// `client_ca` (PEM), clients must show a certificate that CA signed; without it they need
    /// none. The plain port stays, for the harness's own connections: a `rediss://` client
    /// cannot fall back to it.
    pub fn start_tls(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<&[u8]>,
    ) -> io::Result<Redis> {
        let dir = TempDir::new("redis")?;
        std::fs::write(dir.0.join("tls.crt"), cert_pem)?;
        std::fs::write(dir.0.join("tls.key"), key_pem)?;
        if let Some(ca) = client_ca {
            std::fs::write(dir.0.join("client-ca.crt"), ca)?;
        }
        let mut redis = Redis {
            dir,
            child: None,
            port: 0,
            tls_port: None,
        };
        on_free_port(&mut redis, |redis, port| {
            redis.port = port;
            redis.tls_port = Some(free_port());
            redis.spawn()
        })?;
        Ok(redis)
    }

    /// The TLS port of a [`Redis::start_tls`] server.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// "rediss://127.0.0.1:TLS_PORT" (a [`Redis::start_tls`] server).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let mut cmd = Command::new("redis-server");
        if let Some(tls_port) = self.tls_port {
            cmd.arg("--tls-port").arg(tls_port.to_string());
            cmd.args("--tls-cert-file tls.crt --tls-key-file tls.key".split(' '));
            match self.dir.0.join("client-ca.crt").exists() {
                true => {
                    cmd.args("--tls-auth-clients yes --tls-ca-cert-file client-ca.crt".split(' '))
                }
                false => cmd.args(["--tls-auth-clients", "no"]),
            };
        }
        let child = cmd
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
