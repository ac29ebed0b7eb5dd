//! Where sidekey puts things in a pod: the names of the volumes and
//! containers it adds and the paths it mounts them at. The mutation writes
//! them; the annotation checks keep pods from colliding with them.

/// The in-memory volume holding the rendered files.
pub const SECRETS_VOLUME: &str = "sidekey-secrets";
/// The projected service-account token the agent logs in with.
pub const TOKEN_VOLUME: &str = "sidekey-token";
/// The in-memory volume the `exec` wrapper binary is copied into.
pub const BIN_VOLUME: &str = "sidekey-bin";
/// The in-memory volume, mounted into the agent only, where it keeps its
/// Vault token and leases across its own restarts.
pub const STATE_VOLUME: &str = "sidekey-state";
/// Where the agent mounts [`STATE_VOLUME`].
pub const STATE_DIR: &str = "/sidekey/state";
/// The agent container (native sidecar, init-only, or legacy regular container).
pub const AGENT_CONTAINER: &str = "sidekey-agent";
/// The legacy shape's one-shot init container.
pub const INIT_CONTAINER: &str = "sidekey-init";
/// The init container that copies the agent binary for `exec` mode.
pub const INSTALL_CONTAINER: &str = "sidekey-install";
/// Where the agent sees its service-account token.
pub const TOKEN_DIR: &str = "/var/run/secrets/sidekey.dev/serviceaccount";
/// Where the `exec` wrapper binary is mounted.
pub const BIN_DIR: &str = "/sidekey/bin";
/// The agent binary inside the agent image.
pub const AGENT_BINARY: &str = "/sidekey-agent";
/// The value of the `status` annotation after injection.
pub const STATUS_INJECTED: &str = "injected";
