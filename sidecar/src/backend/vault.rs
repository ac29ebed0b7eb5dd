//! The Vault / OpenBao backend over its HTTP API
//! (<https://developer.hashicorp.com/vault/api-docs>; OpenBao is the same).
//!
//! One login at a time; the token is renewed ahead of expiry and replaced by
//! a new login when renewal stops working. A new token does not re-read
//! anything: static secrets keep their version checks and leases keep being
//! renewed with whichever token is current. Because Vault revokes the leases
//! of a token when that token ends, the end of an old token (known once its
//! renewal is capped) becomes a deadline for the leases it created.
//!
//! Why not vaultrs: its typed reads strip `lease_id`/`lease_duration` from
//! responses and it has no `sys/leases/renew`, both essential here; this
//! module uses the same transport (reqwest on rustls) directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sidekey::agent_config::{VaultAuth, VaultConfig};
use sidekey::cert::CertRequest;
use sidekey::kv::{self, KvPath, Mount};
use sidekey::reference::Reference;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{BackendError, CertTimes, Fetched, Lease};
use crate::metrics::Metrics;
use crate::schedule::{Backoff, capped, jitter, renew_after};
use crate::secret::Secret;
use crate::state::StateStore;

/// The login generation of a token adopted from an earlier run of the agent
/// (the leases adopted with it belong to it).
pub const ADOPTED_GENERATION: u64 = 1;

struct TokenState {
    token: Option<SecretString>,
    generation: u64,
    ttl: Duration,
    renewable: bool,
    obtained: Instant,
}

/// A Vault connection with its login.
pub struct Vault {
    http: reqwest::Client,
    addr: String,
    namespace: Option<String>,
    /// Where the agent logs in, when not in `namespace`.
    auth_namespace: Option<String>,
    auth: VaultAuth,
    state: Mutex<TokenState>,
    deadlines: std::sync::Mutex<HashMap<u64, Instant>>,
    changes: watch::Sender<u64>,
    /// Mounts seen so far. Vault refuses overlapping
    /// mounts, so a known mount path that prefixes a path is its mount.
    mounts: Mutex<Vec<Mount>>,
    metrics: Arc<Metrics>,
    /// Where the token is kept across restarts, when configured.
    store: Option<Arc<StateStore>>,
    /// Requests in flight at once: at most [`CONNECTIONS`], so at most that
    /// many connections (reqwest opens one per concurrent HTTP/1.1 request).
    in_flight: tokio::sync::Semaphore,
    /// Held after 429 / 503.
    throttle: crate::throttle::Throttle,
    /// The storage index (`X-Vault-Index`) of the last write Vault answered
    /// (a login, a credential, a renewal): sent with every request, with
    /// `X-Vault-Inconsistent: forward-active-node`, so a standby serving
    /// reads (OpenBao 2.7 with Raft; Vault Enterprise's performance
    /// standbys) that has not caught up forwards the request to the active
    /// server instead of answering from older state (a token it does not
    /// know yet). Servers without the headers ignore them.
    index: std::sync::Mutex<Option<reqwest::header::HeaderValue>>,
}

/// The most connections an agent opens to Vault: a pod's first reads go
/// two at a time (the server, not the agent, bounds a start), so a fleet of
/// N agents holds at most 2N server connections, and none once idle.
pub const CONNECTIONS: usize = 2;

/// How long an idle connection is kept: through a burst of requests (a
/// start, a refresh tick's checks) and closed soon after, so an agent holds
/// no connection between refreshes. Keeping at most one idle connection
/// instead closed and reopened connections in the middle of a burst.
pub const IDLE: Duration = Duration::from_secs(5);

/// `e` with the certificate it was for in front.
fn name_cert(e: BackendError, cert: &CertRequest) -> BackendError {
    match e {
        BackendError::Transient(m) => BackendError::Transient(format!("certificate {cert}: {m}")),
        BackendError::Denied(m) => BackendError::Denied(format!("certificate {cert}: {m}")),
        BackendError::Permanent(m) => BackendError::Permanent(format!("certificate {cert}: {m}")),
    }
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

fn errors_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error detail".into())
}

