//! The `sidekey` command line: `inject` and `audit`.

use std::io::Read;
use std::path::PathBuf;

pub mod audit;
pub mod inject;

/// Expands `-f` arguments: `-` and files as given, directories recursively
/// (`*.yaml`, `*.yml`, `*.json`, sorted).
///
/// # Errors
/// When a directory cannot be listed.
pub fn collect_files(path: &PathBuf, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.as_os_str() == "-" || !path.is_dir() {
        out.push(path.clone());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads a file, or stdin for `-`.
///
/// # Errors
/// When it cannot be read.
pub fn read_input(path: &PathBuf) -> std::io::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Exit codes, after BSD `sysexits.h`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input is not valid (a workload sidekey refuses, YAML that does not parse).
    pub const INVALID_INPUT: u8 = 1;
    /// Bad configuration (`--config`).
    pub const CONFIG: u8 = 64;
    /// An input file cannot be read.
    pub const NO_INPUT: u8 = 66;
    /// Output cannot be written.
    pub const IO: u8 = 74;
}
