//! The replication connection against a real server: identify, stream, confirm.

use std::time::Duration;

use crate::common::wait_until;
use sluice::source::lsn;
use sluice::source::replication::{Frame, ReplicationConn, StandbyStatus};
use sluice::testkit::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pgoutput_and_confirms_the_flush_position() {
    let pg = Postgres::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    )
    .unwrap();
    pg.psql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
    )
    .unwrap();
    let mut conn = ReplicationConn::connect(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let system = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
    assert_eq!(system.len(), 1);
    assert!(lsn::parse(system[0][2].as_deref().unwrap()).is_some());
    conn.start("s", "p", 0).await.unwrap();
    pg.psql("postgres", "INSERT INTO t VALUES (1, 'x')")
        .unwrap();
    let mut tags = Vec::new();
    let mut commit_end = 0;
    while !tags.contains(&b'C') {
        let frame = tokio::time::timeout(Duration::from_secs(20), conn.next_frame())
            .await
            .expect("a frame")
            .unwrap();
        if let Frame::XLogData { data, end, .. } = frame {
            tags.push(data[0]);
            if data[0] == b'C' {
                commit_end = u64::from_be_bytes(data[10..18].try_into().unwrap());
                assert!(end >= commit_end || end == 0);
            }
        }
    }
    assert_eq!(tags, [b'B', b'R', b'I', b'C']);
    conn.send_status(StandbyStatus {
        write: commit_end,
        flush: commit_end,
        apply: commit_end,
        time: 0,
        reply: false,
    })
    .await
    .unwrap();
    let confirmed = || {
        pg.psql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 's'",
        )
        .unwrap()
    };
    // the walsender applies feedback when it next reads from the socket; a keepalive round nudges it
    let mut slot_confirms_the_commit = async || {
        if lsn::parse(&confirmed()) == Some(commit_end) {
            return true;
        }
        conn.send_status(StandbyStatus {
            write: commit_end,
            flush: commit_end,
            apply: commit_end,
            time: 0,
            reply: false,
        })
        .await
        .unwrap();
        false
    };
    wait_until!(
        Duration::from_secs(20),
        async || slot_confirms_the_commit().await,
        || format!(
            "slot confirmed {} not {}",
            confirmed(),
            lsn::format(commit_end)
        )
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_is_a_server_error_with_its_sqlstate() {
    let pg = Postgres::start().unwrap();
    pg.psql("postgres", "CREATE PUBLICATION p FOR ALL TABLES")
        .unwrap();
    let mut conn = ReplicationConn::connect(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let e = conn.start("nope", "p", 0).await.unwrap_err();
    assert!(
        matches!(&e, sluice::source::replication::ReplicationError::Server { code: Some(c), .. } if c == "42704"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_scram_and_rejects_a_wrong_password() {
    let pg = Postgres::start().unwrap();
    let hba = pg.psql("postgres", "SHOW hba_file").unwrap();
    let rules = std::fs::read_to_string(hba.trim()).unwrap();
    std::fs::write(
        hba.trim(),
        format!("host all scrammer 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    pg.psql("postgres", "SET password_encryption = 'scram-sha-256'; CREATE ROLE scrammer LOGIN REPLICATION PASSWORD 's3cr:t'; SELECT pg_reload_conf()").unwrap();
    let url = |password: &str| {
        format!(
            "postgres://scrammer:{password}@127.0.0.1:{}/postgres",
            pg.port()
        )
    };
    let mut conn = ReplicationConn::connect(&url("s3cr%3At"), Duration::from_secs(10))
        .await
        .expect("SCRAM login");
    assert_eq!(conn.simple_query("IDENTIFY_SYSTEM").await.unwrap().len(), 1);
    let wrong = ReplicationConn::connect(&url("nope"), Duration::from_secs(10))
        .await
        .err()
        .expect("a wrong password fails");
    assert!(
        matches!(&wrong, sluice::source::replication::ReplicationError::Server { code: Some(c), .. } if c == "28P01")
            || wrong.to_string().contains("SCRAM"),
        "{wrong}"
    );
}

/// `SHOW transaction_read_only` on the connection: which server it reached.
async fn read_only(conn: &mut ReplicationConn) -> String {
    let rows = conn
        .simple_query("SHOW transaction_read_only")
        .await
        .unwrap();
    rows[0][0].clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_is_tried_in_order_and_read_write_skips_a_standby() {
    let primary = Postgres::start().unwrap();
    let standby = primary.start_standby("standby", "postgres", &[]).unwrap();
    let dead = sluice::testkit::free_port();
    let timeout = Duration::from_secs(10);
    let url = |ports: &[u16], attrs: &str| {
        let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("postgres://postgres@{}/postgres{attrs}", hosts.join(","))
    };
    let rw = "?target_session_attrs=read-write";
    let (s, p) = (standby.port(), primary.port());
    let mut conn = ReplicationConn::connect(&url(&[dead, s, p], rw), timeout)
        .await
        .unwrap();
    assert_eq!(
        read_only(&mut conn).await,
        "off",
        "the primary, past a dead host and a standby"
    );
    let mut conn = ReplicationConn::connect(&url(&[dead, s, p], ""), timeout)
        .await
        .unwrap();
    assert_eq!(
        read_only(&mut conn).await,
        "on",
        "any server will do: the first that answers"
    );
    let e = ReplicationConn::connect(&url(&[dead, s], rw), timeout)
        .await
        .err()
        .expect("no primary among them");
    assert!(e.to_string().contains("read-only (a standby)"), "{e}");
}
