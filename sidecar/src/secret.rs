//! What one read of a secret returns, held so that the plaintext is
//! zeroized when dropped and never shown by `Debug`.

use serde_json::Value;

pub use sidekey::secret::{SecretBytes, SecretValue};

/// One read: fields, raw bytes (AWS binary or non-JSON strings), or both.
#[derive(Debug)]
pub struct Secret {
    /// The fields (a JSON object), or `Null`.
    pub fields: SecretValue,
    /// The unstructured value, if any.
    pub raw: Option<SecretBytes>,
    /// What a Go template sees besides the fields.
    pub meta: Meta,
}

/// The rest of a Vault answer, as consul-template shows it to a template:
/// `.LeaseID`, `.LeaseDuration`, `.Renewable`, and for KV v2 the version
/// metadata beside the data (`.Data.data`, `.Data.metadata`). No secret
/// value is here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// The lease id (empty: none).
    pub lease_id: String,
    /// The lease's lifetime in seconds.
    pub lease_duration: u64,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// For KV v2: the `metadata` object of the answer.
    pub kv2_metadata: Option<Value>,
}

impl Secret {
    /// A secret made of fields only.
    pub fn from_fields(v: Value) -> Self {
        Secret { fields: SecretValue::new(v), raw: None, meta: Meta::default() }
    }
}

/// A lease on a dynamic secret: what the backends hand out and the state
/// file keeps (here, below both, so neither imports the other for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (an identifier, not a secret).
    pub id: String,
    /// Its lifetime when issued or last renewed.
    pub ttl: std::time::Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_shows_field_names_but_no_value() {
        let s = Secret::from_fields(json!({"password": "hunter2-topsecret", "user": "app"}));
        let d = format!("{s:?}");
        assert!(d.contains("password") && !d.contains("hunter2") && !d.contains("\"app\""), "{d}");
    }
}
