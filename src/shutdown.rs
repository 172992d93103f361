//! Waiting that gives way to shutdown: every wait of the daemon and the long commands (a
//! backoff, a standby's poll) ends early when SIGTERM/SIGINT asks to stop.

use std::time::Duration;

use tokio::sync::watch;

/// Sleeps; `true` if shutdown was asked meanwhile (or already).
pub async fn sleep_or_shutdown(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => *shutdown.borrow(),
        changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
    }
}
