//! Test support for sidekey: finds the tools `make testenv` installed and
//! (in later modules) starts real servers on loopback for the tests.
//!
//! A missing tool is a test failure with a message saying how to install it,
//! never a silent skip.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::path::PathBuf;

/// The cache directory `scripts/testenv.sh` installs into.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SIDEKEY_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/sidekey")
    })
}

/// The path of a tool installed by `make testenv`, from its env var
/// (`SIDEKEY_BAO`, …) or from `$SIDEKEY_CACHE/env.sh`.
///
/// # Panics
/// When the tool is not installed, with the command that installs it.
pub fn tool(var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let env_file = cache_dir().join("env.sh");
    let text = std::fs::read_to_string(&env_file).unwrap_or_default();
    let prefix = format!("export {var}=");
    let found = text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| PathBuf::from(v.trim_matches('"')));
    match found {
        Some(p) if p.exists() => p,
        _ => panic!(
            "test tool {var} is not installed ({} has no usable entry): run `make testenv` (or `make test`, which runs it)",
            env_file.display()
        ),
    }
}

/// The shared example corpus (`../shared/corpus` beside the repository, or
/// `$SIDEKEY_CORPUS`).
///
/// # Panics
/// When it is missing.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("SIDEKEY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        dir.join("valid").is_dir(),
        "the example corpus is missing at {}: check out shared/ beside the repository or set SIDEKEY_CORPUS",
        dir.display()
    );
    dir
}

/// The YAML files of a corpus subdirectory, sorted.
pub fn corpus_files(sub: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {sub}");
    files
}
