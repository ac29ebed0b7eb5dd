//! `sidekey-injector`: the HTTPS mutating admission webhook that runs the
//! core mutation ([`sidekey::mutate`]) for every pod creation.
//!
//! No outbound call happens on the admission path; the Kubernetes API is
//! used only in the background, by the self-managed TLS mode and by the
//! check of the webhook configuration ([`health`]). `main.rs` is thin: it
//! parses [`Settings`] and calls [`run`].

pub mod cli;
pub mod health;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sidekey::config::InjectorConfig;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files, reloaded when they change (cert-manager, a mounted Secret).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A CA and certificate the injector creates and rotates itself.
    SelfManaged(tls::managed::Managed),
}

/// Everything the injector needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The webhook's HTTPS address.
    pub listen: SocketAddr,
    /// The plain-HTTP admin address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The injector config.
    pub config: InjectorConfig,
    /// The serving certificate.
    pub tls: TlsSource,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// The most webhook connections open at once.
    pub max_connections: usize,
    /// Check the webhook configuration ([`health`]); `None`: no check.
    pub check_webhook: Option<WebhookCheck>,
}

/// The periodic check of the injector's own webhook configuration.
#[derive(Debug, Clone)]
pub struct WebhookCheck {
    /// The MutatingWebhookConfiguration's name.
    pub name: String,
    /// How often it is checked while healthy.
    pub every: Duration,
}

/// Why the injector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address is taken or invalid.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be loaded or created.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

struct AdminState {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl sidekey_runtime::Admin for AdminState {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Runs the webhook until `shutdown` resolves, then drains.
///
/// # Errors
/// [`StartError`] when it cannot listen or get a certificate.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = Arc::new(AdminState { metrics: metrics.clone(), ready: AtomicBool::new(false) });
    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .map_err(|source| StartError::Listen { addr: settings.admin_listen, source })?;
    tokio::spawn(sidekey_runtime::serve_admin(admin_listener, admin.clone(), stop_rx.clone()));

    let connect =
        || async { kube::Client::try_default().await.map_err(tls::TlsError::kube("connecting to the API server")) };
    let mut client = None;
    let store = match &settings.tls {
        TlsSource::Files { cert, key } => {
            let store = tls::CertStore::new(tls::load_files(cert, key)?);
            tokio::spawn(tls::watch_files(store.clone(), cert.clone(), key.clone(), stop_rx.clone(), metrics.clone()));
            store
        }
        TlsSource::SelfManaged(m) => {
            let c = connect().await?;
            let store = tls::managed::start(&c, m).await?;
            tokio::spawn(tls::managed::maintain(c.clone(), m.clone(), store.clone(), stop_rx.clone()));
            client = Some(c);
            store
        }
    };
    store.track_expiry(metrics.certificate_expiry());
    if let Some(check) = settings.check_webhook {
        let client = match client {
            Some(c) => c,
            None => connect().await?,
        };
        let watch = health::watch(client, check.name, store.clone(), metrics.clone(), check.every, stop_rx.clone());
        tokio::spawn(watch);
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let state = Arc::new(server::State {
        config: settings.config,
        metrics,
        body_timeout: settings.body_timeout,
        connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
        body_budget: Arc::new(tokio::sync::Semaphore::new(server::BODY_BUDGET / 1024)),
        large_reviews: Arc::new(tokio::sync::Semaphore::new(threads)),
    });
    let (_, server) = server::serve_sharded(
        settings.listen,
        threads,
        store.server_config(),
        state,
        stop_rx.clone(),
        settings.shutdown_grace,
    )
    .map_err(|source| StartError::Listen { addr: settings.listen, source })?;
    admin.ready.store(true, Ordering::SeqCst);
    tracing::info!(listen = %settings.listen, admin = %settings.admin_listen, "sidekey-injector serving");
    shutdown.await;
    tracing::info!("shutting down: finishing the requests in flight");
    admin.ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}
