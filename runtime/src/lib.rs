//! What sidekey's binaries share at run time: a plain-HTTP admin endpoint
//! (`/metrics`, `/healthz`, `/readyz`), logging set up from the environment,
//! and the shutdown signal (SIGTERM or SIGINT).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// What the admin endpoint asks its owner.
pub trait Admin: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Whether `/readyz` answers 200.
    fn ready(&self) -> bool;
}

fn respond(admin: &dyn Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, admin.metrics(), "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        "/readyz" if admin.ready() => (StatusCode::OK, "ready\n".to_owned(), "text/plain"),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned(), "text/plain"),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned(), "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// The most admin connections open at once; more are closed at accept.
pub const ADMIN_CONNECTIONS: usize = 16;
/// How long a client may take to send a request's headers.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one admin connection may live, whatever it does: a scrape is
/// one request, so a connection is closed after its answer too.
pub const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// The most header bytes an admin request may have.
const ADMIN_MAX_HEADERS: usize = 16 * 1024;

/// Serves the admin endpoint on `listener` until `shutdown` changes.
///
/// Whoever reaches the port is a stranger (a pod IP is reachable from the
/// whole cluster unless a NetworkPolicy says otherwise), so what a
/// connection may hold is bounded: at most [`ADMIN_CONNECTIONS`] at once,
/// headers within [`ADMIN_HEADER_TIMEOUT`] and 16 KiB, the whole
/// connection within [`ADMIN_CONNECTION_TIMEOUT`], one request each, and
/// no request body is ever read. (2,000 incomplete requests once took an
/// agent from 7 to 34 MiB, past its limit.)
pub async fn serve_admin(listener: TcpListener, admin: Arc<dyn Admin>, mut shutdown: watch::Receiver<bool>) {
    let open = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = respond(admin.as_ref(), &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Some(ADMIN_HEADER_TIMEOUT))
                .max_buf_size(ADMIN_MAX_HEADERS)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

/// Sets up logging to stderr: `SIDEKEY_LOG` (`error`…`trace`, default
/// `info`) and `SIDEKEY_LOG_FORMAT` (`text` or `json`).
pub fn init_logging() {
    let json = std::env::var("SIDEKEY_LOG_FORMAT").is_ok_and(|f| f == "json");
    let level = match std::env::var("SIDEKEY_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
