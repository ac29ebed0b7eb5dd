//! The contract's shared words and checks: what annotations, the injector
//! config and the agent config all speak of (how the agent runs, formats,
//! on-change, the login method, Go template delimiters) and the checks
//! each of them applies to paths, modes, durations and addresses. Nothing
//! here imports another module of the core but `layout`: everything else
//! is built on it (docs/architecture.md shows the tree).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the agent runs in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// A native sidecar (init container with `restartPolicy: Always`).
    #[default]
    Sidecar,
    /// Render once in an init container; no rotation.
    InitOnly,
    /// An init container plus a regular sidecar container (clusters before 1.29).
    Legacy,
}

/// What happens to env vars that hold references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EnvMode {
    /// Replace `VAR` by `VAR_FILE=<path>`.
    #[default]
    File,
    /// Wrap the command in `sidekey-agent exec`, which sets `VAR` in the process only.
    Exec,
    /// Remove `VAR`; the app reads the file itself.
    Remove,
}

/// How a secret is rendered into its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The selected value as is.
    Raw,
    /// The secret's fields (or the selected value) as JSON.
    Json,
    /// `KEY=value` lines.
    Dotenv,
    /// The fields as YAML.
    Yaml,
    /// A minijinja template over the fields.
    Template,
    /// A Go template as Vault Agent runs it (`{{ with secret "path" }}`),
    /// reading any number of paths.
    GoTemplate,
}

impl Format {
    /// The annotation value: `raw`, `json`, …, `go-template`.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Yaml => "yaml",
            Format::Template => "template",
            Format::GoTemplate => "go-template",
        }
    }
}

/// How the app learns that files changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnChange {
    /// The app watches the files itself (or does not care).
    #[default]
    None,
    /// A signal to the app's processes; needs `shareProcessNamespace`.
    Signal(Signal),
    /// An HTTP POST to a loopback URL.
    Http(String),
}

