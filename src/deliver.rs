//! From a batch of changes to what Redis acknowledged: route, publish as one pipeline, and
//! collect the dead letters. An event Redis rejects is published again, with backoff, up to
//! `delivery.max_attempts` attempts in all; then it is dead-lettered with its attempts.
//! While Redis is unreachable the batch is retried with backoff and nothing is reported done;
//! a state change (lost, back) is logged once, not per event.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::DeliveryConfig;
use crate::dead_letter::{DeadLetter, Reason};
use crate::event::Change;
use crate::health::Health;
use crate::publish::{Delivery, PublishError, Publisher};
use crate::route::{Event, Routed, Router};
use crate::shutdown::sleep_or_shutdown;
use crate::telemetry as m;

/// What a delivered batch leaves to store with the checkpoint.
#[derive(Debug, Default)]
pub struct Delivered {
    pub published: usize,
    pub dead: Vec<DeadLetter>,
    /// The indices (into the events published) of those Redis rejected, in order: their dead
    /// letters are the last `rejected.len()` of `dead`. `replay dead-letters` maps them back
    /// to the rows they came from. Empty, and so never allocated, while Redis accepts all.
    pub rejected: Vec<usize>,
}

/// Routes and publishes; returns `None` if shutdown was asked while Redis was unavailable
/// (nothing is stored then, and the batch is read again after a restart).
pub async fn deliver(
    router: &Router,
    publisher: &Publisher,
    changes: &[Change],
    origin: Option<&str>,
    policy: &DeliveryConfig,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Delivered> {
    let (events, dead) = route_all(router, changes);
    let done = publish_routed(publisher, &events, origin, dead, policy, health, shutdown).await?;
    crate::latency::record(changes, std::time::SystemTime::now());
    health.add_published(done.published as u64, done.dead.len() as u64);
    Some(done)
}

/// Publishes events already routed (the operator's replays filter them first), retrying
/// rejections up to `max_attempts`; `dead` are the batch's routing dead letters, to which the
/// rejected ones are added. `None` on shutdown while Redis was unavailable.
pub async fn publish_routed(
    publisher: &Publisher,
    events: &[Event],
    origin: Option<&str>,
    mut dead: Vec<DeadLetter>,
    policy: &DeliveryConfig,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Delivered> {
    let mut deliveries =
        publish_until_acknowledged(publisher, events, origin, policy, health, shutdown).await?;
    let attempts = retry_rejected(
        publisher,
        events,
        origin,
        &mut deliveries,
        policy,
        health,
        shutdown,
    )
    .await?;
    let (mut published, mut rejected_at, mut duplicates) = (0, Vec::new(), 0);
    // (app, type) -> (published, without receivers): counted per batch, recorded once per label set
    let mut counts: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for (i, ((event, delivery), attempts)) in
        events.iter().zip(deliveries).zip(attempts).enumerate()
    {
        match delivery {
            Delivery::Sent { receivers } => {
                published += 1;
                let c = counts.entry((&event.app, &event.data_type)).or_default();
                c.0 += 1;
                c.1 += u64::from(receivers == 0);
            }
            Delivery::Rejected(error) => {
                metrics::counter!(m::PUBLISH_ERRORS, "kind" => "rejected").increment(1);
                dead.push(rejected(event, error, attempts));
                rejected_at.push(i);
            }
            Delivery::Duplicate => duplicates += 1,
        }
    }
    if duplicates > 0 {
        metrics::counter!(m::DUPLICATES_SUPPRESSED).increment(duplicates);
        tracing::info!(
            duplicates,
            "events Redis already had were not published again"
        );
    }
    for ((app, data_type), (sent, unheard)) in counts {
        let labels = [("app", app.to_string()), ("type", data_type.to_string())];
        metrics::counter!(m::EVENTS_PUBLISHED, &labels).increment(sent);
        if unheard > 0 {
            metrics::counter!(m::PUBLISH_NO_RECEIVERS, &labels).increment(unheard);
        }
    }
    for d in &dead {
        metrics::counter!(m::DEAD_LETTERS, "reason" => d.reason.as_str()).increment(1);
    }
    Some(Delivered {
        published,
        dead,
        rejected: rejected_at,
    })
}

pub fn route_all(router: &Router, changes: &[Change]) -> (Vec<Event>, Vec<DeadLetter>) {
    let mut routed = Vec::with_capacity(changes.len());
    let mut buf = Vec::with_capacity(1024);
    let mut received: HashMap<(&str, &'static str), u64> = HashMap::new();
    for change in changes {
        *received
            .entry((router.table_label(&change.table), change.operation.as_str()))
            .or_default() += 1;
        router.route(change, &mut routed, &mut buf);
    }
    for ((table, operation), n) in received {
        metrics::counter!(m::CHANGES_RECEIVED, "table" => table.to_string(), "operation" => operation).increment(n);
    }
    let mut events = Vec::with_capacity(routed.len());
    let mut dead = Vec::new();
    for r in routed {
        match r {
            Routed::Publish(e) => events.push(e),
            Routed::DeadLetter(d) => dead.push(d),
            Routed::Dropped => {}
        }
    }
    (events, dead)
}

/// Publishes the events Redis rejected again, up to `max_attempts` in all, with backoff;
/// returns how many attempts each event took. `None` on shutdown.
async fn retry_rejected(
    publisher: &Publisher,
    events: &[Event],
    origin: Option<&str>,
    deliveries: &mut [Delivery],
    policy: &DeliveryConfig,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Vec<i32>> {
    let mut attempts = vec![1; events.len()];
    let mut backoff = Backoff::for_delivery(policy);
    for _ in 1..policy.max_attempts {
        let failed: Vec<usize> = (0..deliveries.len())
            .filter(|&i| matches!(deliveries[i], Delivery::Rejected(_)))
            .collect();
        if failed.is_empty() {
            break;
        }
        tracing::debug!(count = failed.len(), "Redis rejected events; retrying them");
        health.turned();
        if sleep_or_shutdown(backoff.next_wait(), shutdown).await {
            return None;
        }
        let again: Vec<Event> = failed.iter().map(|&i| events[i].clone()).collect();
        let answers =
            publish_until_acknowledged(publisher, &again, origin, policy, health, shutdown).await?;
        for (&i, answer) in failed.iter().zip(answers) {
            deliveries[i] = answer;
            attempts[i] += 1;
        }
    }
    Some(attempts)
}

fn rejected(event: &Event, error: String, attempts: i32) -> DeadLetter {
    DeadLetter {
        event_id: event.event_id.clone(),
        channel: Some(event.channel.clone()),
        app: Some(event.app.to_string()),
        tenant: Some(event.tenant.clone()),
        table: event.table.to_string(),
        payload: String::from_utf8_lossy(&event.payload).into_owned(),
        reason: Reason::PublishRejected,
        error,
        attempts,
    }
}

async fn publish_until_acknowledged(
    publisher: &Publisher,
    events: &[Event],
    origin: Option<&str>,
    policy: &DeliveryConfig,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Vec<Delivery>> {
    let mut backoff = Backoff::for_delivery(policy);
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        match publisher.publish(events, origin).await {
            Ok(deliveries) => {
                if let Some(since) = down_since {
                    metrics::counter!(m::REDIS_RECONNECTS).increment(1);
                    tracing::info!(after = ?since.elapsed(), "Redis is reachable again; publishing resumed");
                }
                health.set_up("redis", true);
                return Some(deliveries);
            }
            Err(e) => {
                let why = match &e {
                    PublishError::Unavailable(why) => why.to_string(),
                    other => other.to_string(),
                };
                metrics::counter!(m::PUBLISH_ERRORS, "kind" => "unavailable").increment(1);
                health.set_down("redis", why.clone());
                if down_since.is_none() {
                    health.record_error(format!("Redis unavailable: {why}"));
                    tracing::warn!(error = %why, held = events.len(), "Redis is unavailable; holding changes and retrying");
                    down_since = Some(std::time::Instant::now());
                }
                // waiting out Redis is the loop turning: /healthz stays 200 meanwhile
                health.turned();
                let wait = backoff.next_wait();
                tracing::debug!(retry_in = ?wait, "Redis still unavailable; publish retry scheduled");
                if sleep_or_shutdown(wait, shutdown).await {
                    return None;
                }
            }
        }
    }
}
