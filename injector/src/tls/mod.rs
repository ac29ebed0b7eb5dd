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

/// The `notAfter` of a DER X.509 certificate, as Unix time; `None` when it
/// cannot be read. A minimal DER walk (Certificate → TBSCertificate →
/// validity), bounds-checked at every step.
pub fn not_after(der: &[u8]) -> Option<i64> {
    // One TLV: (tag, content, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let len = b[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
            b = &b[n..];
            len
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    let (0x30, cert, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(cert)? else { return None };
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer
    }
    let (0x30, validity, _) = tlv(rest)? else { return None };
    let (_, _, after) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = |s: &str| -> Option<i64> { if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None } };
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || rest.get(10..) != Some("Z") {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
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
    /// Where the served certificate's end (Unix time) is published.
    expiry: std::sync::OnceLock<prometheus_client::metrics::gauge::Gauge>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore { current: ArcSwap::from_pointee(key), expiry: std::sync::OnceLock::new() })
    }

    /// Serves `key` from now on.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
        self.publish_expiry();
    }

    /// The certificate chain served now, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Publishes the served certificate's end in `gauge`, now and after
    /// every replacement.
    pub fn track_expiry(&self, gauge: prometheus_client::metrics::gauge::Gauge) {
        let _ = self.expiry.set(gauge);
        self.publish_expiry();
    }

    fn publish_expiry(&self) {
        if let Some(g) = self.expiry.get() {
            g.set(self.current.load().cert.first().and_then(|c| not_after(c)).unwrap_or(0));
        }
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
    fn reads_not_after_in_both_time_forms_and_refuses_junk() {
        for (y, m, d, unix) in [(2030, 1, 2, 1_893_542_400), (2060, 6, 15, 2_854_483_200)] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["a".to_owned()]).unwrap();
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()), Some(unix), "{y}-{m}-{d}");
        }
        for junk in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01\x00"] {
            assert_eq!(not_after(junk), None);
        }
    }

    #[test]
    fn not_after_survives_every_truncation_and_many_byte_flips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let der =
            rcgen::CertificateParams::new(vec!["a".to_owned()]).unwrap().self_signed(&key).unwrap().der().to_vec();
        for n in 0..der.len() {
            let _ = not_after(&der[..n]);
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut d = der.clone();
            let i = (rng % d.len() as u64) as usize;
            d[i] = (rng >> 32) as u8;
            let _ = not_after(&d);
        }
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
