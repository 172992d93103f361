use std::time::Duration;

use hyper::{Method, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;

use super::{stall_limit, Endpoints};
use crate::health::{Health, Phase};

fn endpoints(stall_limit: Duration) -> Endpoints {
    Endpoints {
        mode: "trigger",
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        stall_limit,
    }
}

fn get(e: &Endpoints, h: &Health, path: &str) -> (StatusCode, String) {
    let r = e.respond(&Method::GET, path, h);
    (r.status, String::from_utf8(r.body.to_vec()).unwrap())
}

#[test]
fn readyz_gives_the_reason_until_streaming_with_both_servers() {
    let (e, h) = (endpoints(Duration::from_secs(30)), Health::new());
    let (status, body) = get(&e, &h, "/readyz");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("starting") && body.ends_with('\n') && body.lines().count() == 1,
        "{body:?}"
    );
    h.set_phase(Phase::Streaming);
    h.set_up("postgres", true);
    h.set_up("redis", true);
    assert_eq!(get(&e, &h, "/readyz"), (StatusCode::OK, "ready\n".into()));
    h.set_up("redis", false);
    assert_eq!(
        get(&e, &h, "/readyz"),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis is unreachable\n".into()
        )
    );
}

#[test]
fn readyz_standby_ok_is_ready_for_a_standby_that_could_take_over() {
    let (e, h) = (endpoints(Duration::from_secs(30)), Health::new());
    h.set_phase(Phase::Standby);
    h.set_up("postgres", true);
    h.set_up("redis", true);
    assert_eq!(get(&e, &h, "/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = get(&e, &h, "/readyz?standby=ok");
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with("standby: ") && body.ends_with('\n'),
        "{body:?}"
    );
    assert_eq!(
        get(&e, &h, "/readyz?standby=yes").0,
        StatusCode::SERVICE_UNAVAILABLE,
        "only standby=ok asks"
    );
    h.set_up("redis", false);
    assert_eq!(
        get(&e, &h, "/readyz?x=1&standby=ok"),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis is unreachable\n".into()
        )
    );
    h.set_phase(Phase::Streaming);
    assert_eq!(
        get(&e, &h, "/readyz?standby=ok").0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the active daemon is judged as by /readyz"
    );
    h.set_up("redis", true);
    assert_eq!(
        get(&e, &h, "/readyz?standby=ok"),
        (StatusCode::OK, "ready\n".into())
    );
}

#[test]
fn healthz_fails_only_when_the_loop_stops_turning() {
    let h = Health::new();
    h.turned();
    assert_eq!(
        get(&endpoints(Duration::from_secs(30)), &h, "/healthz"),
        (StatusCode::OK, "ok\n".into())
    );
    std::thread::sleep(Duration::from_millis(5)); // the loop "stalls" for 5 ms against a limit of 0
    let (status, body) = get(&endpoints(Duration::ZERO), &h, "/healthz");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("stuck: the work loop has not turned"),
        "{body}"
    );
}

#[test]
fn status_is_json_and_other_paths_and_methods_are_refused() {
    let (e, h) = (endpoints(Duration::from_secs(30)), Health::new());
    let r = e.respond(&Method::GET, "/status", &h);
    assert_eq!(
        (r.status, r.content_type),
        (StatusCode::OK, "application/json")
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["mode"].as_str(), v["phase"].as_str()),
        (Some("trigger"), Some("starting"))
    );
    assert_eq!(get(&e, &h, "/").0, StatusCode::NOT_FOUND);
    assert_eq!(get(&e, &h, "/readyz/x").0, StatusCode::NOT_FOUND);
    let post = e.respond(&Method::POST, "/readyz", &h);
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        e.respond(&Method::GET, "/metrics", &h).content_type,
        super::PROMETHEUS_TEXT
    );
    let (_, metrics) = get(&e, &h, "/metrics");
    assert!(
        metrics.contains("\nprocess_resident_memory_bytes ")
            && metrics.contains("\nprocess_cpu_seconds_total "),
        "{metrics}"
    );
}

#[test]
fn the_stall_limit_covers_a_backoff_and_a_timeout() {
    let mut c = crate::config::Config::parse(
        "[postgres]\n[source]\nmode = \"trigger\"\n[[tables]]\ntable = \"t\"\ntype = \"t\"\ntenant = \"x\"\napp = { fixed = [] }\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(
        stall_limit(&c),
        Duration::from_secs(30 + 30 + 10),
        "defaults"
    );
    c.source.heartbeat_interval = Duration::from_secs(60);
    c.delivery.max_backoff = Duration::from_secs(5);
    assert_eq!(stall_limit(&c), Duration::from_secs(180 + 5 + 10));
}

#[test]
fn the_busy_answer_is_one_well_formed_response() {
    let text = std::str::from_utf8(super::BUSY).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 503 ") && head.contains("connection: close"),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{text:?}"
    );
}

