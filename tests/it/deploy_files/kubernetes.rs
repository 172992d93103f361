//! The Kubernetes examples: the standalone Deployment (an active and a ready standby), its
//! PodMonitor and setup Job, and the sidecar. Each one's config validates, its probes hit the
//! port the config listens on, and the standalone readiness probe is one the daemon answers
//! 200 on a standby.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use sluice::config::{Config, Env};
use sluice::health::{Health, Phase};
use sluice::http::Endpoints;
use yaml_rust2::Yaml;

use super::{read, yaml};

/// The documents of a Kubernetes example under deploy/kubernetes/, by kind.
fn kubernetes(file: &str) -> HashMap<String, Yaml> {
    yaml(&format!("deploy/kubernetes/{file}"))
        .into_iter()
        .map(|d| (d["kind"].as_str().unwrap().to_string(), d))
        .collect()
}

/// The ConfigMap's sluice.toml with the Secret's URLs, validated; and the port it listens on
/// (every interface, as a pod must).
fn pod_config(docs: &HashMap<String, Yaml>) -> (Config, i64) {
    let toml_text = docs["ConfigMap"]["data"]["sluice.toml"].as_str().unwrap();
    let path = Path::new("sluice.toml");
    let secret = docs["Secret"]["stringData"].as_hash().unwrap();
    let env = Env::from_pairs(
        secret
            .iter()
            .map(|(k, v)| (k.as_str().unwrap(), v.as_str().unwrap())),
    );
    let config = Config::from_sources(toml_text, path, &env)
        .unwrap_or_else(|e| panic!("the ConfigMap's sluice.toml: {e}"));
    config.validate(path).unwrap();
    let port: i64 = config
        .http
        .listen
        .strip_prefix("0.0.0.0:")
        .expect("a pod listens on every interface")
        .parse()
        .unwrap();
    (config, port)
}

/// The container named `name` of a pod spec.
fn container<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    pod["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("a container named {name}"))
}

/// A probe's or monitor's port (a number, or the name of one of `container`'s ports).
fn port_number(container: &Yaml, port: &Yaml) -> i64 {
    match port {
        Yaml::Integer(n) => *n,
        other => container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|q| q["name"] == *other)
            .unwrap_or_else(|| panic!("no port named {other:?}"))["containerPort"]
            .as_i64()
            .unwrap(),
    }
}

/// The sluice container: probes on `port` (liveness /healthz, readiness `readiness`), a grace
/// period above the shutdown timeout, the URLs from the Secret, memory bounds.
fn assert_sluice_container(pod: &Yaml, config: &Config, port: i64, readiness: &str) {
    let sluice = container(pod, "sluice");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", readiness)] {
        let get = &sluice[probe]["httpGet"];
        assert_eq!(
            (get["path"].as_str(), port_number(sluice, &get["port"])),
            (Some(path), port),
            "{probe}"
        );
    }
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        Duration::from_secs(grace as u64) > config.delivery.shutdown_timeout,
        "grace {grace}s"
    );
    assert_eq!(secret_env(sluice), ["DATABASE_URL", "REDIS_URL"]);
    assert!(
        sluice["resources"]["requests"]["memory"].as_str().is_some()
            && sluice["resources"]["limits"]["memory"].as_str().is_some()
    );
}

/// The environment variables a container takes from a Secret.
fn secret_env(container: &Yaml) -> Vec<&str> {
    container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|e| !e["valueFrom"]["secretKeyRef"].is_badvalue())
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

/// What the daemon answers to `GET target` in `phase` with both servers reachable.
fn answer(target: &str, phase: Phase) -> u16 {
    let endpoints = Endpoints {
        mode: "logical",
        metrics: PrometheusBuilder::new().build_recorder().handle(),
        stall_limit: Duration::from_secs(30),
    };
    let health = Health::new();
    health.set_phase(phase);
    health.set_up("postgres", true);
    health.set_up("redis", true);
    endpoints
        .respond(&hyper::Method::GET, target, &health)
        .status
        .as_u16()
}

