//! What the user should know about a pod sidekey injected (or one that
//! reads Secrets through env and did not opt in). Each warning has two
//! texts: [`Warning::detail`], the whole explanation `sidekey inject` prints,
//! and [`Warning::short`], at most [`Warning::MAX_SHORT`] characters for the
//! `warnings` kubectl shows (Kubernetes asks admission webhooks to keep them
//! under 120 characters).

use std::fmt;

use crate::PREFIX;

/// One warning; the names are identifiers from the pod, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// An env var holds a secret reference, but the pod does not opt in.
    ReferenceNotInjected {
        /// The container.
        container: String,
        /// The variable.
        var: String,
    },
    /// An env var comes from a Kubernetes Secret, and the pod does not opt in.
    SecretInEnv {
        /// The container.
        container: String,
        /// The variable.
        var: String,
        /// The Secret.
        secret: String,
    },
    /// `envFrom` exposes a Kubernetes Secret, and the pod does not opt in.
    SecretEnvFrom {
        /// The container.
        container: String,
        /// The Secret.
        secret: String,
    },
    /// An opted-in pod's env var from a Secret without `map-<secret>` stays.
    UnmappedSecretKeyRef {
        /// The container.
        container: String,
        /// The variable.
        var: String,
        /// The Secret.
        secret: String,
    },
    /// An opted-in pod's `envFrom` of a Secret without `map-<secret>` stays.
    UnmappedEnvFrom {
        /// The container.
        container: String,
        /// The Secret.
        secret: String,
    },
    /// A `map-<secret>` annotation nothing in the pod uses.
    UnusedMap {
        /// The Secret.
        secret: String,
    },
    /// The keys of an `envFrom` Secret became files in a directory (env
    /// mode `file` cannot name them in advance).
    EnvFromAsFiles {
        /// The container.
        container: String,
        /// The Secret.
        secret: String,
        /// The mount path.
        mount_path: String,
    },
    /// An explicit file mode the app can use only if it runs as the agent's
    /// UID or group, which the spec does not say.
    UnverifiedMode {
        /// The file.
        file: String,
        /// The mode.
        mode: u32,
        /// The agent's UID.
        uid: i64,
        /// The agent's GID.
        gid: i64,
    },
    /// The files are mode 0444: readable by every container of the pod.
    WorldReadable,
    /// The pod opts in but references no secret.
    NoSecret,
}

impl Warning {
    /// The most characters of [`Warning::short`].
    pub const MAX_SHORT: usize = 120;

    /// The whole explanation.
    pub fn detail(&self) -> String {
        match self {
            Warning::ReferenceNotInjected { container, var } => format!(
                "container {container}: env {var} holds a secret reference but the pod does not opt in, so the app gets the reference text: add the annotation {PREFIX}inject: \"true\""
            ),
            Warning::SecretInEnv { container, var, secret } => format!(
                "container {container}: env {var} exposes Kubernetes Secret {secret} as an env var (visible in /proc, crash dumps and logs): move it to a file with {PREFIX}inject: \"true\" and {PREFIX}map-{secret}"
            ),
            Warning::SecretEnvFrom { container, secret } => format!(
                "container {container}: envFrom exposes every key of Kubernetes Secret {secret} as env vars: move them to files with {PREFIX}inject: \"true\" and {PREFIX}map-{secret}"
            ),
            Warning::UnmappedSecretKeyRef { container, var, secret } => format!(
                "container {container}: env {var} still comes from Kubernetes Secret {secret} (no {PREFIX}map-{secret} annotation), so it stays an env var"
            ),
            Warning::UnmappedEnvFrom { container, secret } => format!(
                "container {container}: envFrom still exposes Kubernetes Secret {secret} as env vars (no {PREFIX}map-{secret} annotation)"
            ),
            Warning::UnusedMap { secret } => format!(
                "annotation {PREFIX}map-{secret}: no secretKeyRef or envFrom in the pod uses Kubernetes Secret {secret}"
            ),
            Warning::EnvFromAsFiles { container, secret, mount_path } => format!(
                "container {container}: the keys of {secret} are files in {mount_path}/{secret}/ (env file mode cannot name them in advance; use {PREFIX}env: exec to get them as env vars)"
            ),
            Warning::UnverifiedMode { file, mode, uid, gid } => format!(
                "annotation {PREFIX}file-mode-{file}: with mode {mode:04o} the app can read the file only if it runs as UID {uid} or in group {gid}; set runAsUser or fsGroup in the pod spec so sidekey can check"
            ),
            Warning::WorldReadable => "secret files are readable by every container of the pod (mode 0444) because the pod has no fsGroup and its selected containers do not all run as one known non-root UID; set spec.securityContext.fsGroup (or runAsUser) to restrict them to the app".into(),
            Warning::NoSecret => format!(
                "the pod opts in but references no secret (no {PREFIX}secret-*, no reference-valued env var, no mapped Secret in use)"
            ),
        }
    }

