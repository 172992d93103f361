use super::*;
use crate::config::HistoryConfig;
use crate::publish::recoverable::answer::{collapse, Outcome};
use crate::publish::recoverable::Meta;
use crate::publish::resp::Reply;
use crate::publish::Delivery;

fn event(key: &str, record: &str) -> Event {
    Event {
        event_id: String::new(),
        channel: "crm:t1:leads".into(),
        app: "crm".into(),
        data_type: "leads".into(),
        table: "public.leads".into(),
        tenant: "t1".into(),
        payload: br#"{"a":1}"#.to_vec(),
        invalidate: Vec::new(),
        key: key.into(),
        record_id: Some(record.into()),
        removes: false,
        state: true,
    }
}

fn run(events: &[Event]) -> Run<'_> {
    Run {
        channel: "crm:t1:leads",
        events: (0..events.len()).collect(),
    }
}

fn history() -> History {
    History::new(&HistoryConfig::default())
}

fn ctx<'a>(history: &'a History, origin: &'a str, publish: Publish) -> Context<'a> {
    Context {
        history,
        origin,
        epoch: "new".into(),
        publish,
    }
}

fn meta(epoch: &str, seq: u64, pos: &str, origin: &str, ids: &str) -> Meta {
    Meta {
        epoch: Some(epoch.into()),
        seq,
        pos: pos.into(),
        origin: origin.into(),
        ids: ids.into(),
    }
}

fn plan(events: &[Event], base: &Meta, origin: &str) -> Tx {
    let h = history();
    let expect = (base.epoch.clone(), base.seq);
    Tx::plan(
        &run(events),
        events,
        base,
        expect,
        &ctx(&h, origin, Publish::Inside),
    )
}

#[test]
fn logical_mode_skips_what_the_channel_has_by_position() {
    let events = [event("0/05", "a"), event("0/10", "b"), event("0/12", "c")];
    let tx = plan(&events, &meta("e", 7, "0/10", "", ""), "");
    assert_eq!(tx.numbers, [None, None, Some(8)]);
    assert_eq!(tx.after, meta("e", 8, "0/12", "", ""));
    assert!(!tx.started);
}

#[test]
fn trigger_mode_skips_the_ids_published_since_the_same_origin() {
    let events = [event("2", "a"), event("3", "b"), event("3", "b")];
    let tx = plan(&events, &meta("e", 2, "", "o1", "1,2,"), "o1");
    assert_eq!(tx.numbers, [None, Some(3), None]);
    assert_eq!(tx.after.ids, "1,2,3,");
    // another origin: the ids kept belong to an older read; nothing is skipped
    let tx = plan(&events[..2], &meta("e", 2, "", "o1", "1,2,"), "o2");
    assert_eq!(tx.numbers, [Some(3), Some(4)]);
    assert_eq!(
        (tx.after.origin.as_str(), tx.after.ids.as_str()),
        ("o2", "2,3,")
    );
}

#[test]
fn a_channel_without_meta_starts_the_batch_epoch_at_seq_1() {
    let events = [event("0/01", "a"), event("0/02", "b")];
    let tx = plan(&events, &Meta::default(), "");
    assert!(tx.started);
    assert_eq!(tx.numbers, [Some(1), Some(2)]);
    assert_eq!(tx.after.epoch.as_deref(), Some("new"));
    assert!(plan(&events, &meta("e", 2, "0/02", "", ""), "").is_empty());
}

