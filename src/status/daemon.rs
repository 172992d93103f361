//! Asks the running daemon for its phase over its own HTTP endpoint (`GET /status` at
//! `[http] listen`).
//!
//! A hand-written HTTP/1.1 GET over a tokio `TcpStream` is enough for one small JSON answer
//! from a server we know, and keeps an HTTP client out of the dependencies. The whole exchange
//! has one second: `status` is what an operator runs when something is wrong, and a hung
//! daemon must not hang it too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the daemon has to answer.
pub const LIMIT: Duration = Duration::from_secs(1);
/// Answers longer than this are not a status document.
const MAX_ANSWER: u64 = 1 << 20;

/// What the daemon said about itself, or why it said nothing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Daemon {
    /// Where it was asked.
    pub address: String,
    pub reachable: bool,
    /// `starting`, `standby`, `streaming`, `slot_lost` or `shutting_down`.
    pub phase: Option<String>,
    /// `ready`, or why not.
    pub ready: Option<String>,
    pub uptime_seconds: Option<u64>,
    pub version: Option<String>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

impl Daemon {
    pub fn unknown(listen: &str) -> Daemon {
        Daemon {
            address: connect_address(listen),
            ..Daemon::default()
        }
    }
}

/// Asks `GET /status` of the daemon listening on `listen`, within [`LIMIT`].
pub async fn probe(listen: &str) -> Daemon {
    let mut out = Daemon::unknown(listen);
    if out.address.is_empty() {
        out.error = Some("http.listen is empty: the daemon serves no HTTP".into());
        return out;
    }
    let answer = match tokio::time::timeout(LIMIT, get(&out.address, "/status")).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {LIMIT:?}")),
    };
    match answer.and_then(|body| {
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("the answer is not JSON: {e}"))
    }) {
        Ok(v) => {
            out.reachable = true;
            out.phase = v["phase"].as_str().map(String::from);
            out.ready = v["ready"].as_str().map(String::from);
            out.uptime_seconds = v["uptime_seconds"].as_u64();
            out.version = v["version"].as_str().map(String::from);
        }
        Err(e) => out.error = Some(e),
    }
    out
}

/// Where to connect to reach a server listening on `listen`: an unspecified address
/// (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn connect_address(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip = if a.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            };
            SocketAddr::new(ip, a.port()).to_string()
        }
        _ => listen.trim().to_string(),
    }
}

/// `GET path` on `address`; the body of a 200 answer.
async fn get(address: &str, path: &str) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    body(&answer)
}

/// The body of a raw HTTP answer, if its status is 200.
pub fn body(answer: &[u8]) -> Result<Vec<u8>, String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("it answered {status:?}, not 200"));
    }
    let rest = &answer[end + 4..];
    if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        return dechunk(rest);
    }
    Ok(rest.to_vec())
}

/// Joins a chunked body: `<hex size>\r\n<data>\r\n`..., ending with a chunk of size 0.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a truncated chunked answer")?;
        let size_text = String::from_utf8_lossy(&rest[..line]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                .map_err(|_| "a malformed chunk size")?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("a truncated chunk")?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_addresses_are_reached_on_loopback() {
        assert_eq!(connect_address("0.0.0.0:9750"), "127.0.0.1:9750");
        assert_eq!(connect_address("[::]:9750"), "[::1]:9750");
        assert_eq!(connect_address("10.0.0.5:9750"), "10.0.0.5:9750");
        assert_eq!(connect_address("localhost:9750"), "localhost:9750");
    }

    #[test]
    fn bodies_plain_and_chunked_and_errors() {
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap(),
            b"{}"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(body(chunked).unwrap(), b"{\"a\":1}");
        assert!(body(b"HTTP/1.1 404 Not Found\r\n\r\nno")
            .unwrap_err()
            .contains("404"));
        assert!(body(b"garbage").is_err());
    }

    #[tokio::test]
    async fn a_daemon_answering_status_is_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let n = socket.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"GET /status HTTP/1.1\r\n"));
            let json =
                r#"{"phase":"streaming","ready":"ready","uptime_seconds":42,"version":"0.1.0"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let d = probe(&address).await;
        assert!(d.reachable, "{d:?}");
        assert_eq!(
            (d.phase.as_deref(), d.ready.as_deref(), d.uptime_seconds),
            (Some("streaming"), Some("ready"), Some(42))
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_not_raised() {
        let port = crate::testkit::free_port();
        let d = probe(&format!("127.0.0.1:{port}")).await;
        assert!(
            !d.reachable && d.error.is_some() && d.phase.is_none(),
            "{d:?}"
        );
    }
}
