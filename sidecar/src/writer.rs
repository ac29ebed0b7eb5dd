//! The atomic writer: kubelet's layout for Secret and ConfigMap volumes
//! (`pkg/volume/util/atomic_writer.go`), so a reader never sees a partial or
//! mixed set of files.
//!
//! ```text
//! <mount>/..2026_11_27_08_10_00.482913771/db-password   the files of one version
//! <mount>/..data -> ..2026_11_27_08_10_00.482913771      swapped by rename(2)
//! <mount>/db-password -> ..data/db-password              stable names for the app
//! ```
//!
//! A new version is written completely into a fresh timestamped directory,
//! then `..data` is repointed with one `rename`, then the old directory is
//! removed. An app that resolves `..data` once (or reads one file) always
//! gets one consistent version.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::secret::SecretBytes;

/// The name of the symlink that points at the current version.
pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a payload.
pub struct PayloadFile {
    /// The content.
    pub content: SecretBytes,
    /// Octal mode, e.g. `0o440`.
    pub mode: u32,
}

/// A whole set of files: top-level name → file, or name → directory of files.
#[derive(Default)]
pub struct Payload {
    /// Top-level files.
    pub files: BTreeMap<String, PayloadFile>,
    /// Top-level directories and their files (mapped `envFrom` secrets).
    pub dirs: BTreeMap<String, BTreeMap<String, PayloadFile>>,
}

impl Payload {
    fn names(&self) -> impl Iterator<Item = &String> {
        self.files.keys().chain(self.dirs.keys())
    }
}

/// Why a payload could not be written. The previous version stays in place.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A name would leave the target directory.
    #[error("refusing file name {0:?}: names must not contain '/' or start with '..'")]
    BadName(String),
    /// The filesystem refused.
    #[error("writing {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io { path: path.to_owned(), source }
}

fn check_name(name: &str) -> Result<(), WriteError> {
    if name.is_empty() || name.contains('/') || name.starts_with("..") || name == "." {
        return Err(WriteError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Writes payloads into one directory (the tmpfs mount).
pub struct AtomicWriter {
    root: PathBuf,
}

impl AtomicWriter {
    /// A writer for `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        AtomicWriter { root: root.into() }
    }

    /// The directory written to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn write_file(path: &Path, file: &PayloadFile) -> Result<(), WriteError> {
        let mut f =
            fs::OpenOptions::new().write(true).create_new(true).mode(file.mode).open(path).map_err(io_err(path))?;
        f.write_all(file.content.expose_secret()).map_err(io_err(path))?;
        // The umask may have removed bits the config asked for.
        fs::set_permissions(path, fs::Permissions::from_mode(file.mode)).map_err(io_err(path))?;
        Ok(())
    }

    fn new_version_dir(&self) -> PathBuf {
        // Keep in step with `is_version_name`.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Seconds and nanoseconds since the epoch; a random suffix keeps two
        // writes in the same nanosecond apart.
        self.root.join(format!("..{}.{:09}.{:04x}", now.as_secs(), now.subsec_nanos(), fastrand::u16(..)))
    }

    /// Writes `payload` as the new current version; on error the previous
    /// version stays current and the partial new one is removed.
    ///
    /// # Errors
    /// [`WriteError`] with the path that failed.
    pub fn write(&self, payload: &Payload) -> Result<(), WriteError> {
        for name in payload.names() {
            check_name(name)?;
        }
        for files in payload.dirs.values() {
            for name in files.keys() {
                check_name(name)?;
            }
        }
        let version = self.new_version_dir();
        let result = self.write_version(&version, payload);
        if result.is_err() {
            let _ = fs::remove_dir_all(&version);
            return result;
        }
        self.swap(&version, payload)
    }

    fn write_version(&self, version: &Path, payload: &Payload) -> Result<(), WriteError> {
        fs::DirBuilder::new().mode(0o755).create(version).map_err(io_err(version))?;
        fs::set_permissions(version, fs::Permissions::from_mode(0o755)).map_err(io_err(version))?;
        for (name, file) in &payload.files {
            Self::write_file(&version.join(name), file)?;
        }
        for (dir, files) in &payload.dirs {
            let d = version.join(dir);
            fs::DirBuilder::new().mode(0o755).create(&d).map_err(io_err(&d))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).map_err(io_err(&d))?;
            for (name, file) in files {
                Self::write_file(&d.join(name), file)?;
            }
        }
        Ok(())
    }

    fn swap(&self, version: &Path, payload: &Payload) -> Result<(), WriteError> {
        let data = self.root.join(DATA_DIR);
        let old = fs::read_link(&data).ok();
        let tmp = self.root.join(DATA_TMP);
        let _ = fs::remove_file(&tmp);
        let target = version.file_name().map(PathBuf::from).unwrap_or_default();
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &data).map_err(io_err(&data))?;

        // Stable names for the app; stale ones removed.
        for name in payload.names() {
            let link = self.root.join(name);
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link).map_err(io_err(&link))?;
            }
        }
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("..") {
                    continue;
                }
                let is_ours = fs::read_link(e.path()).is_ok_and(|t| t.starts_with(DATA_DIR));
                if is_ours && !payload.files.contains_key(&name) && !payload.dirs.contains_key(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // Remove the previous version only if it is one of ours: a plain
        // name of our pattern, a real directory in the mount. A `..data`
        // planted to point elsewhere (`../../etc`) is replaced, never followed.
        if let Some(old) = old.filter(|o| *o != target && is_version_name(o)) {
            let path = self.root.join(old);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                let _ = fs::remove_dir_all(path);
            }
        }
        Ok(())
    }

    /// Whether every `name` exists through the current version.
    pub fn has_all<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        names.into_iter().all(|n| self.root.join(n).exists())
    }
}