/// The signals `on-change: signal:` accepts: the ones apps reload on, none
/// that cannot be caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGHUP`.
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT`.
    Quit,
    /// `SIGWINCH`.
    Winch,
}

impl Signal {
    /// Every accepted signal.
    pub const ALL: [Signal; 6] = [Signal::Hup, Signal::Usr1, Signal::Usr2, Signal::Int, Signal::Quit, Signal::Winch];

    /// Its name, `SIGHUP`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Winch => "SIGWINCH",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for OnChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnChange::None => f.write_str("none"),
            OnChange::Signal(s) => write!(f, "signal:{s}"),
            OnChange::Http(u) => f.write_str(u),
        }
    }
}

impl FromStr for OnChange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(OnChange::None);
        }
        if let Some(sig) = s.strip_prefix("signal:") {
            let sig = sig.to_ascii_uppercase();
            let sig = if sig.starts_with("SIG") { sig } else { format!("SIG{sig}") };
            return match Signal::ALL.into_iter().find(|s| s.name() == sig) {
                Some(s) => Ok(OnChange::Signal(s)),
                None => {
                    let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                    Err(format!("unsupported signal (supported: {})", names.join(", ")))
                }
            };
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (hostport, _path) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                return Err("the URL must point at the pod itself (http://127.0.0.1:PORT/PATH)".into());
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err("the URL has no valid port".into());
            }
            if s.contains(char::is_whitespace) {
                return Err("the URL contains whitespace".into());
            }
            return Ok(OnChange::Http(s.to_owned()));
        }
        Err("expected none, signal:SIGNAME or http://127.0.0.1:PORT/PATH".into())
    }
}

impl Serialize for OnChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OnChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a mount path: absolute, normalized, not the root.
pub fn mount_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must be an absolute path".into());
    }
    if path == "/" {
        return Some("must not be the root directory".into());
    }
    if path.ends_with('/') || path.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..") {
        return Some("must be a normalized path (no '//', '.', '..' or trailing '/')".into());
    }
    if path.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':') {
        return Some("must not contain whitespace, control characters or ':'".into());
    }
    None
}

/// Why `path` cannot be the secrets' mount path: it is malformed
/// ([`mount_path_problem`]), or it overlaps a directory sidekey mounts
/// itself (the `exec` wrapper, the agent's state, its login token), where
/// one mount would hide or shadow the other.
pub fn secrets_mount_problem(path: &str) -> Option<String> {
    if let Some(p) = mount_path_problem(path) {
        return Some(p);
    }
    let overlaps =
        |dir: &str| path == dir || dir.starts_with(&format!("{path}/")) || path.starts_with(&format!("{dir}/"));
    ["/sidekey", crate::layout::TOKEN_DIR].iter().find(|d| overlaps(d)).map(|d| {
        format!("overlaps {d}, where sidekey mounts its own volumes; choose another path such as /run/secrets/sidekey")
    })
}

/// Bounds of `refresh`: often enough to matter, rarely enough not to hammer
/// the backend.
pub fn refresh_problem(d: Duration) -> Option<String> {
    if d < Duration::from_secs(1) {
        Some("must be at least 1s".into())
    } else if d > Duration::from_secs(24 * 3600) {
        Some("must be at most 24h".into())
    } else {
        None
    }
}

/// Parses an octal file mode such as `0440`; only read bits are allowed
/// (the files are secrets in a read-only mount).
pub fn parse_file_mode(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err("must be an octal mode such as 0440".into());
    }
    let mode = u32::from_str_radix(s, 8).map_err(|_| "must be an octal mode such as 0440".to_owned())?;
    if mode > 0o777 {
        return Err("must be at most 0777".into());
    }
    if mode & !0o444 != 0 {
        return Err("may only grant read permission (e.g. 0400, 0440, 0444): the files are read-only secrets".into());
    }
    if mode == 0 {
        return Err("grants no read permission to anyone".into());
    }
    Ok(mode)
}

/// One strict grammar for the path-like values a pod may choose (the
/// Vault auth mount, the Vault namespace): `/`-separated segments of
/// `A-Z a-z 0-9 . _ -`, each starting with a letter or digit (so no `.`,
/// `..`, empty segment, `\`, `%`-escape, `?` or `#` can steer the login to
/// another API path), at most 256 characters.
pub fn check_path_like(s: &str) -> Result<String, String> {
    let segment_ok = |p: &str| {
        p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if s.is_empty() || s.len() > 256 || !s.split('/').all(segment_ok) {
        return Err(
            "must be a path such as kubernetes or team-a/kubernetes: segments of A-Z a-z 0-9 . _ - starting with a letter or digit, at most 256 characters"
                .into(),
        );
    }
    Ok(s.to_owned())
}

/// How the agent logs in to Vault with the pod's projected token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Kubernetes auth: Vault asks the cluster's TokenReview API about the token.
    #[default]
    Kubernetes,
    /// JWT auth: Vault checks the token's signature with the cluster's
    /// public keys (JWKS, OIDC discovery), without calling the cluster.
    Jwt,
}

impl AuthMethod {
    /// The mount the method is usually enabled at (`kubernetes`, `jwt`).
    pub fn default_mount(self) -> &'static str {
        match self {
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::Jwt => "jwt",
        }
    }
}

impl FromStr for AuthMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kubernetes" => Ok(AuthMethod::Kubernetes),
            "jwt" => Ok(AuthMethod::Jwt),
            _ => Err("must be kubernetes or jwt".into()),
        }
    }
}

/// Checks that a Vault address is an `http(s)://host[:port]` URL.
pub fn vault_addr_problem(addr: &str) -> Option<String> {
    let rest = addr.strip_prefix("https://").or_else(|| addr.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("must start with https:// or http://".into());
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Some("must be scheme://host[:port] with no credentials, query or fragment".into());
    }
    None
}

/// A Go template's delimiters: `"[[ ]]"` in text (left, a space, right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delims {
    /// The left delimiter.
    pub left: String,
    /// The right delimiter.
    pub right: String,
}

impl FromStr for Delims {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if l.len() <= 16 && r.len() <= 16 => {
                Ok(Delims { left: l.to_owned(), right: r.to_owned() })
            }
            _ => Err("must be the left and right delimiter separated by a space, e.g. \"[[ ]]\"".into()),
        }
    }
}

impl fmt::Display for Delims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.left, self.right)
    }
}

impl Serialize for Delims {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Delims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
