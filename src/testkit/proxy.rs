//! A TCP proxy that can cut its connections off in two ways, as a network path does:
//! - blackhole: every byte in either direction is read and dropped, and new connections are
//!   accepted but never forwarded, so each side sees an open socket and silence (packets lost);
//! - hold: the connections open so far stop delivering what their client sends and keep it,
//!   then deliver it, in order and followed by the client's close if it closed meanwhile, when
//!   the hold ends; new connections pass (packets delayed on one path while another works,
//!   as TCP retransmits them once a partition heals).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A running proxy from a free port on 127.0.0.1 to `127.0.0.1:<target>`; dropping it stops
/// accepting (connections already made keep running until either side closes).
pub struct Proxy {
    port: u16,
    switches: Arc<Switches>,
}

#[derive(Default)]
struct Switches {
    blackhole: AtomicBool,
    stop: AtomicBool,
    /// Connections are numbered from 1 as they are accepted; while non-zero, those numbered
    /// up to this hold what their clients send.
    hold_upto: AtomicU64,
    accepted: AtomicU64,
    /// Connections keeping bytes now.
    keeping: AtomicU64,
}

impl Switches {
    fn holds(&self, conn: u64) -> bool {
        conn <= self.hold_upto.load(Ordering::SeqCst)
    }
}

impl Proxy {
    pub fn start(target: u16) -> io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let switches = Arc::new(Switches::default());
        let s = switches.clone();
        thread::spawn(move || accept(listener, target, s));
        Ok(Proxy { port, switches })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every byte from now on (`true`), or forwards again (`false`).
    pub fn blackhole(&self, on: bool) {
        self.switches.blackhole.store(on, Ordering::SeqCst);
    }

    /// Holds what the clients of the connections open now send (`true`), or delivers it and
    /// forwards again (`false`: returns once what was kept is written, or after 10 s).
    pub fn hold(&self, on: bool) {
        let upto = match on {
            true => self.switches.accepted.load(Ordering::SeqCst),
            false => 0,
        };
        self.switches.hold_upto.store(upto, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !on
            && self.switches.keeping.load(Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switches.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn accept(listener: TcpListener, target: u16, switches: Arc<Switches>) {
    for client in listener.incoming() {
        if switches.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let conn = switches.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let s = switches.clone();
        thread::spawn(move || {
            // A connection made while blackholed is held open and never forwarded.
            while s.blackhole.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
            if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                pipe_both(client, server, conn, s);
            }
        });
    }
}

fn pipe_both(client: TcpStream, server: TcpStream, conn: u64, switches: Arc<Switches>) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let s = switches.clone();
    thread::spawn(move || pipe(client2, server2, Some(conn), s));
    pipe(server, client, None, switches);
}

/// Copies `from` to `to` until either closes, dropping what arrives while blackholed and,
/// for a client's side (`held` names its connection), keeping what arrives while held.
fn pipe(mut from: TcpStream, mut to: TcpStream, held: Option<u64>, s: Arc<Switches>) {
    let holds = || held.is_some_and(|c| s.holds(c));
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut kept = Kept::new(&s);
    let mut buf = [0u8; 16 * 1024];
    loop {
        if !holds() && kept.deliver(&mut to).is_err() {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if s.blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if holds() {
            kept.keep(&buf[..n]);
        } else if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    while holds() {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = kept.deliver(&mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// What a held connection keeps, counted in [`Switches::keeping`] while non-empty.
struct Kept<'s> {
    bytes: Vec<u8>,
    switches: &'s Switches,
}

impl<'s> Kept<'s> {
    fn new(switches: &'s Switches) -> Kept<'s> {
        Kept {
            bytes: Vec::new(),
            switches,
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.bytes.is_empty() {
            self.switches.keeping.fetch_add(1, Ordering::SeqCst);
        }
        self.bytes.extend_from_slice(bytes);
    }

    /// Writes what was kept to `to` (a closed `to` loses it, as a reset connection would).
    fn deliver(&mut self, to: &mut TcpStream) -> io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let written = to.write_all(&std::mem::take(&mut self.bytes));
        self.switches.keeping.fetch_sub(1, Ordering::SeqCst);
        written
    }
}

impl Drop for Kept<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.switches.keeping.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
