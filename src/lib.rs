//! # sidekey core
//!
//! Everything every other sidekey crate builds on. Built without default
//! features, as the injector, the agent and the fuzzers use it, it does no
//! I/O at all: no files, no network, no clock, no environment.
//!
//! - [`annotations`]: the `sidekey.dev/` annotation contract, parsed into typed specs;
//! - [`reference`]: the secret reference grammar (`vault:`, `aws-sm:`, bare
//!   Secrets Manager ARNs, `file:`);
//! - [`config`]: the injector's configuration (YAML, unknown keys rejected);
//! - [`agent_config`]: the JSON the injector hands the agent (references and
//!   settings, never a secret value);
//! - [`cert`]: certificates from the PKI engine (`sidekey.dev/cert-<name>`),
//!   the key born in the pod;
//! - [`kv`]: Vault KV v1/v2 paths and mounts, for the agent's reads and
//!   `migrate --push`'s writes;
//! - [`mutate`]: the pod mutation as a pure function over the raw JSON of a pod
//!   template, so that fields unknown to typed Kubernetes structs survive;
//! - [`pod`]: one typed view of a pod spec (containers of every kind, env
//!   sources, inherited security fields) that every reader of pods uses;
//! - [`workload`]: where pod templates live in Pods, Deployments, Jobs, Lists…;
//! - [`patch`]: the RFC 6902 JSON Patch an AdmissionResponse carries;
//! - [`yaml`]: YAML read and written the way `kubectl` does (YAML 1.1 scalars);
//! - [`pss`]: the Pod Security Standard `restricted` checks;
//! - [`secret`]: redacting, zeroizing wrappers for secret bytes;
//! - [`audit`], [`migrate`], [`push`]: what `sidekey audit` and `sidekey
//!   migrate` find and rewrite, as functions over parsed manifests;
//! - [`duration`], [`quantity`], [`names`]: small validated value types.
//!
//! The `sidekey` command line is here too, behind features: `cli` (on by
//! default) adds `cli`, which reads files and stdin and writes stdout;
//! `online` (on by default) adds its Kubernetes, Vault and AWS Secrets
//! Manager clients for `audit --cluster` and `migrate --push`/`--cluster`.
//! `docs/architecture.md` draws the boundary.

pub mod agent_config;
pub mod annotations;
pub mod audit;
pub mod cert;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod contract;
pub mod duration;
pub mod gotemplate;
pub mod kv;
pub mod layout;
pub mod migrate;
pub mod mutate;
pub mod names;
pub mod patch;
pub mod pod;
pub mod pss;
pub mod push;
pub mod quantity;
pub mod reference;
pub mod secret;
pub mod templates;
pub mod vault_k8s;
pub mod workload;
pub mod yaml;

/// The prefix of every annotation sidekey reads or writes.
pub const PREFIX: &str = "sidekey.dev/";
