//! What one read of a secret returns, held so that the plaintext is
//! zeroized when dropped and never shown by `Debug`.

use std::fmt;

use serde_json::Value;
use zeroize::Zeroize;

pub use sidekey::secret::SecretBytes;

/// Structured secret data (the fields of a Vault secret, the JSON of an AWS
/// secret). Every string in it is zeroized on drop.
pub struct SecretValue(Value);

impl SecretValue {
    /// Wraps `v`.
    pub fn new(v: Value) -> Self {
        SecretValue(v)
    }

    /// The plaintext; call only where it is rendered.
    pub fn expose_secret(&self) -> &Value {
        &self.0
    }

    /// The field names (not secret), for error messages.
    pub fn field_names(&self) -> Vec<String> {
        match &self.0 {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => {
            for (_, v) in m.iter_mut() {
                wipe(v);
            }
        }
        _ => {}
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([REDACTED], fields: {:?})", self.field_names())
    }
}

/// One read: fields, raw bytes (AWS binary or non-JSON strings), or both.
#[derive(Debug)]
pub struct Secret {
    /// The fields (a JSON object), or `Null`.
    pub fields: SecretValue,
    /// The unstructured value, if any.
    pub raw: Option<SecretBytes>,
}

impl Secret {
    /// A secret made of fields only.
    pub fn from_fields(v: Value) -> Self {
        Secret { fields: SecretValue::new(v), raw: None }
    }
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
