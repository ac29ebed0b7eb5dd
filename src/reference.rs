//! The secret reference grammar.
//!
//! ```text
//! vault:<api-path>[#<key>]
//! aws-sm:<secret-id-or-arn>[#<json-key>][?version-stage=<stage>|?version-id=<id>]
//! arn:aws:secretsmanager:<region>:<account>:secret:<name>[#<json-key>][?…]
//! file:<path>[#<key>]
//! ```
//!
//! A reference names where a secret lives, never its value. Its canonical
//! text ([`Reference`]'s `Display`) is what the agent config carries and what
//! decides whether two references are "the same" (one file, one read, one
//! lease). The Vault path is the HTTP API path without `/v1/` (KV v2 paths
//! include `data/`), as in Vault Agent templates; see the [Vault HTTP API] and
//! the [Secrets Manager ARN format].
//!
//! [Vault HTTP API]: https://developer.hashicorp.com/vault/api-docs
//! [Secrets Manager ARN format]: https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_iam-permissions.html#iam-resources

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which secret store a reference points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// HashiCorp Vault or OpenBao.
    Vault,
    /// AWS Secrets Manager.
    Aws,
    /// Local files (development and the demo; off in the injector by default).
    File,
}

impl Backend {
    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vault => "vault",
            Backend::Aws => "aws",
            Backend::File => "file",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version of an AWS secret to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum AwsVersion {
    /// `AWSCURRENT`, the default.
    #[default]
    Current,
    /// `?version-stage=STAGE`.
    Stage(String),
    /// `?version-id=ID`.
    Id(String),
}

/// A parsed secret reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `vault:<path>[#key]`.
    Vault {
        /// The API path, without `/v1/` and without a leading `/`.
        path: String,
        /// The field to select from the secret's data.
        key: Option<String>,
    },
    /// `aws-sm:<id>[#key][?version…]` or a bare ARN.
    Aws {
        /// The secret's name or full ARN.
        secret_id: String,
        /// The JSON key to select; `.` separates nested keys (`db.password`).
        key: Option<String>,
        /// Which version to read.
        version: AwsVersion,
    },
    /// `file:<path>[#key]`.
    File {
        /// The local path.
        path: String,
        /// The JSON key to select.
        key: Option<String>,
    },
}

/// Why a reference does not parse. The messages never repeat the whole input,
/// which in a misuse could be a value pasted where a reference belongs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not one of the known schemes.
    #[error("unknown reference scheme {0:?} (expected vault:, aws-sm:, arn:aws:secretsmanager: or file:)")]
    UnknownScheme(String),
    /// No scheme at all.
    #[error("not a reference (expected vault:<path>, aws-sm:<name-or-arn>, arn:aws:secretsmanager:… or file:<path>)")]
    NoScheme,
    /// The path or secret id after the scheme is empty.
    #[error("{0}: the path is empty")]
    EmptyPath(&'static str),
    /// The path has a character or segment it may not have.
    #[error("{scheme}: invalid path: {reason}")]
    BadPath {
        /// The scheme.
        scheme: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The `#key` part is empty or malformed.
    #[error("{0}: the key after '#' is empty or contains whitespace")]
    BadKey(&'static str),
    /// The `?` query is not `version-stage=` or `version-id=`.
    #[error("aws-sm: unsupported query {0:?} (expected ?version-stage=STAGE or ?version-id=ID)")]
    BadQuery(String),
    /// An ARN that is not a Secrets Manager secret ARN.
    #[error("aws-sm: malformed ARN: {0}")]
    BadArn(String),
}

/// The prefixes that mark an env var value as a reference to migrate.
pub const ENV_REFERENCE_PREFIXES: [&str; 2] = ["vault:", "aws-sm:"];

/// Whether an env var value is a secret reference that the injector migrates:
/// `vault:…`, `aws-sm:…` or a bare Secrets Manager ARN. `file:` values are not
/// (`file:` is a common prefix of ordinary URLs).
pub fn is_env_reference(value: &str) -> bool {
    ENV_REFERENCE_PREFIXES.iter().any(|p| value.starts_with(p)) || is_secretsmanager_arn(value)
}

fn is_secretsmanager_arn(value: &str) -> bool {
    let mut parts = value.splitn(4, ':');
    parts.next() == Some("arn")
        && parts.next().is_some_and(|p| p == "aws" || p.starts_with("aws-"))
        && parts.next() == Some("secretsmanager")
}

impl Reference {
    /// The store this reference points into.
    pub fn backend(&self) -> Backend {
        match self {
            Reference::Vault { .. } => Backend::Vault,
            Reference::Aws { .. } => Backend::Aws,
            Reference::File { .. } => Backend::File,
        }
    }

    /// The selected key, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Reference::Vault { key, .. } | Reference::Aws { key, .. } | Reference::File { key, .. } => key.as_deref(),
        }
    }

    /// The same reference with `key` as its key (used for `map-<secret>` plus a
    /// `secretKeyRef.key`).
    #[must_use]
    pub fn with_key(&self, new_key: &str) -> Reference {
        let mut r = self.clone();
        match &mut r {
            Reference::Vault { key, .. } | Reference::Aws { key, .. } | Reference::File { key, .. } => {
                *key = Some(new_key.to_owned());
            }
        }
        r
    }

    /// The same reference without its key: what one read (and one lease) serves.
    #[must_use]
    pub fn without_key(&self) -> Reference {
        let mut r = self.clone();
        match &mut r {
            Reference::Vault { key, .. } | Reference::Aws { key, .. } | Reference::File { key, .. } => *key = None,
        }
        r
    }

    /// The region named by an ARN reference, if it is one.
    pub fn arn_region(&self) -> Option<&str> {
        match self {
            Reference::Aws { secret_id, .. } if secret_id.starts_with("arn:") => secret_id.split(':').nth(3),
            _ => None,
        }
    }
}

