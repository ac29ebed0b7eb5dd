//! The `sidekey` command line: `inject` today; `audit` and `migrate` are
//! planned (see the README's roadmap).

pub mod inject;

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
