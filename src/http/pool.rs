//! The connections the HTTP server holds, and which one gives way when a new one arrives at
//! the cap.
//!
//! A connection is idle while no request of it is being answered: before its first request
//! (a client that connected and sends nothing, or half a request line), and between requests
//! on a kept-alive connection. Idle connections cost a slot and nothing else, so a flood of
//! them must never keep a probe waiting: at the cap, the oldest idle connection is closed to
//! make room. Only when every slot is answering a request is the new connection refused.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;

/// How many requests of one connection are being answered (0: idle).
#[derive(Debug, Default)]
pub struct Activity(AtomicUsize);

impl Activity {
    /// Marks a request as being answered until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn is_idle(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// A request being answered; dropped once its response has been written.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection marked busy until hyper has taken all of it.
pub struct Answer {
    body: Full<Bytes>,
    _in_flight: InFlight,
}

impl Answer {
    pub fn new(body: Bytes, in_flight: InFlight) -> Answer {
        Answer {
            body: Full::new(body),
            _in_flight: in_flight,
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether a new connection may be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// There was a free slot.
    Free,
    /// The oldest idle connection was closed to make room.
    Shed,
    /// Every slot is answering a request: refuse the new connection.
    Full,
}

struct Entry {
    task: AbortHandle,
    activity: Arc<Activity>,
}

/// The open connections, oldest first.
pub struct Pool {
    cap: usize,
    entries: VecDeque<Entry>,
}

impl Pool {
    pub fn new(cap: usize) -> Pool {
        Pool {
            cap: cap.max(1),
            entries: VecDeque::with_capacity(cap),
        }
    }

    /// Open connections (finished ones are forgotten on the next [`Pool::admit`]).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes room for a new connection if it can: forgets finished connections, then at the
    /// cap closes the oldest idle one.
    pub fn admit(&mut self) -> Admit {
        self.entries.retain(|e| !e.task.is_finished());
        if self.entries.len() < self.cap {
            return Admit::Free;
        }
        match self.entries.iter().position(|e| e.activity.is_idle()) {
            Some(oldest) => {
                if let Some(e) = self.entries.remove(oldest) {
                    e.task.abort();
                }
                Admit::Shed
            }
            None => Admit::Full,
        }
    }

    /// Records a connection served by `task`, newest last.
    pub fn push(&mut self, task: AbortHandle, activity: Arc<Activity>) {
        self.entries.push_back(Entry { task, activity });
    }
}
