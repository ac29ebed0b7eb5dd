//! The `sidekey-injector` command line: settings from flags and env,
//! logging, the runtime, and [`crate::run`]. `main.rs` only calls [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::tls::managed::Managed;
use crate::{Settings, TlsSource};
use clap::Parser;
use sidekey::config::InjectorConfig;

/// sidekey's mutating admission webhook: injects the sidekey agent into pods
/// that opt in with the annotation sidekey.dev/inject: "true".
#[derive(Parser)]
#[command(name = "sidekey-injector", version)]
struct Cli {
    /// HTTPS address of the webhook.
    #[arg(long, env = "SIDEKEY_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SIDEKEY_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Injector config (YAML, see docs/configuration.md); built-in defaults without it.
    #[arg(long, env = "SIDEKEY_INJECTOR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serving certificate chain (PEM), reloaded when it changes.
    #[arg(
        long,
        env = "SIDEKEY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_managed"
    )]
    tls_cert: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, env = "SIDEKEY_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Create and rotate a CA and serving certificate in a Secret, and keep
    /// the MutatingWebhookConfiguration's caBundle current.
    #[arg(long, env = "SIDEKEY_TLS_SELF_MANAGED")]
    tls_self_managed: bool,
    /// Self-managed mode: the Secret holding the CA and certificate.
    #[arg(long, env = "SIDEKEY_TLS_SECRET", default_value = "sidekey-injector-tls")]
    tls_secret: String,
    /// Self-managed mode: the namespace of that Secret (the injector's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "sidekey")]
    namespace: String,
    /// The injector's MutatingWebhookConfiguration: the self-managed mode
    /// keeps its caBundle current, --check-webhook checks it.
    #[arg(long, env = "SIDEKEY_WEBHOOK_CONFIG", default_value = "sidekey-injector")]
    webhook_config: String,
    /// Check the webhook configuration in the background, as the API server
    /// uses it (it exists, its caBundle trusts the served certificate, its
    /// Service completes a TLS handshake), and export the result as
    /// sidekey_injector_webhook_configuration_healthy{check}. Needs the
    /// Kubernetes API (in-cluster or KUBECONFIG) and `get` on the configuration.
    #[arg(long, env = "SIDEKEY_CHECK_WEBHOOK")]
    check_webhook: bool,
    /// How often --check-webhook checks while healthy (every 10 s while a check fails).
    #[arg(long, default_value = "60s", value_parser = sidekey::duration::parse)]
    check_webhook_interval: std::time::Duration,
    /// Self-managed mode: the Service name (its DNS names go into the certificate).
    #[arg(long, env = "SIDEKEY_SERVICE", default_value = "sidekey-injector")]
    service: String,
    /// Self-managed mode: extra DNS names or IP addresses for the certificate. Repeatable.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// How long requests in flight may take to finish at shutdown.
    #[arg(long, default_value = "15s", value_parser = sidekey::duration::parse)]
    shutdown_grace: std::time::Duration,
    /// How long a request body may take to arrive (the apiserver sends it at
    /// once; a client that trickles it is cut off with 408).
    #[arg(long, env = "SIDEKEY_BODY_TIMEOUT", default_value = "10s", value_parser = sidekey::duration::parse)]
    body_timeout: std::time::Duration,
    /// The most webhook connections open at once; more are closed on accept
    /// (the apiserver keeps a few per replica).
    #[arg(long, env = "SIDEKEY_MAX_CONNECTIONS", default_value_t = 1000)]
    max_connections: usize,
}

fn settings(cli: Cli) -> Result<Settings, String> {
    let config = match &cli.config {
        None => InjectorConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("--config {}: {e}", p.display()))?;
            InjectorConfig::from_yaml(&text).map_err(|e| format!("--config {}: {e}", p.display()))?
        }
    };
    let check_webhook = cli.check_webhook.then(|| crate::WebhookCheck {
        name: cli.webhook_config.clone(),
        every: cli.check_webhook_interval.max(std::time::Duration::from_secs(1)),
    });
    let tls = match (cli.tls_cert, cli.tls_key, cli.tls_self_managed) {
        (Some(cert), Some(key), false) => TlsSource::Files { cert, key },
        (None, None, true) => {
            let mut sans = vec![
                format!("{}.{}.svc", cli.service, cli.namespace),
                format!("{}.{}.svc.cluster.local", cli.service, cli.namespace),
            ];
            sans.extend(cli.tls_sans);
            TlsSource::SelfManaged(Managed {
                namespace: cli.namespace,
                secret: cli.tls_secret,
                webhook_config: cli.webhook_config,
                sans,
                cert_lifetime: std::time::Duration::from_secs(90 * 24 * 3600),
                ca_lifetime: std::time::Duration::from_secs(5 * 365 * 24 * 3600),
            })
        }
        _ => return Err("choose a certificate: --tls-cert and --tls-key, or --tls-self-managed".into()),
    };
    Ok(Settings {
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        config,
        tls,
        shutdown_grace: cli.shutdown_grace,
        body_timeout: cli.body_timeout,
        max_connections: cli.max_connections.max(1),
        check_webhook,
    })
}

/// Runs the command line; returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    sidekey_runtime::init_logging();
    let settings = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(64);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(crate::run(settings, sidekey_runtime::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::from(1)
        }
    }
}