/// Whether `name` is a version directory name this writer makes:
/// `..<seconds>.<9-digit nanoseconds>.<4 hex digits>`, one path component.
fn is_version_name(name: &Path) -> bool {
    let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("..")) else { return false };
    let parts: Vec<&str> = rest.split('.').collect();
    matches!(parts.as_slice(), [secs, nanos, suffix]
        if !secs.is_empty() && secs.bytes().all(|b| b.is_ascii_digit())
            && nanos.len() == 9 && nanos.bytes().all(|b| b.is_ascii_digit())
            && suffix.len() == 4 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> PayloadFile {
        PayloadFile { content: SecretBytes::new(s.as_bytes().to_vec()), mode }
    }

    fn payload(pairs: &[(&str, &str)]) -> Payload {
        let mut p = Payload::default();
        for (k, v) in pairs {
            p.files.insert((*k).into(), file(v, 0o440));
        }
        p
    }

    #[test]
    fn writes_the_kubelet_layout_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let mut p = payload(&[("a", "1"), ("b", "2")]);
        p.dirs.insert("keys".into(), BTreeMap::from([("K1".to_owned(), file("x", 0o400))]));
        w.write(&p).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.path().join("keys/K1")).unwrap(), "x");
        assert_eq!(fs::read_link(dir.path().join("a")).unwrap(), Path::new("..data/a"));
        let version = fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        assert!(version.to_string_lossy().starts_with(".."));
        let meta = fs::metadata(dir.path().join(&version).join("a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        assert!(w.has_all(["a", "b", "keys"]));
    }

    #[test]
    fn never_follows_a_planted_data_link_out_of_the_mount() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("keep"), "x").unwrap();
        let root = outside.path().join("mount");
        fs::create_dir(&root).unwrap();
        let w = AtomicWriter::new(&root);
        w.write(&payload(&[("a", "1")])).unwrap();
        for planted in ["../victim", "..1.000000000.abcd/../../victim"] {
            fs::remove_file(root.join(DATA_DIR)).unwrap();
            std::os::unix::fs::symlink(planted, root.join(DATA_DIR)).unwrap();
            w.write(&payload(&[("a", "2")])).unwrap();
            assert!(victim.join("keep").exists(), "the writer removed a directory it does not own ({planted})");
            assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "2");
        }
        assert!(is_version_name(Path::new("..1764380000.123456789.0a1f")));
        assert!(!is_version_name(Path::new("..data")) && !is_version_name(Path::new("../x")));
    }

    #[test]
    fn swaps_versions_and_removes_old_ones_and_stale_names() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("a", "1"), ("b", "2")])).unwrap();
        let v1 = fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        w.write(&payload(&[("a", "3")])).unwrap();
        let v2 = fs::read_link(dir.path().join(DATA_DIR)).unwrap();
        assert_ne!(v1, v2);
        assert!(!dir.path().join(&v1).exists());
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "3");
        assert!(fs::symlink_metadata(dir.path().join("b")).is_err());
        let versions = fs::read_dir(dir.path()).unwrap().filter(|e| {
            let n = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with("..") && n != DATA_DIR
        });
        assert_eq!(versions.count(), 1);
    }

    #[test]
    fn refuses_names_that_escape_and_keeps_the_old_version_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        w.write(&payload(&[("a", "1")])).unwrap();
        for bad in ["../x", "a/b", "..data", ""] {
            assert!(matches!(w.write(&payload(&[(bad, "x")])), Err(WriteError::BadName(_))), "{bad}");
        }
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "1");
    }

    #[test]
    fn a_reader_never_sees_a_mixed_set() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let w = AtomicWriter::new(&root);
        w.write(&payload(&[("user", "u0"), ("pass", "p0")])).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Resolve ..data once, then read both files of that version.
                    let Ok(v) = fs::read_link(root.join(DATA_DIR)) else { continue };
                    let (Ok(u), Ok(p)) = (
                        fs::read_to_string(root.join(&v).join("user")),
                        fs::read_to_string(root.join(&v).join("pass")),
                    ) else {
                        continue; // that version was just removed; resolve again
                    };
                    assert_eq!(u[1..], p[1..], "mixed set: {u} {p}");
                    reads += 1;
                }
                reads
            })
        };
        for i in 1..=200 {
            w.write(&payload(&[("user", &format!("u{i}")), ("pass", &format!("p{i}"))])).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
    }
}
