//! The HTTP endpoints of `sluice run`: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! They are how an orchestrator and Prometheus see the daemon, so they only read state that
//! others keep current ([`crate::health`], the metrics recorder) and never wait on PostgreSQL
//! or Redis: a probe answers at once even while both servers are gone, which is exactly when
//! it matters. A minimal hyper HTTP/1 server is enough for probes and scrapes on a local
//! address; it listens on `127.0.0.1:9750` unless configured otherwise, and `http.listen = ""`
//! turns it off.
//!
//! Idle connections never keep a probe waiting: the server always accepts, and at
//! [`MAX_CONNECTIONS`] it closes the oldest idle one to make room ([`pool`]); a client has
//! [`HEADER_TIMEOUT`] to send its request headers, and a kept-alive connection as long for its
//! next request, so a stalled connection is closed soon after anyway.
//!
//! * `/healthz`: 200 while the work loop turned recently (see [`stall_limit`]); 503 means the
//!   process is stuck and a restart would help.
//! * `/readyz`: 200 `ready`, or 503 with the one-line reason [`Health::readiness`] gives.
//!   `/readyz?standby=ok` also answers 200 for a standby that could take over (both servers
//!   reachable), and judges the active daemon exactly as `/readyz` does.
//! * `/status`: the [`Health::status`] document as JSON.
//! * `/metrics`: the Prometheus text format, with the process's own metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use pool::{Activity, Admit, Answer, InFlight, Pool};

use crate::config::Config;
use crate::exporter::process::Process;
use crate::health::Health;
use crate::telemetry as m;

/// Connections held open at once; at this many, a new one closes the oldest idle one.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time, counted from the connect, and on a
/// kept-alive connection from the end of the previous answer (hyper's `header_read_timeout`
/// is also the keep-alive idle timeout).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is asked to close after this long (after the answer in progress, if any).
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);
/// The answer to a connection refused because every slot is answering a request.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
    content-length: 36\r\nconnection: close\r\n\r\nbusy: too many requests in progress\n";

/// The bounds of the server's connections (tests use shorter ones).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    connection_limit: Duration,
}

const LIMITS: Limits = Limits {
    max_connections: MAX_CONNECTIONS,
    header_timeout: HEADER_TIMEOUT,
    connection_limit: CONNECTION_LIMIT,
};

/// `/readyz?standby=ok`: a standby that could take over answers 200 too (see
/// [`Health::readiness_as_standby`]); for Deployments that run a standby beside the active one.
pub const STANDBY_OK: &str = "standby=ok";

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
        task: tokio::spawn(accept(listener, endpoints, health, LIMITS)),
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

/// Accepts every connection as it arrives, making room at the cap (see [`pool`]).
async fn accept(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    health: Arc<Health>,
    limits: Limits,
) {
    let mut tasks = JoinSet::new();
    let mut pool = Pool::new(limits.max_connections);
    loop {
        while tasks.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match pool.admit() {
            Admit::Free => {}
            Admit::Shed => {
                tracing::debug!("HTTP connections at the cap: closed the oldest idle one")
            }
            Admit::Full => {
                tracing::debug!("HTTP connections at the cap, all answering: refused a new one");
                let _ = stream.try_write(BUSY);
                continue;
            }
        }
        let activity = Arc::new(Activity::default());
        let task = tasks.spawn(serve(
            stream,
            endpoints.clone(),
            health.clone(),
            activity.clone(),
            limits,
        ));
        pool.push(task, activity);
    }
}

/// One connection: requests answered until the client closes it, it sends no request
/// headers for `header_timeout`, or it has lived `connection_limit`.
async fn serve(
    stream: TcpStream,
    endpoints: Arc<Endpoints>,
    health: Arc<Health>,
    activity: Arc<Activity>,
    limits: Limits,
) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let in_flight = activity.begin();
        let target = request.uri().path_and_query().map_or("/", |t| t.as_str());
        let reply = endpoints.respond(request.method(), target, &health);
        async move { Ok::<_, Infallible>(reply.into_response(in_flight)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(limits.connection_limit) => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.header_timeout, connection).await {
                Ok(result) => result,
                Err(_) => return tracing::debug!("HTTP connection dropped after {:?}", limits.connection_limit),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection failed");
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

    /// The response; `in_flight` ends once hyper has taken the whole body.
    fn into_response(self, in_flight: InFlight) -> Response<Answer> {
        let allow_get = self.status == StatusCode::METHOD_NOT_ALLOWED;
        let mut response = Response::new(Answer::new(self.body, in_flight));
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
    /// The answer to `method target` (a path, maybe with a query).
    pub fn respond(&self, method: &Method, target: &str, health: &Health) -> Reply {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
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
            "/readyz" => {
                let answer = match query.split('&').any(|p| p == STANDBY_OK) {
                    true => health.readiness_as_standby(),
                    false => health.readiness().map(|()| "ready"),
                };
                match answer {
                    Ok(text) => Reply::text(StatusCode::OK, format!("{text}\n")),
                    Err(why) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }
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
        let mut text = self.metrics.render();
        if let Some(process) = Process::read() {
            text.push_str(&process.render());
        }
        Reply {
            status: StatusCode::OK,
            content_type: PROMETHEUS_TEXT,
            body: Bytes::from(text),
        }
    }
}

mod pool;
#[cfg(test)]
mod tests;