#[test]
fn the_message_carries_seq_and_epoch_ahead_of_the_event() {
    let mut out = Vec::new();
    message(&mut out, 42, "k3x", br#"{"eventId":"x"}"#);
    assert_eq!(out, br#"{"seq":42,"epoch":"k3x","eventId":"x"}"#);
}

#[test]
fn meta_reads_back_what_its_hmget_asks_for() {
    let mut out = Vec::new();
    Meta::read(&mut out, "sluice:meta:{c}");
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("*7\r\n$5\r\nHMGET\r\n$15\r\nsluice:meta:{c}\r\n$5\r\nepoch\r\n"));
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    let reply = Reply::Array(vec![
        bulk("e"),
        bulk("9"),
        bulk("0/1"),
        Reply::Other,
        Reply::Other,
    ]);
    assert_eq!(Meta::parse(&reply).unwrap(), meta("e", 9, "0/1", "", ""));
    let none = Reply::Array(vec![Reply::Other; 5]);
    assert_eq!(Meta::parse(&none).unwrap(), Meta::default());
}

/// The replies Redis gives an `EXEC` of `tx` that found `found` and published to `receivers`.
fn exec_answer(tx: &Tx, events: &[Event], found: Reply, receivers: i64) -> Vec<Reply> {
    let h = history();
    let c = ctx(&h, "", Publish::Inside);
    let mut wire = Vec::new();
    let n = tx.encode(&mut wire, &run(events), events, &c, false);
    let text = String::from_utf8_lossy(&wire);
    let lines: Vec<&str> = text.split("\r\n").collect();
    // each command is `*N`, then `$len` and its name
    let commands: Vec<&str> = (0..lines.len() - 2)
        .filter(|&i| lines[i].starts_with('*'))
        .map(|i| lines[i + 2])
        .collect();
    assert_eq!(commands.len(), n, "{commands:?}");
    assert_eq!((commands[0], commands[n - 1]), ("MULTI", "EXEC"));
    let mut results = vec![found];
    for cmd in &commands[2..commands.len() - 1] {
        results.push(match *cmd {
            "PUBLISH" => Reply::Integer(receivers),
            _ => Reply::Integer(0),
        });
    }
    let mut replies = vec![Reply::Other; n - 1];
    replies.push(Reply::Array(results));
    replies
}

/// `tx`'s reading of `answer` (one server): its outcome and each event's delivery.
fn read(tx: &Tx, events: &[Event], answer: Reply) -> (Outcome, Vec<Option<Delivery>>) {
    let h = history();
    let mut out = vec![None; events.len()];
    let c = ctx(&h, "", Publish::Inside);
    let outcome = tx.read(&run(events), events, &c, answer, &mut out).unwrap();
    (outcome, out)
}

#[test]
fn an_exec_answer_gives_each_event_its_delivery() {
    let events = [event("0/01", "a"), event("0/02", "b"), event("0/03", "c")];
    let base = meta("e", 1, "0/01", "", "");
    let tx = plan(&events, &base, "");
    let bulk = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    let found = Reply::Array(vec![bulk("e"), bulk("1")]);
    let answer = collapse(exec_answer(&tx, &events, found, 2), 0);
    let (outcome, out) = read(&tx, &events, answer);
    assert_eq!(outcome, Outcome::Done { trimmed: 0 });
    let sent = Some(Delivery::Sent { receivers: 2 });
    assert_eq!(out, [Some(Delivery::Duplicate), sent.clone(), sent]);
}

#[test]
fn an_exec_that_found_another_meta_is_a_mismatch() {
    let events = [event("0/02", "b")];
    let tx = plan(&events, &meta("e", 1, "0/01", "", ""), "");
    let gone = Reply::Array(vec![Reply::Other, Reply::Other]);
    let answer = collapse(exec_answer(&tx, &events, gone, 0), 0);
    let (outcome, out) = read(&tx, &events, answer);
    assert_eq!(outcome, Outcome::Mismatch((None, 0)));
    assert_eq!(out, [Some(Delivery::Sent { receivers: 0 })]);
}

#[test]
fn a_refused_transaction_answers_with_its_first_queued_error() {
    let err = |s: &str| Reply::Error(s.into());
    let replies = vec![
        Reply::Other,
        Reply::Other,
        err("ASK 12 127.0.0.1:7001"),
        err("EXECABORT Transaction discarded because of previous errors."),
    ];
    assert_eq!(collapse(replies, 0), err("ASK 12 127.0.0.1:7001"));
    let replies = vec![
        Reply::Other,
        err("TRYAGAIN Multiple keys request during rehashing"),
    ];
    assert!(matches!(collapse(replies, 0), Reply::Error(e) if e.starts_with("TRYAGAIN")));
    // SPUBLISH after EXEC, each behind ASKING
    let replies = vec![
        Reply::Other,
        Reply::Array(vec![Reply::Integer(0)]),
        Reply::Other,
        Reply::Integer(3),
    ];
    let joined = Reply::Array(vec![Reply::Integer(0), Reply::Integer(3)]);
    assert_eq!(collapse(replies, 2), joined);
}
