//! The agent's work: one task per secret source (a distinct path: one read
//! and one lease however many files use it) that fetches, renews and checks
//! for new versions, and one renderer that turns the latest data into files,
//! swaps them in atomically and tells the app.
//!
//! A source task makes at most one request at a time. On failure it backs
//! off with jitter and the renderer keeps the last good files.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sidekey::agent_config::{AgentConfig, FileSpec};
use sidekey::reference::Reference;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Fetched, Lease};
use crate::metrics::Metrics;
use crate::render::{render, render_dir};
use crate::schedule::{Backoff, capped, jitter, renew_after, replace_after};
use crate::secret::{Secret, SecretBytes};
use crate::state::StateStore;
use crate::writer::{AtomicWriter, Payload, PayloadFile};

/// A distinct secret to read.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its canonical text (reference without key): a label for logs and metrics.
    pub name: String,
    /// The reference without key.
    pub reference: Reference,
    /// Whether a non-optional file needs it.
    pub required: bool,
}

/// Which source each file reads.
pub struct Plan {
    /// The distinct sources.
    pub sources: Vec<Source>,
    /// For each file of the config, its source's index.
    pub file_source: Vec<usize>,
}

impl Plan {
    /// Groups the files of `config` by source.
    pub fn new(config: &AgentConfig) -> Plan {
        let mut sources: Vec<Source> = Vec::new();
        let mut file_source = Vec::new();
        for f in &config.files {
            let reference = f.reference.without_key();
            let name = reference.to_string();
            let idx = match sources.iter().position(|s| s.name == name) {
                Some(i) => i,
                None => {
                    sources.push(Source { name, reference, required: false });
                    sources.len() - 1
                }
            };
            sources[idx].required |= !f.optional;
            file_source.push(idx);
        }
        Plan { sources, file_source }
    }
}

/// What a source task reports.
pub enum Update {
    /// New data.
    Data {
        /// Source index.
        source: usize,
        /// The secret.
        secret: Arc<Secret>,
    },
    /// A failed read.
    Failed {
        /// Source index.
        source: usize,
        /// Why.
        error: BackendError,
    },
}

/// Leases held now, for revocation at shutdown.
pub type HeldLeases = Arc<Mutex<HashMap<usize, (Backend, Lease)>>>;

/// Everything a source task needs.
pub struct SourceTask {
    /// Index in the plan.
    pub index: usize,
    /// What to read.
    pub source: Source,
    /// Where from.
    pub backend: Backend,
    /// How often static secrets are checked.
    pub refresh: Duration,
    /// Where to report.
    pub tx: mpsc::Sender<Update>,
    /// Login changes (new token, an old token's end known).
    pub logins: Option<watch::Receiver<u64>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Read once and stop.
    pub once: bool,
    /// Set to stop.
    pub shutdown: watch::Receiver<bool>,
    /// Leases held, for revocation at shutdown.
    pub leases: HeldLeases,
    /// Where leases are kept across restarts of the agent, when configured.
    pub state: Option<Arc<StateStore>>,
}

