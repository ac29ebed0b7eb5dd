//! `sidekey-agent`: logs in to Vault/OpenBao (and, with its feature, AWS
//! Secrets Manager) with the pod's identity, writes each secret as a file
//! into the in-memory volume with kubelet's atomic-writer layout, renews
//! leases, replaces credentials before they expire, picks up new versions of
//! static secrets, and tells the app.
//!
//! `main.rs` is thin: it parses the command line and calls [`run`], so tests
//! drive the agent in-process as well as through the binary.
//! Configuration: [`sidekey::agent_config`].

pub mod backend;
pub mod cli;
pub mod engine;
pub mod exec;
pub mod metrics;
pub mod notify;
pub mod render;
pub mod rotation;
pub mod schedule;
pub mod secret;
pub mod state;
pub mod throttle;
pub mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use sidekey::agent_config::{AgentConfig, ValidConfig};
use sidekey::reference::Backend as BackendKind;
use tokio::sync::{mpsc, watch};

use crate::backend::Backend;
use crate::engine::{HeldLeases, Plan, Renderer, SourceTask, StartupError};
use crate::metrics::Metrics;
use crate::writer::AtomicWriter;

/// How the agent runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Render once and exit (init containers).
    pub once: bool,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid (exit code 64).
    #[error("config: {0}")]
    Invalid(#[from] sidekey::agent_config::AgentConfigError),
    /// The configuration cannot work with this agent (exit code 64).
    #[error("config: {0}")]
    Config(String),
    /// The metrics address is not `host:port` (exit code 64).
    #[error("config: metricsAddr {addr:?} is not host:port")]
    MetricsAddr {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The metrics address cannot be listened on (exit code 64).
    #[error("config: metricsAddr {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files could not be written at start.
    #[error(transparent)]
    Startup(#[from] StartupError),
}

impl AgentError {
    /// Whether the configuration is at fault (exit code 64) rather than the
    /// backends or the files.
    pub fn is_config(&self) -> bool {
        !matches!(self, AgentError::Startup(_))
    }
}

/// What a running agent exposes to its caller (tests, `main`).
pub struct Handle {
    /// Metrics and readiness.
    pub metrics: Arc<Metrics>,
    /// Becomes true after the first complete write.
    pub ready: watch::Receiver<bool>,
}

/// Makes the process non-dumpable, so that a same-UID process in a shared
/// process namespace cannot read its memory, environment, files or token
/// through `/proc/<pid>/` (nor pin `/proc/<pid>/root`). Called first thing
/// in `main`, for every command, before anything is read or logged.
///
/// # Errors
/// The `prctl` error, for the caller to report once logging is up.
pub fn harden_process() -> Result<(), String> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).map_err(|e| e.to_string())
}

/// Backends created so far (one per kind), and the state they keep.
#[derive(Default)]
struct Backends {
    vault: Option<Backend>,
    aws: Option<Backend>,
    state: Option<Arc<state::StateStore>>,
}

fn backend_for(
    kind: BackendKind,
    config: &AgentConfig,
    metrics: &Arc<Metrics>,
    made: &mut Backends,
) -> Result<Backend, AgentError> {
    let vault = &mut made.vault;
    match kind {
        BackendKind::File => Ok(Backend::File(backend::file::FileBackend)),
        BackendKind::Vault => {
            #[cfg(feature = "vault")]
            {
                if let Some(b) = vault {
                    return Ok(b.clone());
                }
                let Some(vc) = &config.vault else {
                    return Err(AgentError::Config(
                        "files use vault: references but there are no vault settings".into(),
                    ));
                };
                let v =
                    backend::vault::Vault::new(vc, metrics.clone(), made.state.clone()).map_err(AgentError::Config)?;
                let b = Backend::Vault(Arc::new(v));
                *vault = Some(b.clone());
                Ok(b)
            }
            #[cfg(not(feature = "vault"))]
            {
                let _ = (config, metrics, vault);
                Err(AgentError::Config("this agent was built without the vault feature".into()))
            }
        }
        BackendKind::Aws => {
            #[cfg(feature = "aws")]
            {
                if let Some(b) = &made.aws {
                    return Ok(b.clone());
                }
                let b = Backend::Aws(Arc::new(backend::aws::Aws::new(
                    &config.aws.clone().unwrap_or_default(),
                    metrics.clone(),
                    config.refresh,
                )));
                made.aws = Some(b.clone());
                Ok(b)
            }
            #[cfg(not(feature = "aws"))]
            {
                let _ = &made.aws;
                Err(AgentError::Config("this agent was built without the aws feature".into()))
            }
        }
    }
}

