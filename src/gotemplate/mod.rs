//! Go `text/template`, the subset Vault Agent (consul-template) templates
//! are written in, evaluated over JSON values: text and `{{ }}` actions
//! (custom delimiters, `{{-`/`-}}` trimming, `{{/* */}}` comments),
//! `if`/`else if`/`else`, `with`, `range` (with `$k, $v :=`), variables,
//! `$`, pipelines with `|`, parenthesised pipelines, and the functions of
//! `funcs` (one table, as Go's `builtins()`). Values print as Go's `%v` does: maps as `map[k:v …]` with
//! sorted keys, lists as `[a b]`, null as `<nil>`, a missing map key as
//! `<no value>`.
//!
//! Hostile templates are bounded: the template's size, the nesting depth,
//! the evaluation steps and the output size all have limits, and every
//! error names the line and column (parse) or the function or field
//! (execution) — never a value, which may be a secret's. Reading secrets goes through [`Resolver`], so the core
//! stays free of I/O; the paths a template reads are found without
//! running it ([`Template::secret_calls`]).
//!
//! The parts follow Go's own seams (`text/template/parse/lex.go`,
//! `node.go`, `parse.go`, then `exec.go` and `funcs.go`): `lex` turns the
//! text into tokens, `parse` the tokens into `node`s, `calls` finds the
//! `secret` calls, `exec` runs the nodes over `value`s, `funcs` holds every
//! built-in function.

use serde_json::Value;

mod calls;
mod exec;
mod funcs;
mod lex;
mod node;
mod parse;
mod value;

pub use calls::SecretCall;
pub use value::go_format;

use node::Node;

/// The largest template accepted.
pub const MAX_TEMPLATE: usize = 256 * 1024;
/// The deepest nesting of blocks and parentheses.
pub const MAX_DEPTH: usize = 64;
/// The most evaluation steps (actions, block iterations, function calls).
pub const MAX_STEPS: u64 = 1_000_000;
/// The largest output, and the largest text any function builds.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// The most items a function builds into a list (`split`).
pub const MAX_ITEMS: usize = 65_536;
/// The most distinct `secret`/`pkiCert` calls in one template: each is a
/// request the agent sends and a path the policy checks.
pub const MAX_CALLS: usize = 100;

/// Why a template could not be parsed or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The template is malformed.
    #[error("template: line {line}, column {col}: {reason}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        col: usize,
        /// What is wrong.
        reason: String,
    },
    /// Running it failed.
    #[error("template: {0}")]
    Exec(String),
}

/// Where a template's `secret` and `env` calls are answered.
pub trait Resolver {
    /// The secret at `path` as consul-template shows it (`Data`,
    /// `LeaseID`, `LeaseDuration`, `Renewable`, `Warnings`); with
    /// `args` (`k=v`), a write, as for PKI issuing.
    ///
    /// # Errors
    /// A message naming the path.
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String>;

    /// The environment variable `name` (empty when unset).
    fn env(&mut self, name: &str) -> String {
        let _ = name;
        String::new()
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[cfg(test)]
mod tests;
