//! Vault KV paths, for the agent (which reads them) and `migrate --push`
//! (which writes them): what Vault's mounts endpoint says about a path's
//! mount, and how KV v1 and v2 paths, answers and writes differ. No I/O:
//! the callers make the requests.
//!
//! The mount is found as `vault kv` finds it, through
//! `sys/internal/ui/mounts/<path>`; a token that may not read it leaves the
//! caller to go by the shape of the path (`…/data/…` is KV v2).

use serde_json::{Value, json};

/// Read-your-writes on a cluster of servers (OpenBao 2.7 with Raft; Vault
/// Enterprise's performance standbys), whose standbys answer reads and may
/// lag: a client keeps the `X-Vault-Index` of the last answer that carried
/// one and sends it back with every request, with
/// [`INCONSISTENT`] = `forward-active-node`, so a standby that has not caught
/// up forwards the request to the active server instead of answering from
/// older state. Servers without the feature ignore both headers.
pub const INDEX_HEADER: &str = "X-Vault-Index";
/// The header that says what a lagging standby should do, and its value.
pub const INCONSISTENT: (&str, &str) = ("X-Vault-Inconsistent", "forward-active-node");
/// The longest `X-Vault-Index` a client keeps and sends back (the value is
/// opaque: a small encoded cluster id and Raft index).
pub const MAX_INDEX_BYTES: usize = 1024;

/// The request that names `path`'s mount.
pub fn mount_endpoint(path: &str) -> String {
    format!("sys/internal/ui/mounts/{path}")
}

/// A secrets engine mount, as the mounts endpoint describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Its path, with the trailing `/` (`secret/`).
    pub path: String,
    /// Its engine (`kv`, `generic`, `database`, …).
    pub kind: String,
    /// Whether it is KV version 2.
    pub kv2: bool,
}

impl Mount {
    /// The mount in the endpoint's answer; `None` when it names none.
    pub fn from_answer(v: &Value) -> Option<Mount> {
        let path = v["data"]["path"].as_str().filter(|p| !p.is_empty())?.to_owned();
        let kind = v["data"]["type"].as_str().unwrap_or("").to_owned();
        let kv2 = kind == "kv" && v["data"]["options"]["version"] == "2";
        Some(Mount { path, kind, kv2 })
    }

    /// Whether `path` is on this mount.
    pub fn holds(&self, path: &str) -> bool {
        path.starts_with(&self.path)
    }

    /// Whether it is a KV engine (either version).
    pub fn is_kv(&self) -> bool {
        matches!(self.kind.as_str(), "kv" | "generic")
    }
}

/// How a path on KV is read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvPath {
    /// KV v1, or a path that is not on KV: read and written as is.
    V1,
    /// KV v2: the mount (with its `/`) and the path below `data/`.
    V2 {
        /// The mount, `secret/`.
        mount: String,
        /// The path below `<mount>data/`.
        below: String,
    },
}

/// A path that cannot be used as it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A KV v2 path without `data/` after the mount.
    #[error("vault:{path} is on the KV v2 mount {mount}: KV v2 paths include data/ (vault:{mount}data/{rest})")]
    NoData {
        /// The path.
        path: String,
        /// Its mount.
        mount: String,
        /// The path after the mount.
        rest: String,
    },
    /// A path on an engine that is not KV, where only KV will do.
    #[error("vault:{path} is on a {kind} mount ({mount}), not KV")]
    NotKv {
        /// The path.
        path: String,
        /// The engine.
        kind: String,
        /// Its mount.
        mount: String,
    },
}

impl KvPath {
    /// `path` on `mount` (the mount the endpoint named for it).
    ///
    /// # Errors
    /// [`KvError::NoData`] for a KV v2 path without `data/`.
    pub fn on(path: &str, mount: &Mount) -> Result<KvPath, KvError> {
        if !mount.kv2 {
            return Ok(KvPath::V1);
        }
        let rest = path.strip_prefix(mount.path.as_str()).unwrap_or(path);
        match rest.strip_prefix("data/") {
            Some(below) => Ok(KvPath::V2 { mount: mount.path.clone(), below: below.to_owned() }),
            None => Err(KvError::NoData { path: path.to_owned(), mount: mount.path.clone(), rest: rest.to_owned() }),
        }
    }

    /// `path` by its shape alone, when its mount cannot be known:
    /// `<mount>/data/<below>` is KV v2.
    pub fn by_shape(path: &str) -> KvPath {
        match path.split_once("/data/") {
            Some((mount, below)) => KvPath::V2 { mount: format!("{mount}/"), below: below.to_owned() },
            None => KvPath::V1,
        }
    }

    /// The KV v2 metadata path, whose `current_version` says whether the
    /// secret changed.
    pub fn metadata(&self) -> Option<String> {
        match self {
            KvPath::V2 { mount, below } => Some(format!("{mount}metadata/{below}")),
            KvPath::V1 => None,
        }
    }

