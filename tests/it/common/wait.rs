//! Waiting with a deadline, the one way the tests wait: on a condition, never a fixed sleep.
//!
//! [`wait_until!`](crate::common::wait_until) polls a condition until it holds and panics after
//! its limit, naming the condition it waited for (its source text) and a context the test
//! supplies (typically the daemon's log). The condition is a closure, or an `async` closure when
//! it has to await (a Redis read, a status message to send). [`within`] is the same loop for a
//! wait whose end is no failure, [`within_blocking`] (and [`exit_within`] on it) for code that
//! blocks its thread.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The pause between two looks at a condition, unless looking took longer: then the pause is
/// as long as the look, so a costly condition (a `sluice check` run, a read of every channel's
/// history) takes at most half of the time it is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls a condition until it holds; after `limit`, panics with the condition's text and
/// `context()`. Evaluates to a future to await.
///
/// `wait_until!(limit, || cond, || context)` for a plain condition;
/// `wait_until!(limit, async || cond.await, || context)` for one that awaits.
macro_rules! wait_until {
    ($limit:expr, async || $cond:expr, $context:expr $(,)?) => {
        $crate::common::wait::until($limit, stringify!($cond), async || $cond, $context)
    };
    ($limit:expr, $cond:expr, $context:expr $(,)?) => {
        $crate::common::wait::until(
            $limit,
            stringify!($cond),
            $crate::common::wait::awaitable($cond),
            $context,
        )
    };
}
pub(crate) use wait_until;

/// What [`wait_until!`] runs: `what` is the condition's source text.
pub async fn until(
    limit: Duration,
    what: &str,
    cond: impl AsyncFnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    if !within(limit, cond).await {
        let what = what.trim_start_matches("||").trim();
        let context = context();
        panic!("timed out after {limit:?} waiting for `{what}`\n{context}");
    }
}

/// Polls `cond` until it holds (`true`) or `limit` passes (`false`), for a wait whose end is
/// no failure.
pub async fn within(limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let looked = Instant::now();
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(POLL.max(looked.elapsed())).await;
    }
}

/// A plain condition as one [`until`] and [`within`] can await.
pub fn awaitable(mut cond: impl FnMut() -> bool) -> impl AsyncFnMut() -> bool {
    async move || cond()
}

/// As [`within`], blocking the thread: for code outside the tests' runtime.
pub fn within_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let looked = Instant::now();
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL.max(looked.elapsed()));
    }
}

/// The child's exit status once it exits within `limit`; `None` while it still runs.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    within_blocking(limit, || {
        status = child.try_wait().expect("wait for a child process");
        status.is_some()
    });
    status
}
