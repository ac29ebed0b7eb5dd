//! Secret backends behind one interface: read a secret, check cheaply
//! whether it changed, renew and revoke leases.
//!
//! Errors say whether they are transient (back off, keep the last good
//! files) or permanent (a clear error and a metric; retried only slowly).

#[cfg(feature = "vault")]
pub mod vault;

#[cfg(feature = "aws")]
pub mod aws;

pub mod file;

use std::sync::Arc;
use std::time::Duration;

use sidekey::cert::CertRequest;
use sidekey::reference::Reference;

use crate::secret::Secret;

/// Why a backend call failed. Messages name paths, ARNs and leases, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Network trouble, throttling, 5xx, a sealed Vault: try again later.
    #[error("{0}")]
    Transient(String),
    /// Access denied: the token or policy is wrong (retried after a new login).
    #[error("{0}")]
    Denied(String),
    /// Not found, malformed, unsupported: will not fix itself.
    #[error("{0}")]
    Permanent(String),
}

impl BackendError {
    /// Whether retrying soon can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Transient(_) => "transient",
            BackendError::Denied(_) => "denied",
            BackendError::Permanent(_) => "permanent",
        }
    }
}

pub use crate::secret::Lease;

/// The result of one read.
#[derive(Debug)]
pub struct Fetched {
    /// The secret.
    pub secret: Arc<Secret>,
    /// Its version, when the backend has versions (KV v2, AWS).
    pub version: Option<String>,
    /// The lease, for dynamic secrets.
    pub lease: Option<Lease>,
    /// How to check for a new version cheaply (backend-specific: the KV v2
    /// metadata path, the AWS secret id); `None`: read again to check.
    pub check: Option<String>,
    /// Which login (token generation) the lease belongs to; a lease dies
    /// with the token that created it.
    pub owner: u64,
    /// For a certificate: its lifetime and when to fetch the next one;
    /// renewed on this schedule alone, never on a new login.
    pub certificate: Option<CertTimes>,
}

/// When a certificate ends and when to replace it, from its issuance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertTimes {
    /// How long it is valid.
    pub lifetime: Duration,
    /// When to fetch the next one.
    pub reissue_after: Duration,
}

/// A configured backend.
#[derive(Clone)]
pub enum Backend {
    /// Vault / OpenBao.
    #[cfg(feature = "vault")]
    Vault(Arc<vault::Vault>),
    /// AWS Secrets Manager.
    #[cfg(feature = "aws")]
    Aws(Arc<aws::Aws>),
    /// Local files.
    File(file::FileBackend),
}

/// What the engine needs of a backend: reads, cheap version checks, lease
/// renewal and the end of the login a lease belongs to. [`Backend`] is the
/// real one; the engine's tests drive it with a scripted one in virtual time.
pub trait SecretBackend: Clone + Send + Sync + 'static {
    /// Reads `reference` (its key is ignored: one read serves every key).
    fn read(&self, reference: &Reference) -> impl Future<Output = Result<Fetched, BackendError>> + Send;

    /// Reads a path a Go template names (Vault: as consul-template does,
    /// `data/` added on KV v2); other backends read it as [`Self::read`].
    fn read_template_path(&self, reference: &Reference) -> impl Future<Output = Result<Fetched, BackendError>> + Send {
        self.read(reference)
    }

    /// Writes `fields` to a path a Go template names (`secret "<path>"
    /// "k=v"…`, `pkiCert`): Vault only.
    fn write_template_path(
        &self,
        reference: &Reference,
        fields: &[(String, String)],
    ) -> impl Future<Output = Result<Fetched, BackendError>> + Send {
        let _ = fields;
        let message = format!("{reference}: only Vault takes writes");
        async { Err(BackendError::Permanent(message)) }
    }

    /// The current version behind `check` (from [`Fetched::check`]).
    fn version(&self, check: &str) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// Renews `lease` by `increment`; returns the lifetime granted
    /// ([`BackendError::Permanent`] when the lease is gone).
    fn renew(&self, lease: &Lease, increment: Duration) -> impl Future<Output = Result<Duration, BackendError>> + Send;

    /// The deadline of the login `owner` (a token generation), once that
    /// login is known to end.
    fn owner_deadline(&self, owner: u64) -> Option<tokio::time::Instant>;

    /// Issues a certificate (fields `tls.crt`, `tls.key`, `ca.crt`).
    fn issue(&self, cert: &CertRequest) -> impl Future<Output = Result<Fetched, BackendError>> + Send {
        let _ = cert;
        async { Err(BackendError::Permanent("this backend issues no certificates".into())) }
    }
}

impl SecretBackend for Backend {
    async fn read(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.read(reference).await,
            #[cfg(feature = "aws")]
            Backend::Aws(a) => a.read(reference).await,
            Backend::File(f) => f.read(reference).await,
        }
    }

    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    async fn write_template_path(
        &self,
        reference: &Reference,
        fields: &[(String, String)],
    ) -> Result<Fetched, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.write_template_path(reference, fields).await,
            _ => Err(BackendError::Permanent(format!("{reference}: only Vault takes writes"))),
        }
    }

    async fn read_template_path(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.read_template_path(reference).await,
            _ => self.read(reference).await,
        }
    }

    async fn version(&self, check: &str) -> Result<String, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.version(check).await,
            #[cfg(feature = "aws")]
            Backend::Aws(a) => a.version(check).await,
            Backend::File(f) => f.version(check).await,
        }
    }

    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    async fn renew(&self, lease: &Lease, increment: Duration) -> Result<Duration, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.renew(lease, increment).await,
            _ => Err(BackendError::Permanent(format!("lease {}: this backend has no leases", lease.id))),
        }
    }

    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    fn owner_deadline(&self, owner: u64) -> Option<tokio::time::Instant> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.token_deadline(owner),
            _ => None,
        }
    }

    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    async fn issue(&self, cert: &CertRequest) -> Result<Fetched, BackendError> {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.issue(cert).await,
            _ => Err(BackendError::Permanent(format!("{cert}: certificates come from Vault only"))),
        }
    }
}

impl Backend {
    /// Revokes `lease` (at shutdown, when configured).
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    pub async fn revoke(&self, lease: &Lease) {
        match self {
            #[cfg(feature = "vault")]
            Backend::Vault(v) => v.revoke(lease).await,
            _ => {}
        }
    }
}