    /// The secret's fields and version in a read's answer, taken out of it.
    /// A KV v2 answer whose current version is deleted has null fields.
    pub fn take_fields(&self, answer: &mut Value) -> (Value, Option<u64>) {
        match self {
            KvPath::V2 { .. } => (answer["data"]["data"].take(), answer["data"]["metadata"]["version"].as_u64()),
            KvPath::V1 => (answer["data"].take(), None),
        }
    }

    /// The body of a write of `data`; KV v2 writes check-and-set against
    /// `version` (0: the path must not exist yet).
    pub fn write_body(&self, data: &Value, version: u64) -> Value {
        match self {
            KvPath::V2 { .. } => json!({"options": {"cas": version}, "data": data}),
            KvPath::V1 => data.clone(),
        }
    }
}

/// `path` on the KV v2 mount `mount` (`secret/`) as consul-template reads
/// it for a template: without `data/` (or `metadata/`) after the mount,
/// `data/` is put there (`secret/app` → `secret/data/app`).
pub fn shim_kv2(path: &str, mount: &str) -> String {
    let rest = path.strip_prefix(mount).unwrap_or(path);
    if path == mount.trim_end_matches('/') || rest.is_empty() {
        return format!("{mount}data");
    }
    if rest.starts_with("data/") || rest.starts_with("metadata/") {
        return path.to_owned();
    }
    format!("{mount}data/{rest}")
}

/// Whether a read's answer has the shape of KV v2 (for paths whose mount
/// could not be known).
pub fn looks_like_kv2(answer: &Value) -> bool {
    answer["data"]["metadata"]["version"].is_u64() && answer["data"].get("data").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_paths_get_data_on_kv2_as_consul_template_reads_them() {
        assert_eq!(shim_kv2("secret/app", "secret/"), "secret/data/app");
        assert_eq!(shim_kv2("secret/a/b", "secret/"), "secret/data/a/b");
        assert_eq!(shim_kv2("secret/data/app", "secret/"), "secret/data/app");
        assert_eq!(shim_kv2("secret/metadata/app", "secret/"), "secret/metadata/app");
        assert_eq!(shim_kv2("secret", "secret/"), "secret/data");
        assert_eq!(shim_kv2("team/kv/x", "team/kv/"), "team/kv/data/x");
    }

    fn mount(kind: &str, version: &str) -> Mount {
        Mount::from_answer(&json!({"data": {"path": "secret/", "type": kind, "options": {"version": version}}}))
            .unwrap()
    }

    #[test]
    fn kv2_paths_split_at_data_and_have_a_metadata_path() {
        let p = KvPath::on("secret/data/shop/db", &mount("kv", "2")).unwrap();
        assert_eq!(p, KvPath::V2 { mount: "secret/".into(), below: "shop/db".into() });
        assert_eq!(p.metadata().as_deref(), Some("secret/metadata/shop/db"));
        assert_eq!(KvPath::by_shape("kv/data/a"), KvPath::V2 { mount: "kv/".into(), below: "a".into() });
        assert_eq!(KvPath::by_shape("database/creds/app"), KvPath::V1);
    }

    #[test]
    fn a_kv2_path_without_data_names_the_path_to_use() {
        let e = KvPath::on("secret/shop/db", &mount("kv", "2")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vault:secret/shop/db is on the KV v2 mount secret/: KV v2 paths include data/ (vault:secret/data/shop/db)"
        );
    }

    #[test]
    fn kv1_and_other_engines_are_read_as_they_are() {
        assert_eq!(KvPath::on("secret/shop/db", &mount("kv", "1")), Ok(KvPath::V1));
        let db = mount("database", "");
        assert_eq!(KvPath::on("secret/creds/app", &db), Ok(KvPath::V1));
        assert!(!db.is_kv() && mount("generic", "").is_kv());
        assert_eq!(Mount::from_answer(&json!({"data": {}})), None);
    }

    #[test]
    fn answers_and_writes_differ_by_version() {
        let v2 = KvPath::V2 { mount: "secret/".into(), below: "a".into() };
        let mut answer = json!({"data": {"data": {"k": "v"}, "metadata": {"version": 3}}});
        assert!(looks_like_kv2(&answer));
        assert_eq!(v2.take_fields(&mut answer), (json!({"k": "v"}), Some(3)));
        assert_eq!(KvPath::V1.take_fields(&mut json!({"data": {"k": "v"}})), (json!({"k": "v"}), None));
        assert_eq!(v2.write_body(&json!({"k": "v"}), 3), json!({"options": {"cas": 3}, "data": {"k": "v"}}));
        assert_eq!(KvPath::V1.write_body(&json!({"k": "v"}), 3), json!({"k": "v"}));
    }
}
