//! What the agent keeps across its own restarts: its Vault token and the
//! leased secrets it holds, in `<stateDir>/state.json`.
//!
//! A native sidecar that is killed (OOM, a node hiccup, `kill`) is started
//! again by the kubelet. Without this file the new process would log in
//! again and read every dynamic secret again, so each restart would issue
//! new database users while the old ones stay valid until their leases end,
//! and the app would be told to reconnect for nothing. With it the new
//! process adopts the token and the leases (the same username and password
//! stay on disk) and simply goes on renewing them; Vault Agent's persistent
//! cache solves the same problem the same way.
//!
//! The file lives in a volume of its own (`sidekey-state`, an in-memory
//! `emptyDir` that only the agent mounts, never the app: it holds the login
//! token), is written atomically (temp file + rename) with mode 0600, and
//! is read once at start. Anything unreadable, expired or for another
//! configuration is ignored: the agent then starts as if fresh. Static
//! secrets are not kept: re-reading them costs one request and no
//! credential.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::secret::{Lease, SecretValue};

/// The file name inside the state directory.
const FILE: &str = "state.json";

/// A Vault token as kept on disk.
pub struct SavedToken {
    /// The token.
    pub token: SecretString,
    /// Its lifetime when obtained or last renewed.
    pub ttl: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// How long ago it was obtained or last renewed.
    pub age: Duration,
}

