use super::*;
use crate::dead_letter::{DeadLetter, Reason};

fn router(delivery: &str) -> Router {
    let text = format!(
        r#"
[postgres]
[delivery]
{delivery}
[apps]
crm = {{ prefixes = ["crm."] }}
hrms = {{ prefixes = ["hrms."] }}
[[tables]]
table = "public.roles"
type = "roles"
tenant = "tenant_id"
app = {{ any_of = "permissions" }}
"#
    );
    Router::compile(&Config::parse(&text, std::path::Path::new("t.toml")).unwrap()).unwrap()
}

fn change(data: &str) -> Change {
    Change {
        event_id: "cl:42".into(),
        operation: Operation::Update,
        table: "public.roles".into(),
        record_id: Some("r1".into()),
        data: data.into(),
        old: Some(r#"{"role_name": "Old \"one\"", "n": 2.50}"#.into()),
        changed_fields: Some(vec!["role_name".into(), "n".into()]),
        unchanged_columns: vec!["big".into()],
        timestamp: "2026-11-22T10:00:00.123456Z".into(),
        source: SourceRef {
            mode: "logical",
            lsn: Some("0/1A2B3C8".into()),
            xid: Some(1234),
            id: None,
        },
        replay: None,
        fault: None,
    }
}

/// A row as the daemon parks it: the change encoded for `app` (None for unroutable ones).
fn parked(id: i64, app: Option<&str>, c: &Change) -> Parked {
    let mut buf = Vec::new();
    c.encode_into(app, app.map(|_| "t1"), "roles", &mut buf);
    Parked {
        id,
        app: app.map(str::to_string),
        payload: String::from_utf8(buf).unwrap(),
    }
}

const ROLE: &str =
    r#"{"role_id": "r1", "tenant_id": "t1", "n": 3.00, "permissions": ["crm.a", "hrms.b"]}"#;

#[test]
fn a_parked_payload_gives_back_the_change_it_was_made_from() {
    for replay in [None, Some("change_log")] {
        let original = Change {
            replay,
            ..change(ROLE)
        };
        let back = parked_change(&parked(1, Some("crm"), &original).payload).unwrap();
        let expected = Change {
            replay: Some("dead_letter"),
            ..original
        };
        assert_eq!(format!("{back:?}"), format!("{expected:?}"));
    }
    let trigger = Change {
        old: None,
        changed_fields: None,
        unchanged_columns: vec![],
        record_id: None,
        ..change("null")
    };
    let trigger = Change {
        source: SourceRef {
            mode: "trigger",
            lsn: None,
            xid: Some(7),
            id: Some(42),
        },
        ..trigger
    };
    let back = parked_change(&parked(1, None, &trigger).payload).unwrap();
    assert_eq!(
        format!("{back:?}"),
        format!(
            "{:?}",
            Change {
                replay: Some("dead_letter"),
                ..trigger
            }
        )
    );
}

#[test]
fn data_keeps_the_text_jsonb_printed() {
    // as `payload::text` prints it: spaces after colons, numbers with their digits
    let payload = r#"{"app": null, "data": {"n": 3.00, "x": [1, 2.0]}, "table": "public.roles", "source": {"id": 5, "xid": 9, "mode": "trigger"}, "eventId": "cl:5", "tenantId": null, "dataType": "roles", "recordId": "r1", "operation": "INSERT", "timestamp": "2026-11-22T10:00:00.000000Z"}"#;
    let c = parked_change(payload).unwrap();
    assert_eq!(
        (c.data.as_str(), c.old, c.event_id.as_str()),
        (r#"{"n": 3.00, "x": [1, 2.0]}"#, None, "cl:5")
    );
    assert!(parked_change(r#"{"eventId": "x"}"#).is_err());
    assert!(parked_change(&payload.replace("trigger", "carrier-pigeon"))
        .unwrap_err()
        .contains("source mode"));
    assert!(parked_change(&payload.replace("INSERT", "UPSERT"))
        .unwrap_err()
        .contains("operation"));
}

#[test]
fn a_fan_out_row_with_an_app_is_routed_to_that_app_only() {
    let c = change(ROLE);
    let rows = [
        parked(1, Some("hrms"), &c),
        parked(2, None, &c),
        parked(3, Some("finance"), &c),
    ];
    let (events, owner, fates) = route_rows(&router(""), &rows);
    let apps: Vec<(usize, &str)> = events
        .iter()
        .zip(&owner)
        .map(|(e, &o)| (o, &*e.app))
        .collect();
    assert_eq!(apps, [(0, "hrms"), (1, "crm"), (1, "hrms")]);
    assert_eq!(&fates[..2], [Fate::Delivered, Fate::Delivered]);
    assert!(
        matches!(&fates[2], Fate::Failed { reason: Some("unroutable"), error } if error.contains("app finance")),
        "{fates:?}"
    );
    let replayed: serde_json::Value = serde_json::from_slice(&events[0].payload).unwrap();
    assert_eq!(
        (replayed["eventId"].as_str(), replayed["replay"].as_str()),
        (Some("cl:42"), Some("dead_letter"))
    );
}

#[test]
fn routing_failures_and_drops_decide_the_fate() {
    let too_big = router("max_payload_bytes = 400");
    let (events, _, fates) = route_rows(&too_big, &[parked(1, Some("crm"), &change(ROLE))]);
    assert!(events.is_empty());
    assert!(
        matches!(
            &fates[0],
            Fate::Failed {
                reason: Some("payload_too_large"),
                ..
            }
        ),
        "{fates:?}"
    );
    let nowhere = change(r#"{"tenant_id": "t1", "permissions": ["sales.x"]}"#);
    let (_, _, fates) = route_rows(&router(""), &[parked(1, None, &nowhere)]);
    assert!(
        matches!(
            &fates[0],
            Fate::Failed {
                reason: Some("unroutable"),
                ..
            }
        ),
        "{fates:?}"
    );
    let (_, _, fates) = route_rows(
        &router("on_unroutable = \"drop\""),
        &[parked(1, None, &nowhere)],
    );
    assert_eq!(fates, [Fate::Dropped]);
    let (_, _, fates) = route_rows(
        &router(""),
        &[Parked {
            id: 1,
            app: None,
            payload: "{}".into(),
        }],
    );
    assert!(
        matches!(&fates[0], Fate::Failed { reason: None, error } if error.contains("not a Sluice event")),
        "{fates:?}"
    );
}

#[test]
fn rejected_events_fail_the_rows_they_came_from() {
    let mut fates = vec![Fate::Delivered, Fate::Delivered];
    let letter = DeadLetter {
        event_id: "cl:42".into(),
        channel: Some("hrms:t1:roles".into()),
        app: Some("hrms".into()),
        tenant: Some("t1".into()),
        table: "public.roles".into(),
        payload: "{}".into(),
        reason: Reason::PublishRejected,
        error: "PUBLISH: NOPERM".into(),
        attempts: 3,
    };
    let done = Delivered {
        published: 2,
        dead: vec![letter],
        rejected: vec![2],
    };
    settle(&mut fates, &[0, 0, 1], &done);
    assert_eq!(fates[0], Fate::Delivered);
    assert_eq!(
        fates[1],
        Fate::Failed {
            reason: Some("publish_rejected"),
            error: "PUBLISH: NOPERM".into()
        }
    );
}

#[test]
fn the_summary_starts_as_the_contract_says() {
    assert_eq!(Tally::default().summary(), "replayed 0 events, 0 skipped");
    let t = Tally {
        published: 5,
        failed: 1,
        dropped: 2,
    };
    assert!(
        t.summary()
            .starts_with("replayed 5 events, 1 skipped (still failing"),
        "{}",
        t.summary()
    );
    assert!(t
        .summary()
        .ends_with(", 2 resolved as dropped by on_unroutable = \"drop\""));
}
