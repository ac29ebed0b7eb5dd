//! Wrappers for secret bytes: zeroized when dropped, redacted in `Debug` and
//! `Display`. Every place that reads the plaintext calls `expose_secret()`,
//! so each use is greppable.

use std::fmt;

use serde_json::Value;
use zeroize::Zeroize;

pub use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Secret bytes (a file's content, a credential).
pub struct SecretBytes(SecretBox<[u8]>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the buffer is zeroized on drop.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(SecretBox::new(bytes.into_boxed_slice()))
    }

    /// The plaintext. Call only where the value is written or sent.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// The length, which is not secret.
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        SecretBytes::new(self.expose_secret().to_vec())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        // Not constant-time: used to detect changed content, not to check
        // credentials.
        self.expose_secret() == other.expose_secret()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED {} bytes])", self.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        SecretBytes::new(s.into_bytes())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_show_no_value() {
        let s = SecretBytes::from("hunter2-very-secret".to_owned());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!format!("{:#?}", vec![s.clone()]).contains("hunter2"));
        assert_eq!(s.expose_secret(), b"hunter2-very-secret");
    }

    #[test]
    fn secret_value_debug_shows_field_names_only() {
        let v = SecretValue::new(serde_json::json!({"password": "hunter2-topsecret"}));
        let d = format!("{v:?}");
        assert!(d.contains("password") && !d.contains("hunter2"), "{d}");
    }

    #[test]
    fn secret_string_debug_is_redacted() {
        let s = SecretString::from("hunter2".to_owned());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