/// A leased secret as kept on disk.
pub struct SavedLease {
    /// The lease, its `ttl` being what is left of it now.
    pub lease: Lease,
    /// The lifetime it was issued with (the renewal increment).
    pub issued_ttl: Duration,
    /// The secret's fields.
    pub fields: SecretValue,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Disk {
    /// The Vault address the token and leases belong to.
    vault_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<DiskToken>,
    #[serde(default)]
    leases: BTreeMap<String, DiskLease>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskToken {
    token: String,
    ttl_s: u64,
    renewable: bool,
    /// Seconds since the epoch when `ttl_s` was granted.
    at: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskLease {
    id: String,
    ttl_s: u64,
    renewable: bool,
    issued_ttl_s: u64,
    at: u64,
    fields: Value,
}

impl Drop for DiskToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl Drop for DiskLease {
    fn drop(&mut self) {
        SecretValue::new(std::mem::take(&mut self.fields));
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The largest state file read: a token and the leases of a few hundred
/// secrets fit many times over.
pub const MAX_STATE: u64 = 1024 * 1024;

/// Why a state file was not read (a missing one is not worth a word).
#[derive(Debug)]
struct Untrusted(&'static str);

/// The state file's bytes, when it is what this agent itself writes: a
/// regular file (never followed through a link), owned by the agent's
/// UID, readable by nobody else, at most [`MAX_STATE`] bytes. The volume
/// is out of the pod's reach; this is defence in depth against a file
/// planted there (a token the agent would otherwise adopt).
fn read_private(path: &Path) -> Result<Vec<u8>, Untrusted> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Err(Untrusted("")),
        Err(rustix::io::Errno::LOOP) => return Err(Untrusted("it is a symbolic link")),
        Err(_) => return Err(Untrusted("it cannot be opened")),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|_| Untrusted("it cannot be examined"))?;
    if !meta.is_file() {
        return Err(Untrusted("it is not a regular file"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Untrusted("another user owns it"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(Untrusted("others may read or write it (the agent writes it 0600)"));
    }
    if meta.len() > MAX_STATE {
        return Err(Untrusted("it is larger than 1 MiB"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE + 1).read_to_end(&mut bytes).map_err(|_| Untrusted("it cannot be read"))?;
    if bytes.len() as u64 > MAX_STATE {
        return Err(Untrusted("it is larger than 1 MiB"));
    }
    Ok(bytes)
}

/// The agent's state file; see the module docs. Shared by the Vault
/// backend (the token) and the source tasks (their leases).
pub struct StateStore {
    path: PathBuf,
    disk: Mutex<Disk>,
}

impl StateStore {
    /// Opens the state in `dir` for the Vault at `vault_addr`, reading what
    /// an earlier run of the agent left there (a missing, unreadable or
    /// foreign file counts as empty).
    pub fn open(dir: &Path, vault_addr: &str) -> StateStore {
        let path = dir.join(FILE);
        let text = read_private(&path).map(Zeroizing::new);
        if let Err(Untrusted(why)) = &text
            && !why.is_empty()
        {
            tracing::warn!(path = %path.display(), why, "the saved state is not trusted; starting afresh");
        }
        let disk = match text.as_deref().map(|t| serde_json::from_slice::<Disk>(t)) {
            Ok(Ok(d)) if d.vault_addr == vault_addr => {
                tracing::info!(leases = d.leases.len(), token = d.token.is_some(), "found the state of an earlier run");
                d
            }
            Ok(Ok(_)) => {
                tracing::info!("the saved state is for another Vault address; starting afresh");
                Disk::default()
            }
            Ok(Err(e)) => {
                // Only where, never serde's message: it can quote a value.
                tracing::warn!(path = %path.display(), line = e.line(), column = e.column(), "the saved state is unreadable; starting afresh");
                Disk::default()
            }
            Err(_) => Disk::default(),
        };
        let disk = Disk { vault_addr: vault_addr.to_owned(), ..disk };
        let store = StateStore { path, disk: Mutex::new(disk) };
        // Leases die with the token that made them: without that token
        // they are not worth adopting.
        if store.token().is_none() {
            if let Ok(mut d) = store.disk.lock() {
                d.leases.clear();
            }
        }
        store
    }

    /// The saved token, if it has not expired.
    pub fn token(&self) -> Option<SavedToken> {
        let disk = self.disk.lock().ok()?;
        let t = disk.token.as_ref()?;
        let age = Duration::from_secs(now().saturating_sub(t.at));
        let ttl = Duration::from_secs(t.ttl_s);
        // A token without a TTL (a root token) does not expire.
        if !ttl.is_zero() && age + Duration::from_secs(5) >= ttl {
            return None;
        }
        Some(SavedToken { token: SecretString::from(t.token.clone()), ttl, renewable: t.renewable, age })
    }

    /// Records the current token (after a login or a renewal).
    pub fn set_token(&self, token: &SecretString, ttl: Duration, renewable: bool) {
        self.update(|d| {
            // A new token (a new login): the leases recorded so far belong to
            // the old one and end with it, so a restart must not adopt them
            // as the new token's; they are recorded again as they are
            // replaced.
            if d.token.as_ref().is_some_and(|t| t.token != token.expose_secret()) {
                d.leases.clear();
            }
            d.token =
                Some(DiskToken { token: token.expose_secret().to_owned(), ttl_s: ttl.as_secs(), renewable, at: now() });
        });
    }

    /// The saved lease of `source`, with what is left of it, if it has at
    /// least a few seconds to live (it stays saved: a restart right after
    /// this one adopts it again).
    pub fn lease(&self, source: &str) -> Option<SavedLease> {
        let disk = self.disk.lock().ok()?;
        let l = disk.leases.get(source)?;
        let age = now().saturating_sub(l.at);
        let left = l.ttl_s.checked_sub(age).filter(|left| *left >= 3)?;
        Some(SavedLease {
            lease: Lease { id: l.id.clone(), ttl: Duration::from_secs(left), renewable: l.renewable },
            issued_ttl: Duration::from_secs(l.issued_ttl_s),
            fields: SecretValue::new(l.fields.clone()),
        })
    }

    /// Records that `source` holds `lease` (just issued or renewed to
    /// `lease.ttl`) for `fields`.
    pub fn set_lease(&self, source: &str, lease: &Lease, issued_ttl: Duration, fields: &SecretValue) {
        self.update(|d| {
            d.leases.insert(
                source.to_owned(),
                DiskLease {
                    id: lease.id.clone(),
                    ttl_s: lease.ttl.as_secs(),
                    renewable: lease.renewable,
                    issued_ttl_s: issued_ttl.as_secs(),
                    at: now(),
                    fields: fields.expose_secret().clone(),
                },
            );
        });
    }

    /// Records that `source`'s lease was renewed to `ttl`.
    pub fn renewed(&self, source: &str, ttl: Duration) {
        self.update(|d| {
            if let Some(l) = d.leases.get_mut(source) {
                l.ttl_s = ttl.as_secs();
                l.at = now();
            }
        });
    }

    /// Forgets `source`'s lease (it holds none now).
    pub fn forget(&self, source: &str) {
        if self.disk.lock().is_ok_and(|d| !d.leases.contains_key(source)) {
            return;
        }
        self.update(|d| {
            d.leases.remove(source);
        });
    }

    /// Forgets everything (the token and leases were revoked).
    pub fn clear(&self) {
        if let Ok(mut d) = self.disk.lock() {
            d.token = None;
            d.leases.clear();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Applies `change` and writes the file atomically; a failed write is
    /// logged (the agent works on, it only loses what a restart could adopt).
    fn update(&self, change: impl FnOnce(&mut Disk)) {
        let Ok(mut disk) = self.disk.lock() else { return };
        change(&mut disk);
        let Ok(text) = serde_json::to_vec(&*disk).map(Zeroizing::new) else { return };
        drop(disk);
        if let Err(e) = self.write(&text) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not save the agent's state");
        }
    }

    fn write(&self, text: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(ttl: u64) -> Lease {
        Lease { id: "database/creds/app/abc".into(), ttl: Duration::from_secs(ttl), renewable: true }
    }

    #[test]
    fn a_new_run_adopts_the_token_and_leases_of_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_token(&SecretString::from("hvs.token-value".to_owned()), Duration::from_secs(3600), true);
        let fields = SecretValue::new(json!({"username": "u1", "password": "pw-topsecret"}));
        s.set_lease("vault:database/creds/app", &lease(30), Duration::from_secs(30), &fields);
        s.renewed("vault:database/creds/app", Duration::from_secs(40));
        drop(s);

        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let again = StateStore::open(dir.path(), "https://vault:8200");
        let t = again.token().unwrap();
        assert_eq!(t.token.expose_secret(), "hvs.token-value");
        assert!(t.renewable && t.ttl == Duration::from_secs(3600));
        let l = again.lease("vault:database/creds/app").unwrap();
        assert_eq!(l.lease.id, "database/creds/app/abc");
        assert!(l.lease.ttl <= Duration::from_secs(40) && l.lease.ttl >= Duration::from_secs(38));
        assert_eq!(l.issued_ttl, Duration::from_secs(30));
        assert_eq!(l.fields.expose_secret()["password"], "pw-topsecret");
        drop(again);
        assert!(StateStore::open(dir.path(), "https://vault:8200").lease("vault:database/creds/app").is_some());
    }

    #[test]
    fn a_new_login_drops_the_leases_of_the_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_token(&SecretString::from("first".to_owned()), Duration::from_secs(3600), true);
        s.set_lease("a", &lease(30), Duration::from_secs(30), &SecretValue::new(json!({})));
        s.set_token(&SecretString::from("first".to_owned()), Duration::from_secs(3600), true);
        assert!(StateStore::open(dir.path(), "https://vault:8200").lease("a").is_some(), "a renewal keeps them");
        s.set_token(&SecretString::from("second".to_owned()), Duration::from_secs(3600), true);
        assert!(StateStore::open(dir.path(), "https://vault:8200").lease("a").is_none());
    }

    #[test]
    fn leases_without_a_saved_token_are_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_lease("a", &lease(30), Duration::from_secs(30), &SecretValue::new(json!({"k": "v"})));
        drop(s);
        // No token saved: the lease cannot be renewed by anyone, so it is dropped.
        assert!(StateStore::open(dir.path(), "https://vault:8200").lease("a").is_none());
    }

    #[test]
    fn expired_foreign_or_broken_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_token(&SecretString::from("t".to_owned()), Duration::from_secs(3), true);
        s.set_lease("a", &lease(2), Duration::from_secs(2), &SecretValue::new(json!({})));
        drop(s);
        let s = StateStore::open(dir.path(), "https://vault:8200");
        assert!(s.token().is_none(), "a token about to expire is not adopted");
        assert!(s.lease("a").is_none(), "a lease about to end is not adopted");

        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_token(&SecretString::from("t".to_owned()), Duration::from_secs(3600), true);
        drop(s);
        assert!(StateStore::open(dir.path(), "https://other:8200").token().is_none());
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(StateStore::open(dir.path(), "https://vault:8200").token().is_none());
    }

    #[test]
    fn a_planted_state_file_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "https://vault:8200");
        s.set_token(&SecretString::from("planted".to_owned()), Duration::from_secs(3600), true);
        drop(s);
        let file = dir.path().join(FILE);
        let adopted = || StateStore::open(dir.path(), "https://vault:8200").token().is_some();
        assert!(adopted(), "the agent's own file is adopted");

        // Readable by others: not what the agent writes.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!adopted(), "a file others may read is not adopted");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

        // A link to the same content, elsewhere.
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::rename(&file, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert!(!adopted(), "a state file is never read through a link");
        std::fs::remove_file(&file).unwrap();

        // A directory, and a file past the size bound.
        std::fs::create_dir(&file).unwrap();
        assert!(!adopted());
        std::fs::remove_dir(&file).unwrap();
        let text = std::fs::read_to_string(&elsewhere).unwrap();
        let padded = format!("{}{}", text, " ".repeat(MAX_STATE as usize));
        std::fs::write(&file, padded).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!adopted(), "a file past 1 MiB is not read");
    }
}