fn check_key(scheme: &'static str, key: &str) -> Result<String, ReferenceError> {
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ReferenceError::BadKey(scheme));
    }
    Ok(key.to_owned())
}

fn check_vault_path(path: &str) -> Result<String, ReferenceError> {
    const SCHEME: &str = "vault";
    if path.is_empty() {
        return Err(ReferenceError::EmptyPath(SCHEME));
    }
    let bad = |reason: &str| ReferenceError::BadPath { scheme: SCHEME, reason: reason.into() };
    if path.starts_with('/') {
        return Err(bad("must not start with '/' (write secret/data/app, not /v1/secret/data/app)"));
    }
    if path.starts_with("v1/") {
        return Err(bad("must not start with 'v1/': give the path after /v1/"));
    }
    if path.ends_with('/') {
        return Err(bad("must not end with '/'"));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad("has an empty, '.' or '..' segment"));
    }
    if let Some(c) = path.chars().find(|c| c.is_whitespace() || c.is_control() || "?%\\\"'<>".contains(*c)) {
        return Err(bad(&format!("contains {c:?}")));
    }
    Ok(path.to_owned())
}

fn check_aws_id(id: &str) -> Result<String, ReferenceError> {
    if id.is_empty() {
        return Err(ReferenceError::EmptyPath("aws-sm"));
    }
    if id.starts_with("arn:") {
        let parts: Vec<&str> = id.splitn(7, ':').collect();
        let [_, partition, service, region, account, resource, name] = parts.as_slice() else {
            return Err(ReferenceError::BadArn("expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME".into()));
        };
        if !(*partition == "aws" || partition.starts_with("aws-")) || *service != "secretsmanager" {
            return Err(ReferenceError::BadArn("not a Secrets Manager ARN".into()));
        }
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(ReferenceError::BadArn("the region is empty or malformed".into()));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReferenceError::BadArn("the account must be 12 digits".into()));
        }
        if *resource != "secret" {
            return Err(ReferenceError::BadArn("the resource type must be 'secret'".into()));
        }
        check_aws_name(name)?;
        return Ok(id.to_owned());
    }
    check_aws_name(id)?;
    Ok(id.to_owned())
}

/// Secrets Manager names: 1–512 of `A-Za-z0-9/_+=.@-`.
fn check_aws_name(name: &str) -> Result<(), ReferenceError> {
    let bad = |reason: String| ReferenceError::BadPath { scheme: "aws-sm", reason };
    if name.is_empty() {
        return Err(ReferenceError::EmptyPath("aws-sm"));
    }
    if name.len() > 512 {
        return Err(bad("a secret name has at most 512 characters".into()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))) {
        return Err(bad(format!("contains {c:?} (names use A-Z a-z 0-9 / _ + = . @ -)")));
    }
    Ok(())
}