    /// `text` as one warning line: at most [`Warning::MAX_SHORT`]
    /// characters, a longer one cut, ending in `…`.
    pub fn clip(text: String) -> String {
        cut(text, Self::MAX_SHORT)
    }

    /// One line of at most [`Warning::MAX_SHORT`] characters (long names
    /// are cut, ending in `…`).
    pub fn short(&self) -> String {
        let text = match self {
            Warning::ReferenceNotInjected { container, var } => {
                format!("{container}: env {var} is a secret reference, but the pod lacks {PREFIX}inject: \"true\"")
            }
            Warning::SecretInEnv { container, var, secret } => {
                format!("{container}: env {var} reads Secret {secret}; move it to a file with {PREFIX}map-{secret}")
            }
            Warning::SecretEnvFrom { container, secret } => {
                format!("{container}: envFrom exposes Secret {secret}; move it to files with {PREFIX}map-{secret}")
            }
            Warning::UnmappedSecretKeyRef { container, var, secret } => {
                format!("{container}: env {var} stays an env var: no {PREFIX}map-{secret}")
            }
            Warning::UnmappedEnvFrom { container, secret } => {
                format!("{container}: envFrom of Secret {secret} stays env vars: no {PREFIX}map-{secret}")
            }
            Warning::UnusedMap { secret } => {
                format!("{PREFIX}map-{secret}: no env var or envFrom reads Secret {secret}")
            }
            Warning::EnvFromAsFiles { container, secret, mount_path } => {
                format!("{container}: envFrom {secret} is now files in {mount_path}/{secret}/ (env: exec keeps vars)")
            }
            Warning::UnverifiedMode { file, mode, uid, gid } => {
                format!(
                    "{PREFIX}file-mode-{file}: {mode:04o} is readable only as UID {uid} or GID {gid}; set runAsUser or fsGroup"
                )
            }
            Warning::WorldReadable => {
                "secret files are mode 0444, readable by every container: set spec.securityContext.fsGroup or runAsUser"
                    .into()
            }
            Warning::NoSecret => "the pod opts in to sidekey but references no secret".into(),
        };
        cut(text, Self::MAX_SHORT)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail())
    }
}

/// `text` in at most `max` characters, ending in `…` when cut.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(name: &str) -> Vec<Warning> {
        let s = || name.to_owned();
        vec![
            Warning::ReferenceNotInjected { container: s(), var: s() },
            Warning::SecretInEnv { container: s(), var: s(), secret: s() },
            Warning::SecretEnvFrom { container: s(), secret: s() },
            Warning::UnmappedSecretKeyRef { container: s(), var: s(), secret: s() },
            Warning::UnmappedEnvFrom { container: s(), secret: s() },
            Warning::UnusedMap { secret: s() },
            Warning::EnvFromAsFiles { container: s(), secret: s(), mount_path: "/var/run/secrets/sidekey".into() },
            Warning::UnverifiedMode { file: s(), mode: 0o440, uid: 65532, gid: 65532 },
            Warning::WorldReadable,
            Warning::NoSecret,
        ]
    }

    #[test]
    fn short_warnings_fit_kubectl_and_keep_typical_names_whole() {
        for w in every("db-credentials") {
            let short = w.short();
            assert!(short.chars().count() <= Warning::MAX_SHORT, "{} chars: {short}", short.chars().count());
            assert!(!short.ends_with('…'), "a typical name is not cut: {short}");
        }
        for w in every(&"x".repeat(300)) {
            let short = w.short();
            assert!(short.chars().count() <= Warning::MAX_SHORT, "{short}");
        }
        assert_eq!(cut("ééé".into(), 2), "é…");
    }
}