async fn changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl SourceTask {
    /// Sleeps until `at`; false when shutting down.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(at) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    fn hold(&self, lease: Option<&Lease>) {
        if let Ok(mut m) = self.leases.lock() {
            match lease {
                Some(l) => {
                    m.insert(self.index, (self.backend.clone(), l.clone()));
                }
                None => {
                    m.remove(&self.index);
                }
            }
        }
    }

    /// The lease a previous run of the agent held for this source, adopted
    /// as if just read: its data is what the files hold already, and
    /// renewal goes on where that run stopped.
    #[cfg(feature = "vault")]
    fn adopt(&self) -> Option<(Fetched, Duration)> {
        let saved = self.state.as_ref()?.lease(&self.source.name)?;
        tracing::info!(lease = %saved.lease.id, left_s = saved.lease.ttl.as_secs(), "adopted the lease of the previous run");
        let fetched = Fetched {
            secret: Arc::new(Secret { fields: saved.fields, raw: None }),
            version: None,
            lease: Some(saved.lease),
            check: None,
            owner: crate::backend::vault::ADOPTED_GENERATION,
        };
        Some((fetched, saved.issued_ttl))
    }

    #[cfg(not(feature = "vault"))]
    fn adopt(&self) -> Option<(Fetched, Duration)> {
        None
    }

    /// Records what this source holds now, for a restart of the agent.
    fn save(&self, fetched: &Fetched) {
        if let Some(state) = &self.state {
            match &fetched.lease {
                Some(l) => state.set_lease(&self.source.name, l, l.ttl, &fetched.secret.fields),
                None => state.forget(&self.source.name),
            }
        }
    }

    /// Runs until shutdown (or after the first read with `once`).
    pub async fn run(mut self) {
        let name = self.source.name.clone();
        let mut backoff = Backoff::default();
        let mut adopted = if self.once { None } else { self.adopt() };
        'fetch: loop {
            let mut issued_ttl = None;
            let read = match adopted.take() {
                Some((f, issued)) => {
                    issued_ttl = Some(issued);
                    Ok(f)
                }
                None => self.backend.read(&self.source.reference).await.inspect(|f| self.save(f)),
            };
            let fetched = match read {
                Ok(f) => {
                    self.metrics.fetch(&name, true);
                    backoff.reset();
                    f
                }
                Err(error) => {
                    self.metrics.fetch(&name, false);
                    self.metrics.failure(&name, error.kind());
                    let permanent = matches!(error, BackendError::Permanent(_));
                    let delay = if permanent {
                        backoff.next_delay().max(self.refresh.min(Duration::from_secs(60)))
                    } else {
                        backoff.next_delay()
                    };
                    tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "reading the secret failed; keeping the last good files");
                    if self.tx.send(Update::Failed { source: self.index, error: error.clone() }).await.is_err() {
                        return;
                    }
                    // Run once, a denial does not lift by itself either.
                    if self.once && (permanent || matches!(error, BackendError::Denied(_))) {
                        return;
                    }
                    if !self.sleep_until(Instant::now() + delay).await {
                        return;
                    }
                    continue 'fetch;
                }
            };
            tracing::info!(
                version = fetched.version.as_deref().unwrap_or("-"),
                lease = fetched.lease.as_ref().map_or("-", |l| l.id.as_str()),
                "read the secret"
            );
            if self.tx.send(Update::Data { source: self.index, secret: fetched.secret.clone() }).await.is_err() {
                return;
            }
            if self.once {
                return;
            }
            self.hold(fetched.lease.as_ref());
            let version = fetched.version;
            let check = fetched.check;
            let lease = fetched.lease;
            let owner = fetched.owner;
            let issued_ttl = issued_ttl.unwrap_or_else(|| lease.as_ref().map_or(Duration::ZERO, |l| l.ttl));
            let now = Instant::now();
            let far = now + Duration::from_secs(365 * 24 * 3600);
            let mut replace_at: Option<Instant> = None;
            let mut next = match &lease {
                Some(l) if l.renewable && !l.ttl.is_zero() => now + jitter(renew_after(l.ttl), 0.1),
                Some(l) => {
                    replace_at = Some(now + replace_after(l.ttl));
                    far
                }
                None => now + jitter(self.refresh, 0.1),
            };
            let mut lease_end = lease.as_ref().map(|l| now + l.ttl);
            self.metrics.lease_expiry(&name, lease.as_ref().map(|l| SystemTime::now() + l.ttl));
            loop {
                // A lease dies with the token that created it.
                if let (Some(_), Some(deadline)) = (&lease, self.backend.owner_deadline(owner)) {
                    let at = deadline.checked_sub((issued_ttl / 3).max(Duration::from_secs(2))).unwrap_or(deadline);
                    if replace_at.is_none_or(|r| at < r) {
                        tracing::info!("the token that owns this lease is ending; replacing the credential");
                        replace_at = Some(at);
                    }
                }
                let wake = replace_at.map_or(next, |r| r.min(next));
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = changed(&mut self.logins) => continue,
                    _ = self.shutdown.changed() => return,
                }
                let now = Instant::now();
                if replace_at.is_some_and(|r| now >= r) {
                    tracing::info!("fetching a new credential before the lease ends");
                    continue 'fetch;
                }
                if let Some(l) = &lease {
                    match self.backend.renew(l, issued_ttl).await {
                        Ok(granted) => {
                            self.metrics.renewal(&name, true);
                            backoff.reset();
                            if let Some(state) = &self.state {
                                state.renewed(&name, granted);
                            }
                            lease_end = Some(now + granted);
                            self.metrics.lease_expiry(&name, Some(SystemTime::now() + granted));
                            if capped(issued_ttl, granted) {
                                tracing::info!(lease = %l.id, left_s = granted.as_secs(), "lease reached its max TTL");
                                replace_at = Some(now + replace_after(granted));
                                next = far;
                            } else {
                                tracing::debug!(lease = %l.id, ttl_s = granted.as_secs(), "renewed lease");
                                next = now + jitter(renew_after(granted), 0.1);
                            }
                        }
                        Err(e @ BackendError::Permanent(_)) => {
                            self.metrics.renewal(&name, false);
                            self.metrics.failure(&name, e.kind());
                            tracing::warn!(error = %e, "lease renewal refused; fetching a new credential");
                            continue 'fetch;
                        }
                        Err(e) => {
                            self.metrics.renewal(&name, false);
                            self.metrics.failure(&name, e.kind());
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lease renewal failed");
                            next = now + delay;
                            if lease_end.is_some_and(|end| end <= now) {
                                continue 'fetch;
                            }
                        }
                    }
                } else if let Some(check) = &check {
                    match self.backend.version(check).await {
                        Ok(v) if Some(&v) == version.as_ref() => {
                            self.metrics.version_check(&name, true);
                            backoff.reset();
                            next = now + jitter(self.refresh, 0.1);
                        }
                        Ok(v) => {
                            self.metrics.version_check(&name, true);
                            tracing::info!(version = %v, "a new version exists");
                            continue 'fetch;
                        }
                        Err(e) => {
                            self.metrics.version_check(&name, false);
                            self.metrics.failure(&name, e.kind());
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "version check failed; keeping the last good files");
                            next = now + delay;
                        }
                    }
                } else {
                    // No cheap check (KV v1 and other static reads): read again;
                    // the renderer writes only if something changed.
                    continue 'fetch;
                }
            }
        }
    }
}

