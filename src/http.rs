//! The HTTP endpoints of `sluice run`: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! They are how an orchestrator and Prometheus see the daemon, so they only read state that
//! others keep current ([`crate::health`], the metrics recorder) and never wait on PostgreSQL
//! or Redis: a probe answers at once even while both servers are gone, which is exactly when
//! it matters. A minimal hyper HTTP/1 server (no keep-alive, a bounded number of connections,
//! a header timeout) is enough for probes and scrapes on a local address; it listens on
//! `127.0.0.1:9750` unless configured otherwise, and `http.listen = ""` turns it off.
//!
//! * `/healthz`: 200 while the work loop turned recently (see [`stall_limit`]); 503 means the
//!   process is stuck and a restart would help.
//! * `/readyz`: 200 `ready`, or 503 with the one-line reason [`Health::readiness`] gives.
//! * `/status`: the [`Health::status`] document as JSON.
//! * `/metrics`: the Prometheus text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::health::Health;
use crate::telemetry as m;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, whatever the client does.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on http.listen = {listen:?}: {source}; free that port, choose another address, or set http.listen = \"\" to serve no HTTP")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
}

/// The running server; dropping it stops it.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `http.listen` and serves until the returned [`Server`] is dropped; `None` when
/// `http.listen` is empty.
pub async fn start(
    config: &Config,
    metrics: PrometheusHandle,
    health: Arc<Health>,
) -> Result<Option<Server>, HttpError> {
    let listen = config.http.listen.trim();
    if listen.is_empty() {
        tracing::info!("http.listen is empty: serving no HTTP endpoints");
        return Ok(None);
    }
    let bind_error = |source| HttpError::Bind {
        listen: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz and /status");
    let endpoints = Arc::new(Endpoints {
        mode: config.source.mode.as_str(),
        metrics,
        stall_limit: stall_limit(config),
    });
    Ok(Some(Server {
        addr,
        task: tokio::spawn(accept(listener, endpoints, health)),
    }))
}

/// How long the work loop may go without turning before `/healthz` fails. The loop turns at
/// least every heartbeat or poll interval while it streams, but one turn may also hold a
/// reconnect backoff plus a connect or command timeout, so those are added: a healthy daemon
/// riding out an outage stays alive, a stuck one is noticed.
pub fn stall_limit(config: &Config) -> Duration {
    let s = &config.source;
    let period = (s
        .heartbeat_interval
        .max(s.poll_interval)
        .max(s.status_interval)
        * 3)
    .max(Duration::from_secs(30));
    period
        + config.delivery.max_backoff
        + config
            .postgres
            .connect_timeout
            .max(config.redis.command_timeout)
}

async fn accept(listener: TcpListener, endpoints: Arc<Endpoints>, health: Arc<Health>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
        }
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve(stream, endpoints.clone(), health.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, endpoints: Arc<Endpoints>, health: Arc<Health>) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let reply = endpoints.respond(request.method(), request.uri().path(), &health);
        async move { Ok::<_, Infallible>(reply.into_response()) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIMIT, connection).await {
        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP connection failed"),
        Err(_) => tracing::debug!("HTTP connection closed after {CONNECTION_LIMIT:?}"),
        Ok(Ok(())) => {}
    }
}

/// What the endpoints need besides the process's [`Health`].
pub struct Endpoints {
    pub mode: &'static str,
    pub metrics: PrometheusHandle,
    pub stall_limit: Duration,
}

/// One answer, before it becomes a hyper response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: Bytes::from(body.into()),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let allow_get = self.status == StatusCode::METHOD_NOT_ALLOWED;
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if allow_get {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
        }
        response
    }
}

impl Endpoints {
    /// The answer to `method path`.
    pub fn respond(&self, method: &Method, path: &str, health: &Health) -> Reply {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/status") {
            return Reply::text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /status\n",
            );
        }
        if method != Method::GET {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed\n");
        }
        match path {
            "/healthz" => self.healthz(health),
            "/readyz" => match health.readiness() {
                Ok(()) => Reply::text(StatusCode::OK, "ready\n"),
                Err(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/status" => {
                let body =
                    serde_json::to_vec(&health.status(self.mode)).expect("the status serialises");
                Reply {
                    status: StatusCode::OK,
                    content_type: "application/json",
                    body: Bytes::from(body),
                }
            }
            _ => self.metrics(health),
        }
    }

    fn healthz(&self, health: &Health) -> Reply {
        let since = health.since_turn();
        if since <= self.stall_limit {
            return Reply::text(StatusCode::OK, "ok\n");
        }
        let why = format!(
            "stuck: the work loop has not turned for {}s (limit {}s)\n",
            since.as_secs(),
            self.stall_limit.as_secs()
        );
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, why)
    }

    fn metrics(&self, health: &Health) -> Reply {
        metrics::gauge!(m::READY).set(f64::from(u8::from(health.readiness().is_ok())));
        self.metrics.run_upkeep();
        Reply {
            status: StatusCode::OK,
            content_type: PROMETHEUS_TEXT,
            body: Bytes::from(self.metrics.render()),
        }
    }
}

#[cfg(test)]
mod tests;