/// Runs the agent until `shutdown` resolves (or, with `once`, until the
/// first complete write). `started` receives the handle as soon as the
/// agent is set up.
///
/// # Errors
/// [`AgentError`]: bad configuration, or (with `once`, or when the backend
/// refuses permanently) files that could not be written.
pub async fn run(
    config: ValidConfig,
    options: Options,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(Handle),
) -> Result<(), AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(false);

    if let Some(addr) = &config.metrics_addr {
        let addr: SocketAddr = addr.parse().map_err(|source| AgentError::MetricsAddr { addr: addr.clone(), source })?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::MetricsListen { addr, source })?;
        tokio::spawn(sidekey_runtime::serve_admin(listener, metrics.clone(), stop_rx.clone()));
    }

    let plan = Plan::new(&config);
    let (tx, rx) = mpsc::channel(64);
    let leases: HeldLeases = HeldLeases::default();
    let mut made = Backends::default();
    if let (Some(dir), Some(vault)) = (&config.state_dir, &config.vault) {
        made.state = Some(Arc::new(state::StateStore::open(std::path::Path::new(dir), &vault.addr)));
    }
    let mut tasks = Vec::new();
    let refresh = crate::schedule::Refresh::for_agent(config.refresh, tokio::time::Instant::now());
    for (index, source) in plan.sources.iter().enumerate() {
        let backend = backend_for(source.reference.backend(), &config, &metrics, &mut made)?;
        #[cfg(feature = "vault")]
        let logins = match &backend {
            Backend::Vault(v) => Some(v.subscribe()),
            _ => None,
        };
        #[cfg(not(feature = "vault"))]
        let logins = None;
        let task = SourceTask {
            index,
            source: source.clone(),
            backend,
            refresh,
            tx: tx.clone(),
            logins,
            metrics: metrics.clone(),
            once: options.once,
            shutdown: stop_rx.clone(),
            leases: leases.clone(),
            state: made.state.clone(),
        };
        let span = tracing::info_span!("source", source = %source.name);
        tasks.push((task, span));
    }
    drop(tx);
    let vault = made.vault;
    #[cfg(feature = "vault")]
    if let (Some(Backend::Vault(v)), false) = (&vault, options.once) {
        let v = v.clone();
        let stop = stop_rx.clone();
        tokio::spawn(tracing::Instrument::instrument(v.maintain(stop), tracing::info_span!("vault-token")));
    }
    // Before any task adopts a lease that came with it.
    #[cfg(feature = "vault")]
    if let Some(Backend::Vault(v)) = &vault {
        v.check_adopted().await;
    }
    for (task, span) in tasks {
        tokio::spawn(tracing::Instrument::instrument(task.run(), span));
    }
    started(Handle { metrics: metrics.clone(), ready: ready_rx });

    let renderer = Renderer {
        writer: AtomicWriter::new(&config.mount_path),
        plan,
        metrics,
        once: options.once,
        config: AgentConfig::clone(&config),
    };
    let result = tokio::select! {
        r = renderer.run(rx, ready_tx, stop_rx.clone()) => r,
        () = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    if config.vault.as_ref().is_some_and(|v| v.revoke_on_shutdown) && !options.once {
        revoke_all(&leases, vault.as_ref()).await;
        // Revoked: nothing is left for a restart to adopt.
        if let Some(state) = &made.state {
            state.clear();
        }
    }
    result.map_err(AgentError::from)
}

async fn revoke_all(leases: &HeldLeases, vault: Option<&Backend>) {
    let held: Vec<(Backend, backend::Lease)> = leases.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
    let revoke = async {
        for (backend, lease) in held {
            backend.revoke(&lease).await;
        }
        #[cfg(feature = "vault")]
        if let Some(Backend::Vault(v)) = vault {
            v.revoke_token().await;
        }
        #[cfg(not(feature = "vault"))]
        let _ = vault;
    };
    // Shutdown must stay prompt even when Vault is unreachable.
    if tokio::time::timeout(std::time::Duration::from_secs(5), revoke).await.is_err() {
        tracing::warn!("revocation at shutdown timed out");
    }
}