/// Why the first render did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A required secret cannot be read or rendered.
    #[error("{0}")]
    Failed(String),
    /// Not every file was written in time.
    #[error("not every file was written within {timeout:?}: {missing}")]
    Timeout {
        /// The configured bound.
        timeout: Duration,
        /// What is missing and why.
        missing: String,
    },
}

/// The renderer.
pub struct Renderer {
    /// The config (files, on-change).
    pub config: AgentConfig,
    /// Source per file.
    pub plan: Plan,
    /// Where files go.
    pub writer: AtomicWriter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Stop after the first complete write.
    pub once: bool,
}

type Rendered = BTreeMap<String, Vec<(String, SecretBytes, u32)>>;

impl Renderer {
    fn render_all(
        &self,
        latest: &[Option<Arc<Secret>>],
        previous: &Rendered,
        errors: &mut HashMap<String, String>,
    ) -> Option<Rendered> {
        // While sources are still arriving, do not render what would be thrown away.
        let waiting = self
            .config
            .files
            .iter()
            .enumerate()
            .any(|(i, spec)| !spec.optional && latest[self.plan.file_source[i]].is_none());
        if waiting {
            return None;
        }
        let mut out = Rendered::new();
        for (i, spec) in self.config.files.iter().enumerate() {
            let Some(secret) = &latest[self.plan.file_source[i]] else {
                if spec.optional {
                    continue;
                }
                return None;
            };
            match render_file(spec, secret) {
                Ok(files) => {
                    errors.remove(&spec.name);
                    out.insert(spec.name.clone(), files);
                }
                Err(e) => {
                    tracing::error!(file = %spec.name, reference = %spec.reference, error = %e, "cannot render the file; keeping its last good content");
                    errors.insert(spec.name.clone(), format!("{}: {e}", spec.reference));
                    match previous.get(&spec.name) {
                        Some(prev) => {
                            out.insert(
                                spec.name.clone(),
                                prev.iter().map(|(n, b, m)| (n.clone(), b.clone(), *m)).collect(),
                            );
                        }
                        None if spec.optional => {}
                        None => return None,
                    }
                }
            }
        }
        Some(out)
    }