impl Vault {
    /// A client for `config`; logs in lazily, unless `store` holds a token
    /// of an earlier run, which it adopts (a refused one is replaced by a
    /// login, as any refused token is).
    ///
    /// # Errors
    /// When the CA bundle cannot be read or the HTTP client not built.
    pub fn new(config: &VaultConfig, metrics: Arc<Metrics>, store: Option<Arc<StateStore>>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            // A redirect would carry X-Vault-Token to wherever it points
            // (reqwest strips only standard credential headers), even from
            // https to http: never follow one (Vault forwards requests from
            // standbys itself).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(CONNECTIONS)
            .user_agent(concat!("sidekey-agent/", env!("CARGO_PKG_VERSION")));
        // Trust exactly what is needed: nothing for plain HTTP (no system
        // store to load at start), the configured CA bundle when there is
        // one (a private Vault CA should not be joined by every public CA),
        // the system roots otherwise.
        let mut certs = Vec::new();
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| format!("vault.caCert {ca}: {e}"))?;
            let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("vault.caCert {ca}: {e}"))?;
            if found.is_empty() {
                return Err(format!("vault.caCert {ca}: no PEM certificate in it"));
            }
            certs.extend(found);
        }
        if let Some(pem) = &config.ca_pem {
            let found =
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| format!("vault.caPem: {e}"))?;
            if found.is_empty() {
                return Err("vault.caPem: no PEM certificate in it".to_owned());
            }
            certs.extend(found);
        }
        if !certs.is_empty() {
            builder = builder.tls_certs_only(certs);
        } else if config.addr.starts_with("http://") {
            builder = builder.tls_certs_only([]);
        }
        let http = builder.build().map_err(|e| format!("vault HTTP client: {e}"))?;
        let (changes, _) = watch::channel(0);
        let mut state =
            TokenState { token: None, generation: 0, ttl: Duration::ZERO, renewable: false, obtained: Instant::now() };
        if let Some(saved) = store.as_ref().and_then(|s| s.token()) {
            tracing::info!(
                ttl_s = saved.ttl.as_secs(),
                age_s = saved.age.as_secs(),
                "adopted the Vault token of the previous run"
            );
            state = TokenState {
                token: Some(saved.token),
                generation: ADOPTED_GENERATION,
                ttl: saved.ttl,
                renewable: saved.renewable,
                obtained: Instant::now().checked_sub(saved.age).unwrap_or_else(Instant::now),
            };
        }
        Ok(Vault {
            http,
            addr: config.addr.trim_end_matches('/').to_owned(),
            namespace: config.namespace.clone(),
            auth_namespace: config.auth_namespace.clone(),
            auth: config.auth.clone(),
            state: Mutex::new(state),
            deadlines: std::sync::Mutex::default(),
            changes,
            mounts: Mutex::default(),
            metrics,
            store,
            in_flight: tokio::sync::Semaphore::new(CONNECTIONS),
            throttle: crate::throttle::Throttle::default(),
            index: std::sync::Mutex::default(),
        })
    }

    /// Keeps the current token for a restart of the agent.
    fn save_token(&self, state: &TokenState) {
        if let (Some(store), Some(token)) = (&self.store, &state.token) {
            store.set_token(token, state.ttl, state.renewable);
        }
    }

    /// Changes whenever the login changes or an old token's end is known.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// When the token of login `generation` ends, if that is known.
    pub fn token_deadline(&self, generation: u64) -> Option<Instant> {
        self.deadlines.lock().ok()?.get(&generation).copied()
    }

    /// One request; `auth`: in the namespace where the agent logs in (the
    /// login and its token's own endpoints), else in the secrets' namespace.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), BackendError> {
        let auth = path.starts_with("auth/");
        let mut req = self.http.request(method.clone(), format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose_secret());
        }
        let namespace =
            if auth { self.auth_namespace.as_ref().or(self.namespace.as_ref()) } else { self.namespace.as_ref() };
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(index) = self.index.lock().ok().and_then(|i| i.clone()) {
            req = req.header(kv::INDEX_HEADER, index).header(kv::INCONSISTENT.0, kv::INCONSISTENT.1);
        }
        let _permit = self.in_flight.acquire().await;
        self.throttle.wait().await;
        self.metrics.request("vault");
        let resp = req.send().await.map_err(|e| {
            BackendError::Transient(format!(
                "{method} {path}: {}",
                if e.is_timeout() { "timed out".into() } else { short(&e.without_url().to_string()) }
            ))
        })?;
        let status = resp.status();
        if let Some(index) = resp.headers().get(kv::INDEX_HEADER).filter(|v| v.len() <= kv::MAX_INDEX_BYTES)
            && let Ok(mut kept) = self.index.lock()
        {
            *kept = Some(index.clone());
        }
        if matches!(status.as_u16(), 429 | 503) {
            let asked = crate::throttle::retry_after(
                resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
            );
            let delay = self.throttle.slow_down(asked);
            self.metrics.throttled("vault");
            tracing::debug!(%method, path, status = status.as_u16(), delay_ms = delay.as_millis() as u64, "Vault asked to slow down");
        } else {
            self.throttle.ok();
        }
        let text = resp.text().await.map_err(|e| {
            BackendError::Transient(format!("{method} {path}: reading the response: {}", e.without_url()))
        })?;
        // The connection goes back to the pool in a task of its own once
        // the response has ended; let it run before the next request may
        // start, or that request would open a third connection.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        Ok((status, text))
    }

    async fn login(&self, state: &mut TokenState) -> Result<(), BackendError> {
        let (body, path) = match &self.auth {
            // Both send the pod's projected token; Kubernetes auth has
            // Vault check it with the cluster's TokenReview, JWT auth with
            // the cluster's public keys.
            VaultAuth::Kubernetes { mount, role, token_path } | VaultAuth::Jwt { mount, role, token_path } => {
                // Projected tokens rotate: read the file at every login.
                let jwt = Zeroizing::new(tokio::fs::read_to_string(token_path).await.map_err(|e| {
                    BackendError::Transient(format!("reading the service-account token {token_path}: {e}"))
                })?);
                (Some(json!({"role": role, "jwt": jwt.trim()})), format!("auth/{mount}/login"))
            }
            VaultAuth::Token { token_path } => {
                let token = Zeroizing::new(
                    tokio::fs::read_to_string(token_path)
                        .await
                        .map_err(|e| BackendError::Permanent(format!("reading the Vault token {token_path}: {e}")))?,
                );
                let token = SecretString::from(token.trim().to_owned());
                let (status, text) = self.send(Method::GET, "auth/token/lookup-self", Some(&token), None).await?;
                let text = Zeroizing::new(text);
                if !status.is_success() {
                    self.metrics.login(false);
                    return Err(self.classify("token lookup-self", status, &text));
                }
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                state.generation += 1;
                state.token = Some(token);
                state.ttl = Duration::from_secs(v["data"]["ttl"].as_u64().unwrap_or(0));
                state.renewable = v["data"]["renewable"].as_bool().unwrap_or(false);
                state.obtained = Instant::now();
                self.save_token(state);
                self.metrics.login(true);
                let _ = self.changes.send(state.generation);
                tracing::info!(
                    generation = state.generation,
                    ttl_s = state.ttl.as_secs(),
                    "using the Vault token from the token file"
                );
                return Ok(());
            }
        };
        let (status, text) = self.send(Method::POST, &path, None, body.as_ref()).await?;
        drop(body);
        let text = Zeroizing::new(text);
        if !status.is_success() {
            self.metrics.login(false);
            return Err(self.classify(&format!("login at {path}"), status, &text));
        }
        let mut v: Value = serde_json::from_str(&text).unwrap_or_default();
        let token = v["auth"]["client_token"].as_str().map(|t| SecretString::from(t.to_owned()));
        let Some(token) = token else {
            return Err(BackendError::Permanent(format!("login at {path}: the response has no token")));
        };
        state.generation += 1;
        state.token = Some(token);
        state.ttl = Duration::from_secs(v["auth"]["lease_duration"].as_u64().unwrap_or(0));
        state.renewable = v["auth"]["renewable"].as_bool().unwrap_or(false);
        state.obtained = Instant::now();
        self.save_token(state);
        crate::secret::SecretValue::new(std::mem::take(&mut v));
        self.metrics.login(true);
        let _ = self.changes.send(state.generation);
        tracing::info!(
            generation = state.generation,
            ttl_s = state.ttl.as_secs(),
            renewable = state.renewable,
            "logged in to Vault"
        );
        Ok(())
    }

    /// A token adopted from the state file is kept only when it is one
    /// this agent's login gives: with Kubernetes or JWT auth, its lookup
    /// shows `auth/<mount>/login` and the configured role; with token auth,
    /// it is the token in the token file. Anything else (a token planted
    /// in the file, one of another role) is dropped with the leases saved
    /// beside it, and the agent logs in. When Vault cannot be asked now,
    /// the token is kept: the file passed the owner and mode checks, and a
    /// restart during an outage should still serve.
    pub async fn check_adopted(&self) {
        let mut state = self.state.lock().await;
        let Some(token) = state.token.clone().filter(|_| state.generation == ADOPTED_GENERATION) else { return };
        let expected = match &self.auth {
            VaultAuth::Kubernetes { mount, role, .. } | VaultAuth::Jwt { mount, role, .. } => {
                (format!("auth/{mount}/login"), role.as_str())
            }
            VaultAuth::Token { token_path } => {
                // The token file is the login: the adopted token must be the one in it.
                let file = tokio::fs::read_to_string(token_path).await.map(Zeroizing::new);
                if !file.is_ok_and(|f| f.trim() == token.expose_secret()) {
                    tracing::warn!("the adopted token is not the one in the token file; dropping it and its leases");
                    self.drop_adopted(&mut state);
                }
                return;
            }
        };
        let (status, text) = match self.send(Method::GET, "auth/token/lookup-self", Some(&token), None).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the adopted token; keeping it");
                return;
            }
        };
        let text = Zeroizing::new(text);
        let mut v: Value = serde_json::from_str(&text).unwrap_or_default();
        let (path, role) = expected;
        let matches = status.is_success() && v["data"]["path"] == path && v["data"]["meta"]["role"] == role;
        crate::secret::SecretValue::new(std::mem::take(&mut v));
        if !matches {
            tracing::warn!(
                status = status.as_u16(),
                "the adopted token is not one this agent's login issues; dropping it and the leases saved with it"
            );
            self.drop_adopted(&mut state);
        }
    }

    fn drop_adopted(&self, state: &mut TokenState) {
        state.token = None;
        if let Some(store) = &self.store {
            store.clear();
        }
    }

    /// The current token, logging in when there is none.
    async fn token(&self) -> Result<(SecretString, u64), BackendError> {
        let mut state = self.state.lock().await;
        if state.token.is_none() {
            self.login(&mut state).await?;
        }
        Ok((state.token.clone().unwrap_or_else(|| SecretString::from(String::new())), state.generation))
    }

    /// Drops the token of `generation` (refused or revoked), so the next call logs in.
    async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation && state.token.is_some() {
            tracing::warn!(generation, "Vault refused the token; logging in again");
            state.token = None;
        }
    }

    fn classify(&self, what: &str, status: StatusCode, body: &str) -> BackendError {
        let detail = short(&errors_of(body));
        match status.as_u16() {
            403 => BackendError::Denied(format!("{what}: permission denied ({detail})")),
            404 => BackendError::Permanent(format!("{what}: not found")),
            400 | 405 => BackendError::Permanent(format!("{what}: {detail}")),
            429 => BackendError::Transient(format!("{what}: rate limited")),
            // A standby that has not reached the agent's last write, on a
            // server set to refuse instead of forwarding.
            412 => BackendError::Transient(format!("{what}: the server has not caught up with the agent's last write")),
            // A standby that cannot forward to the active server (during a
            // leader change) answers 307 with the active server's address:
            // asked again at vault.addr soon, never followed.
            307 => BackendError::Transient(format!(
                "{what}: Vault answered with a redirect (HTTP 307, a standby during a leader change); sidekey does not follow redirects, the token would go along: trying vault.addr again"
            )),
            300..=399 => BackendError::Permanent(format!(
                "{what}: Vault answered with a redirect (HTTP {status}); sidekey does not follow redirects, the token would go along: point vault.addr at the address that answers"
            )),
            s => BackendError::Transient(format!("{what}: HTTP {s} ({detail})")),
        }
    }

    /// A call with the current token; a refused token is replaced once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Zeroizing<String>, u64), BackendError> {
        let mut last = None;
        for _ in 0..2 {
            let (token, generation) = self.token().await?;
            let (status, text) = self.send(method.clone(), path, Some(&token), body).await?;
            let text = Zeroizing::new(text);
            if status.is_success() {
                return Ok((text, generation));
            }
            let err = self.classify(&format!("{method} {path}"), status, &text);
            if matches!(err, BackendError::Denied(_)) {
                self.invalidate(generation).await;
                last = Some(err);
                continue;
            }
            return Err(err);
        }
        Err(last.unwrap_or_else(|| BackendError::Transient(format!("{method} {path}: failed"))))
    }

    /// The mount of `path`, through the mounts endpoint once per mount
    /// (concurrent lookups wait for one); `None` when it cannot be known
    /// (no access to the endpoint, or not a mount it describes).
    async fn mount_of(&self, path: &str) -> Result<Option<Mount>, BackendError> {
        let mut mounts = self.mounts.lock().await;
        if let Some(m) = mounts.iter().find(|m| m.holds(path)) {
            return Ok(Some(m.clone()));
        }
        match self.call(Method::GET, &kv::mount_endpoint(path), None).await {
            Ok((text, _)) => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                let Some(m) = Mount::from_answer(&v) else { return Ok(None) };
                if m.holds(path) {
                    mounts.push(m.clone());
                }
                Ok(Some(m))
            }
            // Without access to the mounts endpoint, go by the answer's shape.
            Err(BackendError::Denied(_) | BackendError::Permanent(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How the KV v2-shaped answer of `path` is laid out. The path's shape
    /// says where the mount ends (`<mount>/data/<below>`), which spares a
    /// request per mount; only a path where that is ambiguous (more than
    /// one `data` segment) asks the mounts endpoint.
    async fn kv2_layout(&self, path: &str) -> Result<KvPath, BackendError> {
        if !path.starts_with("data/") && path.matches("/data/").count() == 1 {
            return Ok(KvPath::by_shape(path));
        }
        match self.mount_of(path).await? {
            Some(m) if m.holds(path) => match KvPath::on(path, &m) {
                Ok(KvPath::V1) | Err(_) => Ok(KvPath::by_shape(path)),
                Ok(layout) => Ok(layout),
            },
            _ => Ok(KvPath::by_shape(path)),
        }
    }

    /// Why `path` was not found or refused, when the mount knows better:
    /// a KV v2 path written without `data/`.
    async fn explain_not_found(&self, path: &str, not_found: BackendError) -> BackendError {
        if path.contains("/data/") {
            return not_found;
        }
        match self.mount_of(path).await {
            Ok(Some(m)) if m.holds(path) => match KvPath::on(path, &m) {
                Err(e) => BackendError::Permanent(e.to_string()),
                Ok(_) => not_found,
            },
            _ => not_found,
        }
    }

    /// Reads `reference`'s path: one request (the mount is known from the
    /// path and the answer's shape).
    ///
    /// # Errors
    /// [`BackendError`].
    pub async fn read(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        let Reference::Vault { path, .. } = reference else {
            return Err(BackendError::Permanent(format!("{reference}: not a Vault reference")));
        };
        let (text, owner) = match self.call(Method::GET, path, None).await {
            Ok(answer) => answer,
            Err(e @ (BackendError::Permanent(_) | BackendError::Denied(_))) => {
                return Err(self.explain_not_found(path, e).await);
            }
            Err(e) => return Err(e),
        };
        let mut v: Value =
            serde_json::from_str(&text).map_err(|_| BackendError::Transient(format!("GET {path}: not JSON")))?;
        drop(text);
        let lease_id = v["lease_id"].as_str().unwrap_or("").to_owned();
        let lease_ttl = Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0));
        let renewable = v["renewable"].as_bool().unwrap_or(false);
        let layout = if kv::looks_like_kv2(&v) { self.kv2_layout(path).await? } else { KvPath::V1 };
        let (fields, version) = layout.take_fields(&mut v);
        let kv2_metadata = matches!(layout, KvPath::V2 { .. }).then(|| v["data"]["metadata"].take());
        crate::secret::SecretValue::new(v);
        if matches!(layout, KvPath::V2 { .. }) && fields.is_null() {
            return Err(BackendError::Permanent(format!("{path}: the current version is deleted or destroyed")));
        }
        let meta = crate::secret::Meta {
            lease_id: lease_id.clone(),
            lease_duration: lease_ttl.as_secs(),
            renewable,
            kv2_metadata,
        };
        let lease = (!lease_id.is_empty()).then_some(Lease { id: lease_id, ttl: lease_ttl, renewable });
        Ok(Fetched {
            certificate: None,
            secret: Arc::new(Secret { fields: crate::secret::SecretValue::new(fields), raw: None, meta }),
            version: version.map(|n| n.to_string()),
            lease,
            check: layout.metadata(),
            owner,
        })
    }

    /// Reads a path a Go template names, as consul-template does: on a KV
    /// v2 mount a path without `data/` is read at `<mount>data/<rest>`
    /// (one mounts lookup per mount); every other path as it is.
    ///
    /// # Errors
    /// [`BackendError`].
    pub async fn read_template_path(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        if let Reference::Vault { path, .. } = reference
            && let Ok(Some(m)) = self.mount_of(path).await
            && m.kv2
            && m.holds(path)
        {
            let shimmed = kv::shim_kv2(path, &m.path);
            if shimmed != *path {
                return self.read(&Reference::Vault { path: shimmed, key: None }).await;
            }
        }
        self.read(reference).await
    }

    /// Writes `fields` to `reference`'s path, as consul-template does for a
    /// template's `secret "<path>" "k=v"…` (PKI issuing, mostly): the
    /// answer is the secret. A certificate (`data.expiration`), or an
    /// answer with a lifetime but no lease, is fetched again at 2/3 of its
    /// life; a lease is kept as any lease.
    ///
    /// # Errors
    /// [`BackendError`] naming the path, never a field's value.
    pub async fn write_template_path(
        &self,
        reference: &Reference,
        fields: &[(String, String)],
    ) -> Result<Fetched, BackendError> {
        let Reference::Vault { path, .. } = reference else {
            return Err(BackendError::Permanent(format!("{reference}: not a Vault reference")));
        };
        let body: serde_json::Map<String, Value> =
            fields.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let (text, owner) = self.call(Method::POST, path, Some(&Value::Object(body))).await?;
        let mut v: Value =
            serde_json::from_str(&text).map_err(|_| BackendError::Transient(format!("POST {path}: not JSON")))?;
        drop(text);
        let lease_id = v["lease_id"].as_str().unwrap_or("").to_owned();
        let lease_ttl = Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0));
        let renewable = v["renewable"].as_bool().unwrap_or(false);
        let data = std::mem::take(&mut v["data"]);
        crate::secret::SecretValue::new(v);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let lifetime = match data["expiration"].as_u64() {
            Some(exp) => Some(Duration::from_secs(exp.saturating_sub(now.as_secs()))),
            None if lease_id.is_empty() && !lease_ttl.is_zero() => Some(lease_ttl),
            None => None,
        };
        let certificate = lifetime.map(|l| {
            let lifetime = l.max(Duration::from_secs(1));
            CertTimes { lifetime, reissue_after: lifetime * 2 / 3 }
        });
        let meta = crate::secret::Meta {
            lease_id: lease_id.clone(),
            lease_duration: lease_ttl.as_secs(),
            renewable,
            kv2_metadata: None,
        };
        let lease = (!lease_id.is_empty() && certificate.is_none()).then_some(Lease {
            id: lease_id,
            ttl: lease_ttl,
            renewable,
        });
        Ok(Fetched {
            certificate,
            secret: Arc::new(Secret { fields: crate::secret::SecretValue::new(data), raw: None, meta }),
            version: None,
            lease,
            check: None,
            owner,
        })
    }

    /// Issues `cert` from the PKI engine. With `sign` (the default) the key
    /// pair is generated here and only a CSR is sent, so the private key
    /// never leaves the pod, nor appears in Vault's responses or audit log.
    ///
    /// # Errors
    /// [`BackendError`], naming the certificate.
    pub async fn issue(&self, cert: &CertRequest) -> Result<Fetched, BackendError> {
        let path = cert.path();
        let mut body = json!({"common_name": cert.common_name, "format": "pem"});
        if !cert.alt_names.is_empty() {
            body["alt_names"] = json!(cert.alt_names.join(","));
        }
        if !cert.ip_sans.is_empty() {
            body["ip_sans"] = json!(cert.ip_sans.join(","));
        }
        if let Some(ttl) = cert.ttl {
            body["ttl"] = json!(format!("{}s", ttl.as_secs()));
        }
        let key = if cert.issue {
            body["private_key_format"] = json!("pkcs8");
            None
        } else {
            let bad = |e: rcgen::Error| BackendError::Permanent(format!("{cert}: making the key and CSR: {e}"));
            let key = rcgen::KeyPair::generate().map_err(bad)?;
            // The role takes the names from the CSR (use_csr_sans), so they
            // go there as well as into the request.
            let mut names = vec![cert.common_name.clone()];
            names.extend(cert.alt_names.iter().cloned());
            let mut params = rcgen::CertificateParams::new(names).map_err(bad)?;
            params.distinguished_name.push(rcgen::DnType::CommonName, cert.common_name.clone());
            for ip in cert.ip_sans.iter().filter_map(|ip| ip.parse().ok()) {
                params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
            }
            body["csr"] = json!(params.serialize_request(&key).map_err(bad)?.pem().map_err(bad)?);
            Some(Zeroizing::new(key.serialize_pem()))
        };
        let (text, owner) = self.call(Method::POST, &path, Some(&body)).await.map_err(|e| name_cert(e, cert))?;
        let mut v: Value =
            serde_json::from_str(&text).map_err(|_| BackendError::Transient(format!("POST {path}: not JSON")))?;
        drop(text);
        let d = std::mem::take(&mut v["data"]);
        crate::secret::SecretValue::new(v);
        let str_of = |k: &str| d[k].as_str().unwrap_or("").trim().to_owned();
        let leaf = str_of("certificate");
        let ca = str_of("issuing_ca");
        let key = match key {
            Some(k) => k,
            None => Zeroizing::new(str_of("private_key")),
        };
        let chain: Vec<String> =
            d["ca_chain"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        let expiration = d["expiration"].as_u64().unwrap_or(0);
        crate::secret::SecretValue::new(d);
        if leaf.is_empty() || key.is_empty() {
            return Err(BackendError::Permanent(format!("{cert}: POST {path}: the answer has no certificate")));
        }
        let chain_pem = if chain.is_empty() { ca.clone() } else { chain.join("\n") };
        let crt = if cert.chain { format!("{leaf}\n{chain_pem}\n") } else { format!("{leaf}\n") };
        let mut fields = json!({"tls.crt": crt, "tls.key": format!("{}\n", key.trim()), "ca.crt": format!("{ca}\n")});
        if cert.combined {
            fields["tls.pem"] = json!(format!("{}\n{leaf}\n{chain_pem}\n", key.trim()));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let lifetime = Duration::from_secs(expiration.saturating_sub(now.as_secs())).max(Duration::from_secs(1));
        Ok(Fetched {
            certificate: Some(CertTimes { lifetime, reissue_after: cert.renew_after(lifetime) }),
            secret: Arc::new(Secret::from_fields(fields)),
            version: None,
            lease: None,
            check: None,
            owner,
        })
    }

    /// The current KV v2 version at the metadata path `check`.
    ///
    /// # Errors
    /// [`BackendError`].
    pub async fn version(&self, check: &str) -> Result<String, BackendError> {
        let (text, _) = self.call(Method::GET, check, None).await?;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["data"]["current_version"]
            .as_u64()
            .map(|n| n.to_string())
            .ok_or_else(|| BackendError::Transient(format!("GET {check}: no current_version")))
    }

    /// Renews `lease` by `increment`.
    ///
    /// # Errors
    /// [`BackendError::Permanent`] when the lease is gone or not renewable.
    pub async fn renew(&self, lease: &Lease, increment: Duration) -> Result<Duration, BackendError> {
        let body = json!({"lease_id": lease.id, "increment": increment.as_secs()});
        match self.call(Method::PUT, "sys/leases/renew", Some(&body)).await {
            Ok((text, _)) => {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                Ok(Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0)))
            }
            // Vault answers 400 for unknown, expired and non-renewable leases.
            Err(BackendError::Permanent(m)) => Err(BackendError::Permanent(format!("lease {}: {m}", lease.id))),
            Err(e) => Err(e),
        }
    }

    /// Revokes `lease`, ignoring failures.
    pub async fn revoke(&self, lease: &Lease) {
        let body = json!({"lease_id": lease.id});
        match self.call(Method::PUT, "sys/leases/revoke", Some(&body)).await {
            Ok(_) => tracing::info!(lease = %lease.id, "revoked lease"),
            Err(e) => tracing::warn!(lease = %lease.id, error = %e, "could not revoke lease"),
        }
    }

    /// Revokes the current token, ignoring failures.
    pub async fn revoke_token(&self) {
        let mut state = self.state.lock().await;
        if let Some(token) = state.token.take() {
            match self.send(Method::POST, "auth/token/revoke-self", Some(&token), None).await {
                Ok((s, _)) if s.is_success() => tracing::info!("revoked the Vault token"),
                Ok((s, _)) => tracing::warn!(status = s.as_u16(), "could not revoke the Vault token"),
                Err(e) => tracing::warn!(error = %e, "could not revoke the Vault token"),
            }
        }
    }

    /// Keeps the token alive until `shutdown`: renews it at about two thirds
    /// of its lifetime and logs in again when renewal is refused or capped
    /// (recording when the old token ends, so its leases are replaced in time).
    pub async fn maintain(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        loop {
            let wait = {
                let state = self.state.lock().await;
                if state.token.is_none() {
                    Duration::ZERO
                } else if state.ttl.is_zero() {
                    // A token that never expires (a dev root token): nothing to renew.
                    Duration::from_secs(3600)
                } else {
                    let due = state.obtained + jitter(renew_after(state.ttl), 0.1);
                    due.saturating_duration_since(Instant::now())
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            let mut state = self.state.lock().await;
            if state.token.is_some() && state.ttl.is_zero() {
                continue;
            }
            // A login happened while this waited (the first reads log in
            // too): that token is not due for renewal yet.
            if state.token.is_some() && state.obtained.elapsed() < renew_after(state.ttl).mul_f64(0.9) {
                continue;
            }
            let result = match (&state.token, state.renewable) {
                (Some(token), true) => {
                    let body = json!({"increment": state.ttl.as_secs()});
                    match self.send(Method::POST, "auth/token/renew-self", Some(token), Some(&body)).await {
                        Ok((status, text)) if status.is_success() => {
                            let v: Value = serde_json::from_str(&Zeroizing::new(text)).unwrap_or_default();
                            let granted = Duration::from_secs(v["auth"]["lease_duration"].as_u64().unwrap_or(0));
                            self.metrics.token_renewal(true);
                            if capped(state.ttl, granted) {
                                // The token reached its max TTL: its leases end with it.
                                let end = Instant::now() + granted;
                                if let Ok(mut d) = self.deadlines.lock() {
                                    d.insert(state.generation, end);
                                }
                                tracing::info!(
                                    generation = state.generation,
                                    ends_in_s = granted.as_secs(),
                                    "token renewal capped; logging in again"
                                );
                                self.login(&mut state).await
                            } else {
                                tracing::debug!(
                                    generation = state.generation,
                                    ttl_s = granted.as_secs(),
                                    "renewed the Vault token"
                                );
                                state.obtained = Instant::now();
                                self.save_token(&state);
                                Ok(())
                            }
                        }
                        Ok((status, text)) => {
                            self.metrics.token_renewal(false);
                            let e = self.classify("token renew-self", status, &Zeroizing::new(text));
                            tracing::warn!(error = %e, "token renewal refused; logging in again");
                            if let Ok(mut d) = self.deadlines.lock() {
                                d.insert(state.generation, Instant::now());
                            }
                            self.login(&mut state).await
                        }
                        Err(e) => Err(e),
                    }
                }
                // No token yet, or one that cannot be renewed: log in.
                _ => self.login(&mut state).await,
            };
            drop(state);
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Vault login or token renewal failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}
