//! The HTTPS webhook server: hyper over rustls, `POST /mutate`, graceful
//! shutdown that finishes the requests in flight.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use sidekey::config::InjectorConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::review::{MAX_BODY, review};

/// What every request needs.
pub struct State {
    /// The injector config.
    pub config: InjectorConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    resp
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    if req.method() != Method::POST || req.uri().path() != "/mutate" {
        state.metrics.error("not_found");
        return Ok(json_response(404, br#"{"error":"not found: POST /mutate"}"#.to_vec()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            state.metrics.error(if too_large { "body_too_large" } else { "read_body" });
            let msg = if too_large {
                format!("request body exceeds the {MAX_BODY}-byte limit")
            } else {
                "could not read the request body".to_owned()
            };
            return Ok(json_response(400, serde_json::to_vec(&serde_json::json!({"error": msg})).unwrap_or_default()));
        }
    };
    let reply = review(&body, &state.config);
    let elapsed = started.elapsed();
    state.metrics.review(reply.verdict, elapsed.as_secs_f64());
    tracing::info!(
        uid = %reply.uid,
        pod = %reply.pod,
        verdict = reply.verdict.as_str(),
        warnings = reply.warnings,
        reason = reply.reason.as_deref().unwrap_or(""),
        micros = elapsed.as_micros() as u64,
        "admission review"
    );
    Ok(json_response(reply.status, reply.body))
}

/// Serves the webhook until `shutdown` changes, then lets the requests in
/// flight finish (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = service_fn(move |req| handle(state.clone(), req));
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Some(Duration::from_secs(10)))
                .serve_connection(TokioIo::new(tls), svc);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_s = grace.as_secs(), "requests still in flight at the end of the grace period"),
    }
}
