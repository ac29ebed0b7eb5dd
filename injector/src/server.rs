//! The HTTPS webhook server: hyper over rustls, `POST /mutate`, graceful
//! shutdown that finishes the requests in flight.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use sidekey::config::InjectorConfig;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::review::{MAX_BODY, review};

/// What every request needs.
pub struct State {
    /// The injector config.
    pub config: InjectorConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// One permit per open webhook connection.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// One permit per KiB of request body buffered ([`BODY_BUDGET`]).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// One permit per large review running on the blocking pool: as many
    /// as there are worker threads, so large reviews use no more memory at
    /// once than when each ran on its worker.
    pub large_reviews: Arc<tokio::sync::Semaphore>,
}

/// Bodies up to this size (typical pods are 4 to 20 KB) are read without a
/// reservation: at most `--max-connections` of them are open at once, which
/// bounds them to 32 MiB at the default 1000, and a review is never kept
/// waiting behind large ones.
pub const SMALL_BODY: usize = 32 * 1024;

/// The most bytes of larger request bodies buffered at once, over all
/// connections: four bodies of the largest size. Such a request reserves its
/// declared `Content-Length` (the largest size when it declares none) before
/// its body is read and holds it until it is answered; past the budget,
/// reading waits (TCP back-pressure on the client) within the body deadline.
/// So a thousand clients sending 3 MiB bodies at once cost 12 MiB of
/// buffers, not 3 GiB.
pub const BODY_BUDGET: usize = 4 * MAX_BODY;

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Read,
}

/// Reads the body into one buffer sized from `Content-Length` (no chunk list
/// and no second copy).
async fn read_body(mut body: Incoming, declared: usize) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

fn error_response(status: u16, message: &str) -> Response<Full<Bytes>> {
    json_response(status, serde_json::to_vec(&serde_json::json!({"error": message})).unwrap_or_default())
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
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        state.metrics.error("body_too_large");
        return Ok(error_response(413, &format!("request body exceeds the {MAX_BODY}-byte limit")));
    }
    let declared = declared.unwrap_or(MAX_BODY);
    let permits = if declared <= SMALL_BODY { 0 } else { u32::try_from(declared.div_ceil(1024)).unwrap_or(u32::MAX) };
    // The body arrives within a deadline (headers have their own), waiting
    // for buffer budget included: a client that trickles a body must not
    // hold a connection and its buffer.
    let read = async {
        let permit = state.body_budget.clone().acquire_many_owned(permits).await.map_err(|_| BodyError::Read)?;
        read_body(req.into_body(), declared).await.map(|b| (b, permit))
    };
    let (body, _permit) = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(BodyError::TooLarge)) => {
            state.metrics.error("body_too_large");
            return Ok(error_response(413, &format!("request body exceeds the {MAX_BODY}-byte limit")));
        }
        Ok(Err(BodyError::Read)) => {
            state.metrics.error("read_body");
            return Ok(error_response(400, "could not read the request body"));
        }
        Err(_) => {
            state.metrics.error("body_timeout");
            return Ok(error_response(
                408,
                &format!("the request body did not arrive within {:?}", state.body_timeout),
            ));
        }
    };
    // A large review (templates, thousands of env vars) takes tens of
    // milliseconds of CPU: run it on the blocking pool so the small ones
    // this worker also serves are not queued behind it (one CPU, two such
    // reviews in a loop held typical ones for 200 ms). At most one runs
    // per worker thread (`large_reviews`), as when each ran on its worker.
    let reply = if body.len() <= SMALL_BODY {
        review(&body, &state.config)
    } else {
        let Ok(_running) = state.large_reviews.clone().acquire_owned().await else {
            // The semaphore is never closed; answered rather than assumed.
            return Ok(error_response(503, "the review could not start"));
        };
        let shared = state.clone();
        match tokio::task::spawn_blocking(move || review(&body, &shared.config)).await {
            Ok(reply) => reply,
            Err(_) => {
                state.metrics.error("review_failed");
                return Ok(error_response(500, "the review failed"));
            }
        }
    };
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

/// Serves the webhook on `addr`: one accept loop (on the calling runtime)
/// hands connections round-robin to `threads` (at least 1) single-threaded
/// runtimes, each on its own OS thread. A connection then lives on one
/// thread: no work stealing, no cross-thread wake-ups, and the connections
/// split evenly (a kernel `SO_REUSEPORT` split is uneven, which shows in
/// p99). When `shutdown` changes, accepting stops and each thread lets its
/// requests in flight finish (up to `grace`); the returned receiver resolves
/// when all are done.
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_sharded(
    addr: std::net::SocketAddr,
    threads: usize,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<(std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let listener = TcpListener::from_std(std_listener)?;
    let acceptor = TlsAcceptor::from(tls);
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, OwnedSemaphorePermit)>();
        let (acceptor, state) = (acceptor.clone(), state.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("webhook-{i}"))
                .spawn(move || rt.block_on(worker(rx, acceptor, state, grace)))?,
        );
        senders.push(tx);
    }
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            // Connections beyond the bound are closed at once: each open one
            // may hold a body buffer, so their number bounds memory.
            let Ok(permit) = state.connections.clone().try_acquire_owned() else {
                state.metrics.error("too_many_connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else { continue };
            let _ = senders[next % senders.len()].send((stream, permit));
            next = next.wrapping_add(1);
        }
        // Dropping the senders ends the workers' loops: they drain and stop.
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
        let _ = done_tx.send(());
    });
    Ok((bound, done_rx))
}

/// One thread's share: serves the connections it is handed until the
/// channel closes, then lets the requests in flight finish (up to `grace`).
async fn worker(
    mut streams: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, OwnedSemaphorePermit)>,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, permit)) = streams.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held until the connection ends.
            let _permit = permit;
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
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("a webhook thread finished its requests"),
        () = tokio::time::sleep(grace) => tracing::warn!(grace_s = grace.as_secs(), "requests still in flight at the end of the grace period"),
    }
}