    /// Runs until the channel closes or shutdown; with `once`, until the
    /// first complete write.
    ///
    /// # Errors
    /// [`StartupError`] when a required file cannot be produced (`once`
    /// mode fails at once on permanent errors; the sidecar keeps trying).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Update>,
        ready: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StartupError> {
        let sources = self.plan.sources.len();
        let mut latest: Vec<Option<Arc<Secret>>> = vec![None; sources];
        let mut source_errors: Vec<Option<BackendError>> = vec![None; sources];
        let mut render_errors: HashMap<String, String> = HashMap::new();
        let mut previous = Rendered::new();
        let mut written = false;
        let mut timed_out = false;
        let deadline = Instant::now() + self.config.startup_timeout;
        let http = crate::notify::reqwest_like::Client;
        let describe_missing = |latest: &[Option<Arc<Secret>>],
                                source_errors: &[Option<BackendError>],
                                render_errors: &HashMap<String, String>| {
            let mut parts = Vec::new();
            for (i, spec) in self.config.files.iter().enumerate() {
                let s = self.plan.file_source[i];
                if spec.optional {
                    continue;
                }
                if latest[s].is_none() {
                    let why = source_errors[s].as_ref().map_or("no answer yet".to_owned(), ToString::to_string);
                    parts.push(format!("file {} ({}): {why}", spec.name, spec.reference));
                } else if let Some(e) = render_errors.get(&spec.name) {
                    parts.push(format!("file {}: {e}", spec.name));
                }
            }
            parts.join("; ")
        };
        loop {
            let update = tokio::select! {
                u = rx.recv() => match u { Some(u) => u, None => return Ok(()) },
                () = tokio::time::sleep_until(deadline), if !written && !timed_out => {
                    let missing = describe_missing(&latest, &source_errors, &render_errors);
                    if self.once {
                        return Err(StartupError::Timeout { timeout: self.config.startup_timeout, missing });
                    }
                    tracing::error!(timeout_s = self.config.startup_timeout.as_secs(), missing = %missing, "not every file was written in time; still trying");
                    // Report once, then keep waiting without a deadline.
                    timed_out = true;
                    continue;
                }
                _ = shutdown.changed() => return Ok(()),
            };
            match update {
                Update::Data { source, secret } => {
                    latest[source] = Some(secret);
                    source_errors[source] = None;
                }
                Update::Failed { source, error } => {
                    let permanent = matches!(error, BackendError::Permanent(_) | BackendError::Denied(_));
                    source_errors[source] = Some(error);
                    if self.once && permanent && self.plan.sources[source].required && latest[source].is_none() {
                        return Err(StartupError::Failed(describe_missing(&latest, &source_errors, &render_errors)));
                    }
                    continue;
                }
            }
            let Some(rendered) = self.render_all(&latest, &previous, &mut render_errors) else {
                if self.once
                    && !render_errors.is_empty()
                    && latest.iter().enumerate().all(|(i, l)| l.is_some() || !self.plan.sources[i].required)
                {
                    return Err(StartupError::Failed(describe_missing(&latest, &source_errors, &render_errors)));
                }
                continue;
            };
            if written && same(&rendered, &previous) {
                continue;
            }
            let mut payload = Payload::default();
            for spec in &self.config.files {
                let Some(files) = rendered.get(&spec.name) else { continue };
                if spec.dir {
                    let dir = files
                        .iter()
                        .map(|(n, b, m)| (n.clone(), PayloadFile { content: b.clone(), mode: *m }))
                        .collect();
                    payload.dirs.insert(spec.name.clone(), dir);
                } else if let Some((_, b, m)) = files.first() {
                    payload.files.insert(spec.name.clone(), PayloadFile { content: b.clone(), mode: *m });
                }
            }
            match self.writer.write(&payload) {
                Ok(()) => {
                    self.metrics.rendered();
                    tracing::info!(files = payload.files.len() + payload.dirs.len(), "wrote the secret files");
                    previous = rendered;
                    if written {
                        crate::notify::notify(&self.config.on_change, &self.config.mount_path, &http, &self.metrics)
                            .await;
                    } else {
                        written = true;
                        self.metrics.set_ready();
                        let _ = ready.send(true);
                        if self.once {
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the secret files; keeping the last good ones");
                    if self.once {
                        return Err(StartupError::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}

fn render_file(
    spec: &FileSpec,
    secret: &Secret,
) -> Result<Vec<(String, SecretBytes, u32)>, crate::render::RenderError> {
    if spec.dir {
        Ok(render_dir(secret)?.into_iter().map(|(n, b)| (n, b, spec.mode)).collect())
    } else {
        Ok(vec![(spec.name.clone(), render(spec, secret)?, spec.mode)])
    }
}

fn same(a: &Rendered, b: &Rendered) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && va.len() == vb.len()
                && va.iter().zip(vb.iter()).all(|((na, ba, ma), (nb, bb, mb))| na == nb && ma == mb && ba == bb)
        })
}