fn check_file_path(path: &str) -> Result<String, ReferenceError> {
    if path.is_empty() {
        return Err(ReferenceError::EmptyPath("file"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(ReferenceError::BadPath { scheme: "file", reason: "contains a control character".into() });
    }
    Ok(path.to_owned())
}

fn split_key(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('#') {
        Some((p, k)) => (p, Some(k)),
        None => (rest, None),
    }
}

fn parse_aws(rest: &str) -> Result<Reference, ReferenceError> {
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let (id, key) = split_key(head);
    let version = match query {
        None => AwsVersion::Current,
        Some(q) => match q.split_once('=') {
            Some(("version-stage", v)) if !v.is_empty() && !v.contains(['&', '=']) => {
                if v == "AWSCURRENT" {
                    AwsVersion::Current
                } else {
                    AwsVersion::Stage(v.to_owned())
                }
            }
            Some(("version-id", v)) if !v.is_empty() && !v.contains(['&', '=']) => AwsVersion::Id(v.to_owned()),
            _ => return Err(ReferenceError::BadQuery(q.chars().take(40).collect())),
        },
    };
    Ok(Reference::Aws { secret_id: check_aws_id(id)?, key: key.map(|k| check_key("aws-sm", k)).transpose()?, version })
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("vault:") {
            let (path, key) = split_key(rest);
            return Ok(Reference::Vault {
                path: check_vault_path(path)?,
                key: key.map(|k| check_key("vault", k)).transpose()?,
            });
        }
        if let Some(rest) = s.strip_prefix("aws-sm:") {
            return parse_aws(rest);
        }
        if s.starts_with("arn:") {
            if is_secretsmanager_arn(s) {
                return parse_aws(s);
            }
            return Err(ReferenceError::BadArn(
                "only Secrets Manager ARNs (arn:aws:secretsmanager:…) are references".into(),
            ));
        }
        if let Some(rest) = s.strip_prefix("file:") {
            let (path, key) = split_key(rest);
            return Ok(Reference::File {
                path: check_file_path(path)?,
                key: key.map(|k| check_key("file", k)).transpose()?,
            });
        }
        match s.split_once(':') {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme.len() <= 16
                    && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                Err(ReferenceError::UnknownScheme(format!("{scheme}:")))
            }
            _ => Err(ReferenceError::NoScheme),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Vault { path, key } => {
                write!(f, "vault:{path}")?;
                if let Some(k) = key {
                    write!(f, "#{k}")?;
                }
            }
            Reference::Aws { secret_id, key, version } => {
                write!(f, "aws-sm:{secret_id}")?;
                if let Some(k) = key {
                    write!(f, "#{k}")?;
                }
                match version {
                    AwsVersion::Current => {}
                    AwsVersion::Stage(s) => write!(f, "?version-stage={s}")?,
                    AwsVersion::Id(i) => write!(f, "?version-id={i}")?,
                }
            }
            Reference::File { path, key } => {
                write!(f, "file:{path}")?;
                if let Some(k) = key {
                    write!(f, "#{k}")?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_vault_with_and_without_key() {
        assert_eq!(
            p("vault:secret/data/app/db#password"),
            Reference::Vault { path: "secret/data/app/db".into(), key: Some("password".into()) }
        );
        assert_eq!(p("vault:database/creds/app"), Reference::Vault { path: "database/creds/app".into(), key: None });
    }

    #[test]
    fn parses_aws_name_arn_key_and_version() {
        assert_eq!(
            p("aws-sm:prod/db#password"),
            Reference::Aws { secret_id: "prod/db".into(), key: Some("password".into()), version: AwsVersion::Current }
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-AbCdEf";
        let r = p(arn);
        assert_eq!(r.arn_region(), Some("us-east-1"));
        assert_eq!(r.to_string(), format!("aws-sm:{arn}"));
        assert_eq!(
            p("aws-sm:app#db.password?version-stage=AWSPREVIOUS"),
            Reference::Aws {
                secret_id: "app".into(),
                key: Some("db.password".into()),
                version: AwsVersion::Stage("AWSPREVIOUS".into())
            }
        );
        assert_eq!(p("aws-sm:app?version-id=abc-123").to_string(), "aws-sm:app?version-id=abc-123");
        assert_eq!(p("aws-sm:app?version-stage=AWSCURRENT"), p("aws-sm:app"));
    }

    #[test]
    fn canonical_text_round_trips() {
        for s in [
            "vault:secret/data/a#k",
            "vault:kv/app",
            "aws-sm:prod/x#a.b?version-stage=AWSPENDING",
            "file:/tmp/x.json#k",
            "file:secrets/dev.json",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn rejects_unknown_scheme_naming_it() {
        let e = "gcp:projects/p/secrets/s/versions/latest".parse::<Reference>().unwrap_err();
        assert_eq!(e, ReferenceError::UnknownScheme("gcp:".into()));
        assert!(e.to_string().contains("gcp:"));
        assert_eq!("just-a-password".parse::<Reference>().unwrap_err(), ReferenceError::NoScheme);
    }

    #[test]
    fn rejects_bad_paths_keys_and_queries() {
        for bad in [
            "vault:",
            "vault:/v1/secret/data/x",
            "vault:secret/../sys/raw",
            "vault:secret//x",
            "vault:secret/x#",
            "vault:secret/x#a b",
            "vault:v1/secret/x",
            "aws-sm:",
            "aws-sm:a b",
            "aws-sm:x?version=1",
            "aws-sm:arn:aws:secretsmanager:us-east-1:12:secret:x",
            "arn:aws:s3:::bucket",
            "file:",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn env_reference_detection_leaves_ordinary_values() {
        assert!(is_env_reference("vault:secret/data/x#y"));
        assert!(is_env_reference("aws-sm:prod/db"));
        assert!(is_env_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:x"));
        assert!(is_env_reference("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x"));
        assert!(!is_env_reference("arn:aws:s3:::shop-checkout-uploads"));
        assert!(!is_env_reference("file:///etc/app.conf"));
        assert!(!is_env_reference("https://vault.example.com"));
    }

    #[test]
    fn error_messages_do_not_echo_the_input() {
        let e = "hunter2 is my password".parse::<Reference>().unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
