//! `status` for a person: aligned `key: value` lines, sizes in binary units and ages in words,
//! each fact with what it means (and, for the alarming ones, what to do).

use std::fmt::Write;

use super::{Daemon, Report, Slot};

/// The report as aligned lines.
pub fn human(r: &Report) -> String {
    let mut lines: Vec<(&str, String)> = vec![("mode", r.mode.to_string())];
    match &r.slot {
        Some(slot) => logical(r, slot, &mut lines),
        None => trigger(r, &mut lines),
    }
    lines.push(("dead letters", dead_letters(r)));
    lines.push(("last error", last_error(r)));
    lines.push(("daemon", daemon(&r.daemon)));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        let _ = writeln!(out, "{:<width$} {value}", format!("{key}:"), width = width);
    }
    out
}

fn logical(r: &Report, slot: &Slot, lines: &mut Vec<(&str, String)>) {
    let name = &slot.name;
    if !slot.exists {
        lines.push(("slot", format!("{name} is missing: run `sluice setup` (or `sluice setup --recreate-slot` after it was lost)")));
        return;
    }
    let holder = r
        .active_pid
        .map_or("inactive: no daemon is streaming it".to_string(), |pid| {
            format!("active, streamed by backend pid {pid}")
        });
    lines.push(("slot", format!("{name}, {holder}")));
    lines.push(("position", position(r, "confirmed")));
    lines.push((
        "lag",
        r.lag_bytes.map_or("unknown".into(), |b| {
            format!("{} of WAL not yet confirmed", bytes(b))
        }),
    ));
    lines.push(("retained WAL", retained(r, slot)));
}

fn retained(r: &Report, slot: &Slot) -> String {
    let status = slot.wal_status.as_deref().unwrap_or("unknown");
    if status == "lost" {
        return "none: wal_status lost, the slot is invalidated; `sluice setup --recreate-slot`, then backfill".into();
    }
    let size = r.retained_wal_bytes.map_or("unknown".into(), bytes);
    let room = match slot.safe_wal_size_bytes {
        Some(b) => format!(
            "{} more before max_slot_wal_keep_size invalidates the slot",
            bytes(b)
        ),
        None => "no max_slot_wal_keep_size limit".into(),
    };
    format!("{size} (wal_status {status}; {room})")
}

fn trigger(r: &Report, lines: &mut Vec<(&str, String)>) {
    lines.push(("position", position(r, "published through")));
    let reader = r
        .active_pid
        .map_or("none: no daemon reads the change_log".to_string(), |pid| {
            format!("backend pid {pid} holds the change_log reader lock")
        });
    lines.push(("reader", reader));
    let pending = match (r.pending, r.oldest_pending_age_seconds) {
        (Some(0), _) | (None, _) => "0 changes".to_string(),
        (Some(n), Some(age)) => format!("{n} changes, the oldest written {} ago", seconds(age)),
        (Some(n), None) => format!("{n} changes"),
    };
    lines.push(("pending", pending));
}

fn position(r: &Report, verb: &str) -> String {
    let Some(position) = &r.position else {
        return "none stored yet".into();
    };
    match (&r.position_updated_at, r.position_age_seconds) {
        (Some(at), Some(age)) => format!(
            "{verb} {position} (checkpoint stored {at}, {} ago)",
            seconds(age)
        ),
        _ => format!("{verb} {position}"),
    }
}

fn dead_letters(r: &Report) -> String {
    if r.dead_letters.open == 0 {
        return "none open".into();
    }
    let reasons: Vec<String> = r
        .dead_letters
        .by_reason
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    format!(
        "{} open ({}); `sluice dead-letters list` shows them",
        r.dead_letters.open,
        reasons.join(", ")
    )
}

fn last_error(r: &Report) -> String {
    match &r.last_error {
        None => "none recorded".into(),
        Some(e) => format!(
            "{} {}",
            e.at.as_deref().unwrap_or("(time unknown)"),
            e.message.replace(['\n', '\r'], " ")
        ),
    }
}

