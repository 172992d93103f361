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
