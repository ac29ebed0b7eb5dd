//! `sidekey-agent`: logs in to Vault/OpenBao or AWS Secrets Manager with the
//! pod's identity, writes each secret as a file into the in-memory volume and
//! keeps the files current.
//!
//! Not built yet: the agent lands with its own issue. Its configuration
//! schema is [`sidekey::agent_config`].
