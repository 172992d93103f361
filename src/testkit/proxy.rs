//! A TCP proxy that can blackhole its connections: while on, every byte in either direction is
//! read and dropped and new connections are accepted but never forwarded, so each side sees an
//! open socket and silence, as when a network path loses its packets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

/// A running proxy from a free port on 127.0.0.1 to `127.0.0.1:<target>`; dropping it stops
/// accepting (connections already made keep running until either side closes).
pub struct Proxy {
    port: u16,
    blackhole: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (hole, halt) = (blackhole.clone(), stop.clone());
        thread::spawn(move || accept(listener, target, hole, halt));
        Ok(Proxy {
            port,
            blackhole,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every byte from now on (`true`), or forwards again (`false`).
    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn accept(listener: TcpListener, target: u16, blackhole: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let hole = blackhole.clone();
        thread::spawn(move || {
            // A connection made while blackholed is held open and never forwarded.
            while hole.load(Ordering::SeqCst) {
                thread::sleep(std::time::Duration::from_millis(50));
            }
            if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                pipe_both(client, server, hole);
            }
        });
    }
}

fn pipe_both(client: TcpStream, server: TcpStream, blackhole: Arc<AtomicBool>) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let hole = blackhole.clone();
    thread::spawn(move || pipe(client2, server2, hole));
    pipe(server, client, blackhole);
}

/// Copies `from` to `to` until either closes, dropping what arrives while blackholed.
fn pipe(mut from: TcpStream, mut to: TcpStream, blackhole: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !blackhole.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
