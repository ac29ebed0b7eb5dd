//! Serving certificates: loaded from files and reloaded when they change
//! (cert-manager rotates them), or managed by the injector itself (a CA and
//! a serving certificate in a Secret, the caBundle of the
//! MutatingWebhookConfiguration kept current). New connections get the new
//! certificate at once; connections in flight keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM is not a usable certificate chain and key.
    #[error("{0}")]
    Pem(String),
    /// The Kubernetes API refused or could not be reached (self-managed mode).
    #[error("kubernetes: {what}: {source}")]
    Kube {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// The TLS Secret holds something else (self-managed mode).
    #[error("secret {0} lacks ca.crt, ca.key, tls.crt or tls.key")]
    UnusableSecret(String),
    /// Other replicas kept changing an object (the TLS Secret, the webhook
    /// configuration) while this one tried to write it (self-managed mode).
    #[error("could not write {0}: it kept changing (conflicts with other writers)")]
    Contended(String),
}

impl TlsError {
    /// A Kubernetes error while doing `what`.
    pub fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> TlsError {
        move |source| TlsError::Kube { what, source }
    }
}

/// Parses a PEM certificate chain and private key.
///
/// # Errors
/// [`TlsError::Pem`] naming what is wrong (never the key).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("certificate: no PEM CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Pem(format!("private key: unsupported ({e})")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| TlsError::Pem(format!("the key does not match the certificate: {e}")))?;
    Ok(ck)
}

/// The certificate served now; swapped atomically.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore { current: ArcSwap::from_pointee(key) })
    }

    /// Serves `key` from now on.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The server config for rustls.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_no_client_auth().with_cert_resolver(self.clone()))
            .unwrap_or_else(|_| rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Loads the certificate and key files.
///
/// # Errors
/// [`TlsError`].
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source });
    certified_key(&read(cert)?, &read(key)?)
}

/// Reloads `cert`/`key` into `store` whenever their directories change
/// (inotify, which also sees the `..data` swap of a Secret volume), checking
/// again every 30 s in case an event was missed. A bad pair is logged and the
/// current certificate kept.
pub async fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the certificate files; checking every 30 s");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for dir in [cert.parent(), key.parent()].into_iter().flatten() {
            if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the certificate directory");
            }
        }
    }
    let fingerprint = |p: &Path| std::fs::read(p).ok();
    let mut last = (fingerprint(&cert), fingerprint(&key));
    loop {
        tokio::select! {
            _ = rx.recv() => {
                // Let a writer finish (both files change).
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.changed() => return,
        }
        let now = (fingerprint(&cert), fingerprint(&key));
        if now == last {
            continue;
        }
        match load_files(&cert, &key) {
            Ok(k) => {
                store.replace(k);
                last = now;
                metrics.tls_reload();
                tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "the new certificate files are not usable; keeping the current certificate")
            }
        }
    }
}

pub mod managed;

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_pair_and_refuses_mismatches() {
        let (c1, k1) = self_signed("a");
        let (_, k2) = self_signed("b");
        assert!(certified_key(c1.as_bytes(), k1.as_bytes()).is_ok());
        let e = certified_key(c1.as_bytes(), k2.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(certified_key(b"junk", k1.as_bytes()).is_err());
        assert!(!format!("{:?}", certified_key(b"", k1.as_bytes())).contains("PRIVATE"));
    }
}
