//! Plain RESP over a blocking TcpStream: Redis's command stats (how many PUBLISH calls, how
//! much CPU) and a PSUBSCRIBE subscriber on its own thread that stamps each event the moment
//! its frame is read, so the latency it records is not delayed by a scheduler.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// One RESP reply.
#[derive(Debug)]
pub enum Reply {
    Line(String),
    Int,
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// Reads one whole reply; a Redis error reply is an `io::Error`.
fn read(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    let (kind, rest) = line.trim_end().split_at(1);
    let n = || {
        rest.parse::<i64>()
            .map_err(|e| io::Error::other(format!("bad RESP length {rest:?}: {e}")))
    };
    Ok(match kind {
        "+" => Reply::Line(rest.to_string()),
        "-" => return Err(io::Error::other(format!("redis: {rest}"))),
        ":" => {
            n()?;
            Reply::Int
        }
        "$" if n()? < 0 => Reply::Bulk(None),
        "$" => {
            let mut buf = vec![0; n()? as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(buf.len() - 2);
            Reply::Bulk(Some(buf))
        }
        "*" => Reply::Array(
            (0..n()?.max(0))
                .map(|_| read(r))
                .collect::<io::Result<_>>()?,
        ),
        _ => return Err(io::Error::other(format!("unexpected RESP line {line:?}"))),
    })
}

fn send(stream: &mut TcpStream, args: &[&str]) -> io::Result<()> {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(cmd.as_bytes())
}

/// A connection for `CONFIG RESETSTAT` and `INFO`.
pub struct RedisStats(BufReader<TcpStream>);

impl RedisStats {
    pub fn connect(addr: &str) -> RedisStats {
        RedisStats(BufReader::new(
            TcpStream::connect(addr).expect("connect to redis"),
        ))
    }

    pub fn command(&mut self, args: &[&str]) -> Reply {
        send(self.0.get_mut(), args).expect("send to redis");
        read(&mut self.0).expect("a reply from redis")
    }

    fn info(&mut self, section: &str) -> String {
        match self.command(&["INFO", section]) {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO answered {other:?}"),
        }
    }

    pub fn reset(&mut self) {
        assert!(matches!(self.command(&["CONFIG", "RESETSTAT"]), Reply::Line(ok) if ok == "OK"));
    }

    /// PUBLISH calls since the last reset.
    pub fn publishes(&mut self) -> u64 {
        let info = self.info("commandstats");
        let calls = info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="));
        calls
            .and_then(|c| c.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// used_cpu_sys + used_cpu_user of the server, in seconds.
    pub fn cpu_secs(&mut self) -> f64 {
        let info = self.info("cpu");
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        field("used_cpu_sys:") + field("used_cpu_user:")
    }
}

/// What the subscriber saw of one event: its recordId and now − timestamp in µs.
#[derive(Debug, Clone)]
pub struct Seen {
    pub record_id: String,
    pub latency_us: i64,
}

/// A `PSUBSCRIBE *` connection recording every event it receives.
pub struct Subscriber {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    /// Shut down on drop, which ends the receiving thread's blocking read.
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "recordId")]
    record_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: std::borrow::Cow<'a, str>,
}

impl Subscriber {
    /// Subscribes, and returns once Redis confirmed the subscription.
    pub fn start(addr: &str) -> Subscriber {
        let mut stream = TcpStream::connect(addr).expect("connect the subscriber");
        send(&mut stream, &["PSUBSCRIBE", "*"]).unwrap();
        let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().unwrap());
        read(&mut reader).expect("the psubscribe confirmation");
        let (seen, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (sink, stopped) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || receive(&mut reader, &sink, &stopped));
        Subscriber {
            seen,
            stop,
            stream,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn receive(reader: &mut BufReader<TcpStream>, sink: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    loop {
        let reply = match read(reader) {
            Ok(r) => r,
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(e) => panic!("the subscriber's connection failed: {e}"),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let Reply::Array(mut parts) = reply else {
            continue;
        };
        let Some(Reply::Bulk(Some(payload))) = parts.pop() else {
            continue;
        };
        let event: Event =
            serde_json::from_slice(&payload).expect("an event is JSON with a timestamp");
        let stamp = time::OffsetDateTime::parse(
            &event.timestamp,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("timestamp {:?}: {e}", event.timestamp));
        let latency_us = now - (stamp.unix_timestamp_nanos() / 1000) as i64;
        let record_id = event.record_id.map(|r| r.into_owned()).unwrap_or_default();
        sink.lock().unwrap().push(Seen {
            record_id,
            latency_us,
        });
    }
}