fn daemon(d: &Daemon) -> String {
    if d.address.is_empty() {
        return "not asked: http.listen is empty, so the daemon serves no HTTP".into();
    }
    if !d.reachable {
        return format!("not reachable at {}", d.address);
    }
    let mut parts = vec![d.phase.clone().unwrap_or_else(|| "phase unknown".into())];
    parts.extend(d.ready.clone());
    parts.extend(
        d.uptime_seconds
            .map(|s| format!("up {}", seconds(s as f64))),
    );
    parts.extend(d.version.as_ref().map(|v| format!("version {v}")));
    format!("{} (at {})", parts.join(", "), d.address)
}

/// A size in binary units: `512 B`, `1.2 MiB`. Negative sizes (a slot ahead of a standby's
/// replay position) count as 0.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{} B", n.max(0));
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An age or duration in at most two units: `42 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`.
pub fn seconds(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DeadLetters, LastError};
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(
            (bytes(-5), bytes(0), bytes(1023)),
            ("0 B".into(), "0 B".into(), "1023 B".into())
        );
        assert_eq!(
            (bytes(1024), bytes(1_258_291), bytes(3 << 30)),
            ("1.0 KiB".into(), "1.2 MiB".into(), "3.0 GiB".into())
        );
        assert_eq!(
            (
                seconds(0.4),
                seconds(184.0),
                seconds(7500.0),
                seconds(273_600.0)
            ),
            (
                "0 s".into(),
                "3 min 4 s".into(),
                "2 h 5 min".into(),
                "3 d 4 h".into()
            )
        );
    }

    fn report(slot: Option<Slot>) -> Report {
        Report {
            mode: if slot.is_some() { "logical" } else { "trigger" },
            slot,
            position: Some("0/16B3748".into()),
            position_updated_at: Some("2026-11-22T10:00:00Z".into()),
            position_age_seconds: Some(65.0),
            active_pid: None,
            lag_bytes: Some(1_258_291),
            retained_wal_bytes: Some(2048),
            pending: Some(3),
            oldest_pending_age_seconds: Some(12.0),
            dead_letters: DeadLetters {
                open: 3,
                by_reason: [
                    ("invalid_tenant".to_string(), 1),
                    ("unroutable".to_string(), 2),
                ]
                .into(),
            },
            last_error: Some(LastError {
                message: "Redis unavailable:\nrefused".into(),
                at: Some("2026-11-22T09:59:00Z".into()),
            }),
            daemon: Daemon::unknown("0.0.0.0:9750"),
        }
    }

    #[test]
    fn lines_are_aligned_and_say_what_they_mean() {
        let slot = Slot {
            name: "sluice".into(),
            exists: true,
            restart_lsn: None,
            wal_status: Some("reserved".into()),
            safe_wal_size_bytes: None,
        };
        let text = human(&report(Some(slot)));
        let expected = "\
mode:         logical
slot:         sluice, inactive: no daemon is streaming it
position:     confirmed 0/16B3748 (checkpoint stored 2026-11-22T10:00:00Z, 1 min 5 s ago)
lag:          1.2 MiB of WAL not yet confirmed
retained WAL: 2.0 KiB (wal_status reserved; no max_slot_wal_keep_size limit)
dead letters: 3 open (invalid_tenant 1, unroutable 2); `sluice dead-letters list` shows them
last error:   2026-11-22T09:59:00Z Redis unavailable: refused
daemon:       not reachable at 127.0.0.1:9750
";
        assert_eq!(text, expected);
        let text = human(&report(None));
        assert!(
            text.contains("pending:      3 changes, the oldest written 12 s ago\n"),
            "{text}"
        );
        assert!(
            text.contains("reader:       none: no daemon reads the change_log\n"),
            "{text}"
        );
    }
}
