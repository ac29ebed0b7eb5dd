//! `sidekey-injector`: the HTTPS mutating admission webhook that runs
//! [`sidekey::mutate`] for every pod creation.
//!
//! Not built yet: the webhook server lands with its own issue. Until then,
//! `sidekey inject` applies the same mutation to manifests offline.