/// The server on real sockets, with short limits.
mod connections {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::endpoints;
    use crate::health::Health;
    use crate::http::pool::{Activity, Admit, Pool};
    use crate::http::{accept, Limits};

    /// A server on a free port with these limits, stopped when the handle is dropped.
    struct Server(SocketAddr, tokio::task::JoinHandle<()>);

    impl Drop for Server {
        fn drop(&mut self) {
            self.1.abort();
        }
    }

    async fn server(max_connections: usize, header_timeout: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections,
            header_timeout,
            connection_limit: Duration::from_secs(30),
        };
        Server(
            addr,
            tokio::spawn(accept(
                listener,
                Arc::new(endpoints(Duration::from_secs(3600))),
                Arc::new(Health::new()),
                limits,
            )),
        )
    }

    async fn connect(addr: SocketAddr, first: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(first.as_bytes()).await.unwrap();
        s
    }

    /// Whether the server closed `s` within `limit` (end of stream or a reset, after any answer).
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// `GET /healthz` on a new connection: the whole answer, read until the server closes.
    async fn healthz(addr: SocketAddr) -> String {
        let mut s = connect(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let mut answer = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut answer)).await;
        read.expect("an answer within 2 s").unwrap();
        answer
    }

    /// Sends one kept-alive `GET /healthz` on `s` and reads its answer.
    async fn ask(s: &mut TcpStream) {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].ends_with(b"\r\n\r\nok\n"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_closes_the_oldest_idle_one() {
        let server = server(4, Duration::from_secs(60)).await;
        let mut idle = Vec::new();
        for first in ["", "GET /hea", "", ""] {
            idle.push(connect(server.0, first).await);
        }
        let answer = healthz(server.0).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"),
            "{answer}"
        );
        assert!(
            closed_within(&mut idle[0], Duration::from_secs(2)).await,
            "the oldest idle connection was closed"
        );
        for (i, s) in idle.iter_mut().enumerate().skip(1) {
            assert!(
                !closed_within(s, Duration::from_millis(200)).await,
                "connection {i} is still open"
            );
        }
        // The probe's place is free again once it is answered; with the cap filled anew, each
        // further probe takes the place of the next oldest.
        for round in 1..4 {
            idle.push(connect(server.0, "").await);
            assert!(healthz(server.0).await.ends_with("ok\n"));
            assert!(
                closed_within(&mut idle[round], Duration::from_secs(2)).await,
                "connection {round} was closed"
            );
        }
    }

    #[tokio::test]
    async fn stalled_connections_close_after_the_header_timeout_and_kept_alive_ones_after_as_long_idle(
    ) {
        let timeout = Duration::from_millis(500);
        let server = server(64, timeout).await;
        let opened = Instant::now();
        let mut stalled = vec![
            connect(server.0, "").await,
            connect(server.0, "GET /healthz HTTP/1.1\r\nHost").await,
        ];
        let mut kept = connect(server.0, "").await;
        ask(&mut kept).await;
        assert!(
            !closed_within(&mut kept, timeout / 2).await,
            "kept alive after an answer"
        );
        ask(&mut kept).await;
        let answered = Instant::now();
        for s in &mut stalled {
            assert!(
                closed_within(s, Duration::from_secs(2)).await,
                "a stalled connection is closed"
            );
            assert!(
                opened.elapsed() >= timeout,
                "not before the header timeout: {:?}",
                opened.elapsed()
            );
        }
        assert!(
            closed_within(&mut kept, Duration::from_secs(2)).await,
            "an idle kept-alive connection is closed"
        );
        assert!(
            answered.elapsed() >= timeout,
            "not before the header timeout: {:?}",
            answered.elapsed()
        );
    }

    #[tokio::test]
    async fn a_full_pool_of_busy_connections_refuses_and_an_idle_one_gives_way() {
        let mut pool = Pool::new(2);
        let tasks: Vec<_> = (0..2)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        let activity: Vec<_> = (0..2).map(|_| Arc::new(Activity::default())).collect();
        for (task, a) in tasks.iter().zip(&activity) {
            assert_eq!(pool.admit(), Admit::Free);
            pool.push(task.abort_handle(), a.clone());
        }
        let busy: Vec<_> = activity.iter().map(|a| a.begin()).collect();
        assert_eq!(pool.admit(), Admit::Full, "every connection is answering");
        drop(busy);
        let _answering = activity[1].begin(); // only the older one is idle now
        assert_eq!(pool.admit(), Admit::Shed);
        assert_eq!(pool.len(), 1);
        let oldest = tasks[0].abort_handle();
        let aborted = tokio::time::timeout(Duration::from_secs(1), async {
            while !oldest.is_finished() {
                tokio::task::yield_now().await;
            }
        });
        assert!(
            aborted.await.is_ok(),
            "the oldest idle connection's task was aborted"
        );
        assert!(!tasks[1].is_finished(), "the answering one was left alone");
    }
}
