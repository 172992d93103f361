//! The deployment files under deploy/ cannot run here (no systemd, Docker daemon, cluster or
//! Prometheus in the tests), so this keeps them true to the code instead: each one parses, every
//! metric the alerts and the dashboard query is one `src/telemetry.rs` defines, the probes hit
//! `/healthz` and `/readyz` on the port the config listens on (a standby's readiness probe is
//! one the daemon answers 200 on a standby), and the stop timeouts leave room for
//! `delivery.shutdown_timeout`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

mod kubernetes;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `"sluice_..."` string constants of src/telemetry.rs, by constant name.
fn telemetry_constants() -> HashMap<String, String> {
    let text = read("src/telemetry.rs");
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub const ")?
                .split_once(": &str = \"sluice_")
        })
        .map(|(name, rest)| {
            (
                name.to_string(),
                format!("sluice_{}", rest.trim_end_matches("\";")),
            )
        })
        .collect()
}

/// The names a query may use: every constant, and for histograms (constants passed to a
/// `histogram!` anywhere in src/) their `_bucket`, `_sum` and `_count` series.
fn known_metrics() -> BTreeSet<String> {
    let constants = telemetry_constants();
    let mut known: BTreeSet<String> = constants.values().cloned().collect();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for call in text.split("histogram!(").skip(1) {
            let argument = call.split([',', ')']).next().unwrap_or_default().trim();
            if let Some(name) = constants.get(argument.rsplit("::").next().unwrap_or_default()) {
                known.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
        }
    }
    known
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `sluice_...` identifier in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let starts = expr.match_indices("sluice_").map(|(i, _)| i);
    let words =
        starts.filter(|&i| !expr[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'));
    words
        .map(|i| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn assert_known(file: &str, exprs: &[String]) {
    let known = known_metrics();
    assert!(
        known.contains("sluice_end_to_end_latency_seconds_bucket"),
        "histograms found: {known:?}"
    );
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metrics_in(e)).collect();
    let unknown: Vec<&String> = used.iter().filter(|m| !known.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses metrics src/telemetry.rs does not define: {unknown:?}"
    );
    assert!(used.len() >= 5, "{file} queries too little: {used:?}");
}

/// The default `delivery.shutdown_timeout`, as the documented example config has it.
fn shutdown_timeout() -> Duration {
    let path = Path::new("config.example.toml");
    Config::parse(&read("config.example.toml"), path)
        .unwrap()
        .delivery
        .shutdown_timeout
}

#[test]
fn alert_rules_parse_and_query_real_metrics() {
    let doc = &yaml("deploy/prometheus/alerts.yml")[0];
    let rules: Vec<&Yaml> = doc["groups"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_vec().unwrap())
        .collect();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "SluiceNotReady",
        "SluiceLagGrowing",
        "SluiceDeadLettersRising",
        "SluiceRetainedWalHigh",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for rule in &rules {
        assert!(
            rule["labels"]["severity"].as_str().is_some()
                && rule["annotations"]["summary"].as_str().is_some(),
            "{rule:?}"
        );
    }
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    assert_known("alerts.yml", &exprs);
}

#[test]
fn the_dashboard_parses_and_queries_real_metrics() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/sluice-dashboard.json")).unwrap();
    assert!(
        dash["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    let panels = dash["panels"].as_array().unwrap();
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.99")
        && e.contains("sluice_end_to_end_latency_seconds_bucket")));
    exprs.extend(
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["definition"].as_str().map(String::from)),
    );
    assert_known("sluice-dashboard.json", &exprs);
}

/// `Key=value` lines of the unit; a key given twice keeps both values.
fn unit_settings(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
    {
        if let Some((key, value)) = line.split_once('=') {
            out.entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    out
}

#[test]
fn the_systemd_unit_runs_the_daemon_and_restarts_only_what_a_restart_fixes() {
    let unit = unit_settings(&read("deploy/systemd/sluice.service"));
    let one = |key: &str| {
        unit.get(key)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("no {key}="))
            .as_str()
    };
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert!(
        exec[0].ends_with("/sluice") && exec.last() == Some(&"run"),
        "{exec:?}"
    );
    assert_eq!(
        (one("Restart"), one("KillSignal")),
        ("on-failure", "SIGTERM")
    );
    let no_restart: BTreeSet<&str> = one("RestartPreventExitStatus").split_whitespace().collect();
    assert!(
        no_restart.contains("2") && no_restart.contains("3"),
        "config error and lost slot need a human"
    );
    let stop = humantime::parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(
        stop > shutdown_timeout(),
        "TimeoutStopSec {stop:?} leaves the daemon its shutdown_timeout"
    );
    assert_eq!(
        (one("NoNewPrivileges"), one("ProtectSystem")),
        ("yes", "strict")
    );
    assert!(
        one("DynamicUser") == "yes" || unit.contains_key("User"),
        "not as root"
    );
    assert!(
        one("EnvironmentFile").contains("/etc/sluice/"),
        "secrets from an environment file"
    );
}

#[test]
fn the_docker_image_runs_sluice_as_non_root() {
    let text = read("deploy/docker/Dockerfile");
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert!(
        stages.len() >= 2 && stages[0].lines().next().unwrap().contains(" AS "),
        "multi-stage"
    );
    let last = stages.last().unwrap();
    let instruction = |name: &str| {
        last.lines()
            .filter_map(|l| l.strip_prefix(name))
            .next_back()
            .map(str::trim)
    };
    let user = instruction("USER ").expect("the final stage sets USER");
    assert!(
        !["root", "0"].contains(&user.split(':').next().unwrap()),
        "USER {user}"
    );
    let entrypoint: Vec<String> =
        serde_json::from_str(instruction("ENTRYPOINT ").unwrap()).unwrap();
    assert!(
        entrypoint[0].rsplit('/').next() == Some("sluice"),
        "{entrypoint:?}"
    );
    let cmd: Vec<String> = serde_json::from_str(instruction("CMD ").unwrap()).unwrap();
    assert_eq!(cmd, ["run"]);
    assert_eq!(instruction("EXPOSE "), Some("9750"));
    assert!(
        read(".dockerignore")
            .lines()
            .any(|l| l.trim_end_matches('/') == "target"),
        ".dockerignore keeps target/ out"
    );
}

#[test]
fn the_deploy_readme_names_every_file() {
    let readme = read("deploy/README.md");
    for file in [
        "systemd/sluice.service",
        "docker/Dockerfile",
        "kubernetes/sidecar.yaml",
        "kubernetes/standalone.yaml",
        "kubernetes/podmonitor.yaml",
        "kubernetes/setup-job.yaml",
        "prometheus/alerts.yml",
        "grafana/sluice-dashboard.json",
    ] {
        assert!(
            readme.contains(file),
            "deploy/README.md does not mention {file}"
        );
    }
}
