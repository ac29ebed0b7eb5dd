//! Local files as a secret source (`file:<path>[#key]`), for development and
//! the demo: a JSON object gives fields, anything else is raw bytes. The
//! version is the file's modification time and size, so an edit is noticed
//! at the next refresh.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde_json::Value;
use sidekey::reference::Reference;
use zeroize::Zeroizing;

use super::{BackendError, Fetched};
use crate::secret::{Secret, SecretBytes, SecretValue};

/// The file backend (no state).
#[derive(Clone, Default)]
pub struct FileBackend;

fn version_of(path: &str) -> Result<String, BackendError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::Permanent(format!("file:{path}: not found")),
        _ => BackendError::Transient(format!("file:{path}: {e}")),
    })?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    Ok(format!("{}.{:09}-{}", mtime.as_secs(), mtime.subsec_nanos(), meta.len()))
}

impl FileBackend {
    /// Reads the file.
    ///
    /// # Errors
    /// Not found (permanent) or unreadable (transient).
    pub async fn read(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        let Reference::File { path, .. } = reference else {
            return Err(BackendError::Permanent(format!("{reference}: not a file reference")));
        };
        let version = version_of(path)?;
        let bytes = Zeroizing::new(
            tokio::fs::read(path).await.map_err(|e| BackendError::Transient(format!("file:{path}: {e}")))?,
        );
        let secret = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Secret::from_fields(v),
            Ok(other) => {
                drop(SecretValue::new(other));
                Secret {
                    fields: SecretValue::new(Value::Null),
                    raw: Some(SecretBytes::new(bytes.to_vec())),
                    meta: Default::default(),
                }
            }
            Err(_) => Secret {
                fields: SecretValue::new(Value::Null),
                raw: Some(SecretBytes::new(bytes.to_vec())),
                meta: Default::default(),
            },
        };
        Ok(Fetched {
            certificate: None,
            secret: Arc::new(secret),
            version: Some(version),
            lease: None,
            check: Some(path.clone()),
            owner: 0,
        })
    }

    /// The file's current version.
    ///
    /// # Errors
    /// As [`FileBackend::read`].
    pub async fn version(&self, path: &str) -> Result<String, BackendError> {
        version_of(path)
    }
}