#[test]
fn the_kubernetes_sidecar_probes_the_port_its_config_listens_on() {
    let docs = kubernetes("sidecar.yaml");
    let (config, port) = pod_config(&docs);
    let pod = &docs["Deployment"]["spec"]["template"];
    assert!(
        pod["spec"]["containers"].as_vec().unwrap().len() >= 2,
        "the app and its sidecar"
    );
    assert_sluice_container(pod, &config, port, "/readyz");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    let header = read("deploy/kubernetes/sidecar.yaml");
    assert!(
        header.contains("standalone.yaml") && header.contains("unready"),
        "the sidecar's header spells out its readiness consequences"
    );
}

/// Two replicas, one active and one standby, both ready: the readiness probe is one the
/// daemon answers 200 on a standby (and on the active daemon), unlike plain /readyz.
#[test]
fn the_standalone_deployment_runs_an_active_and_a_ready_standby() {
    let docs = kubernetes("standalone.yaml");
    let (config, port) = pod_config(&docs);
    let deployment = &docs["Deployment"]["spec"];
    assert_eq!(deployment["replicas"].as_i64(), Some(2));
    let strategy = &deployment["strategy"];
    assert_eq!(strategy["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        strategy["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(0)
    );
    let pod = &deployment["template"];
    let readiness = container(pod, "sluice")["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(readiness, format!("/readyz?{}", sluice::http::STANDBY_OK));
    assert_sluice_container(pod, &config, port, readiness);
    assert_eq!(answer(readiness, Phase::Standby), 200, "a standby is ready");
    assert_eq!(answer(readiness, Phase::Streaming), 200);
    assert_eq!(answer(readiness, Phase::Starting), 503);
    assert_eq!(
        answer("/readyz", Phase::Standby),
        503,
        "plain /readyz is not"
    );

    let labels = &pod["metadata"]["labels"];
    assert_eq!(deployment["selector"]["matchLabels"], *labels);
    assert_eq!(
        docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *labels
    );
}

#[test]
fn the_pod_monitor_scrapes_the_standalone_pods() {
    let monitor = &kubernetes("podmonitor.yaml")["PodMonitor"]["spec"];
    let docs = kubernetes("standalone.yaml");
    let (_, port) = pod_config(&docs);
    let pod = &docs["Deployment"]["spec"]["template"];
    let selector = &monitor["selector"]["matchLabels"];
    let labels = pod["metadata"]["labels"].as_hash().unwrap();
    for (k, v) in selector.as_hash().unwrap() {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the monitor selects the pods: {k:?}"
        );
    }
    let endpoints = monitor["podMetricsEndpoints"].as_vec().unwrap();
    let sluice = container(pod, "sluice");
    for e in endpoints {
        assert_eq!(e["path"].as_str(), Some("/metrics"));
        assert_eq!(port_number(sluice, &e["port"]), port);
    }
}

/// setup, then check, with the standalone Deployment's config and credentials.
#[test]
fn the_setup_job_runs_setup_then_check_with_the_deployments_config() {
    let job = &kubernetes("setup-job.yaml")["Job"]["spec"]["template"]["spec"];
    let docs = kubernetes("standalone.yaml");
    let daemon = container(&docs["Deployment"]["spec"]["template"], "sluice");
    assert_eq!(job["restartPolicy"].as_str(), Some("Never"));
    let init = &job["initContainers"].as_vec().unwrap()[0];
    let check = &job["containers"].as_vec().unwrap()[0];
    let args = |c: &Yaml| -> Vec<String> {
        let args = c["args"].as_vec().unwrap();
        args.iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        (args(init), args(check)),
        (vec!["setup".into()], vec!["check".into()])
    );
    let config_map = docs["ConfigMap"]["metadata"]["name"].as_str();
    assert_eq!(job["volumes"][0]["configMap"]["name"].as_str(), config_map);
    for c in [init, check] {
        assert_eq!(c["image"], daemon["image"], "the same image as the daemon");
        assert_eq!(c["env"], daemon["env"], "the same config path and Secret");
        assert_eq!(c["volumeMounts"], daemon["volumeMounts"]);
    }
}
