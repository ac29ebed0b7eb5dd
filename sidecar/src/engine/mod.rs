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

use sidekey::agent_config::{AgentConfig, FileSpec, GoTemplate, ValidConfig};
use sidekey::annotations::Format;
use sidekey::cert::CertRequest;
use sidekey::reference::Reference;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Fetched, Lease, SecretBackend};
use crate::metrics::Metrics;
use crate::render::{render, render_dir, render_go};
use crate::rotation::{Action, Held, Holding};
use crate::schedule::Backoff;
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
    /// A certificate to issue instead of a secret to read.
    pub cert: Option<CertRequest>,
    /// Read as a Go template names it (consul-template's KV v2 paths).
    pub template_path: bool,
    /// A Go template's `secret` with `k=v` arguments (or `pkiCert`): a
    /// write of these fields, fetched again when its result expires.
    pub write: Option<Vec<(String, String)>>,
}

/// The `k=v` fields of a template's write.
type Fields = Vec<(String, String)>;

/// Which sources each file reads.
pub struct Plan {
    /// The distinct sources.
    pub sources: Vec<Source>,
    /// For each file of the config, its sources' indexes: one, or for a Go
    /// template each path it reads, in the template's order.
    pub file_sources: Vec<Vec<usize>>,
    /// For each file of the config, its Go template parsed once at start
    /// (the config was validated: it parses); every render runs it.
    pub go_templates: Vec<Option<Arc<GoTemplate>>>,
}

impl Plan {
    /// Groups the files of `config` by source: a path read by several
    /// files (or templates) is one source, one read and one lease.
    pub fn new(config: &ValidConfig) -> Plan {
        let mut sources: Vec<Source> = Vec::new();
        let mut file_sources = Vec::new();
        let mut go_templates = Vec::new();
        for (i, f) in config.files.iter().enumerate() {
            let go = config.go_template(i).cloned();
            // (source name, what it reads, a write's fields)
            let mut wanted: Vec<(String, Reference, Option<Fields>)> = Vec::new();
            let template = f.format == Some(Format::GoTemplate);
            match (&f.cert, f.format, &f.template) {
                // Each certificate is its own source: its own key and schedule.
                (Some(_), ..) => wanted.push((format!("cert {}", f.name), f.reference.without_key(), None)),
                (None, Some(Format::GoTemplate), Some(_)) => {
                    let calls = go.as_ref().map_or(&[][..], |g| g.calls());
                    for c in calls {
                        let r = Reference::Vault { path: c.path.clone(), key: None };
                        // A template's path is its own source: it may be read
                        // at another path than the same text in a reference.
                        // A write is one source per path and fields.
                        if c.args.is_empty() {
                            wanted.push((format!("template {r}"), r, None));
                        } else {
                            let fields: Vec<String> = c.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            wanted.push((format!("template write {r} {}", fields.join(" ")), r, Some(c.args.clone())));
                        }
                    }
                }
                _ => {
                    let r = f.reference.without_key();
                    wanted.push((r.to_string(), r, None));
                }
            }
            let mut idxs = Vec::new();
            for (name, reference, write) in wanted {
                let idx = match sources.iter().position(|s| s.name == name) {
                    Some(i) => i,
                    None => {
                        sources.push(Source {
                            name,
                            reference,
                            required: false,
                            cert: f.cert.clone(),
                            template_path: template,
                            write,
                        });
                        sources.len() - 1
                    }
                };
                sources[idx].required |= !f.optional;
                idxs.push(idx);
            }
            file_sources.push(idxs);
            go_templates.push(go);
        }
        Plan { sources, file_sources, go_templates }
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
pub type HeldLeases<B = Backend> = Arc<Mutex<HashMap<usize, (B, Lease)>>>;

/// Everything a source task needs.
pub struct SourceTask<B: SecretBackend = Backend> {
    /// Index in the plan.
    pub index: usize,
    /// What to read.
    pub source: Source,
    /// Where from.
    pub backend: B,
    /// When static secrets are checked (the agent's shared ticks).
    pub refresh: crate::schedule::Refresh,
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
    pub leases: HeldLeases<B>,
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

/// Whether a source task goes on.
enum Flow {
    /// Read the secret again.
    Read,
    /// Stop: shutdown, the renderer is gone, or a one-shot run is done.
    Stop,
}

impl<B: SecretBackend> SourceTask<B> {
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
            certificate: None,
            secret: Arc::new(Secret { fields: saved.fields, raw: None, meta: Default::default() }),
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
        let mut backoff = Backoff::default();
        let mut adopted = if self.once { None } else { self.adopt() };
        loop {
            let (fetched, issued_ttl) = match adopted.take() {
                Some((f, issued)) => (f, Some(issued)),
                None => match self.read(&mut backoff).await {
                    Some(f) => (f, None),
                    None => return,
                },
            };
            if issued_ttl.is_some() {
                self.metrics.fetch(&self.source.name, true);
            }
            tracing::info!(
                version = fetched.version.as_deref().unwrap_or("-"),
                lease = fetched.lease.as_ref().map_or("-", |l| l.id.as_str()),
                "read the secret"
            );
            if self.tx.send(Update::Data { source: self.index, secret: fetched.secret.clone() }).await.is_err()
                || self.once
            {
                return;
            }
            self.hold(fetched.lease.as_ref());
            let ends = fetched.lease.as_ref().map(|l| l.ttl).or(fetched.certificate.map(|c| c.lifetime));
            self.metrics.lease_expiry(&self.source.name, ends.map(|d| SystemTime::now() + d));
            let mut holding = Holding::after_read(&fetched, issued_ttl, Instant::now(), self.refresh);
            match self.keep(&mut holding, &mut backoff).await {
                Flow::Read => {}
                Flow::Stop => return,
            }
        }
    }

    /// Reads until a read succeeds (reporting each failure and backing
    /// off); `None` when the task stops instead.
    async fn read(&mut self, backoff: &mut Backoff) -> Option<Fetched> {
        let name = self.source.name.clone();
        loop {
            let result = match &self.source.cert {
                Some(cert) => self.backend.issue(cert).await,
                None => match &self.source.write {
                    Some(fields) => self.backend.write_template_path(&self.source.reference, fields).await,
                    None if self.source.template_path => self.backend.read_template_path(&self.source.reference).await,
                    None => self.backend.read(&self.source.reference).await,
                },
            };
            match result {
                Ok(f) => {
                    self.save(&f);
                    self.metrics.fetch(&name, true);
                    backoff.reset();
                    return Some(f);
                }
                Err(error) => {
                    self.metrics.fetch(&name, false);
                    self.metrics.failure(&name, error.kind());
                    let permanent = matches!(error, BackendError::Permanent(_));
                    let delay = if permanent {
                        // Will not fix itself soon: retried slowly.
                        backoff.next_delay().max(self.refresh.period.min(Duration::from_secs(60)))
                    } else {
                        backoff.next_delay()
                    };
                    tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "reading the secret failed; keeping the last good files");
                    let denied = matches!(error, BackendError::Denied(_));
                    if self.tx.send(Update::Failed { source: self.index, error }).await.is_err() {
                        return None;
                    }
                    // Run once, a denial does not lift by itself either.
                    if self.once && (permanent || denied) {
                        return None;
                    }
                    if !self.sleep_until(Instant::now() + delay).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Keeps what was read current (renewals, version checks) until a new
    /// read is due.
    async fn keep(&mut self, holding: &mut Holding, backoff: &mut Backoff) -> Flow {
        loop {
            let owner = match holding.held {
                Held::Lease { owner, .. } => self.backend.owner_deadline(owner),
                _ => None,
            };
            let (action, at) = holding.next(owner);
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                // A new login may have set a deadline for the old token.
                () = changed(&mut self.logins) => continue,
                _ = self.shutdown.changed() => return Flow::Stop,
            }
            let now = Instant::now();
            let flow = match action {
                Action::Read => {
                    if holding.lease().is_some() {
                        tracing::info!("fetching a new credential before the lease ends");
                    }
                    Some(Flow::Read)
                }
                Action::Renew => self.renew(holding, backoff, now).await,
                Action::CheckVersion => self.check_version(holding, backoff, now).await,
            };
            if let Some(flow) = flow {
                return flow;
            }
        }
    }

    /// Renews the held lease; `Some` when a new read is due instead.
    async fn renew(&mut self, holding: &mut Holding, backoff: &mut Backoff, now: Instant) -> Option<Flow> {
        let name = &self.source.name;
        let Some(lease) = holding.lease().cloned() else { return Some(Flow::Read) };
        // An answer after the lease's end is worth nothing: a renewal sent
        // as the store became unreachable waits no longer than that (not
        // the client's 30 s), so the failure is seen and reported in time.
        let left =
            holding.ends().map_or(Duration::MAX, |e| e.saturating_duration_since(now)).max(Duration::from_secs(1));
        let result = match tokio::time::timeout(left, self.backend.renew(&lease, holding.increment())).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Transient(format!(
                "lease {}: no answer to the renewal before the lease ended",
                lease.id
            ))),
        };
        self.metrics.renewal(name, result.is_ok());
        match result {
            Ok(granted) => {
                backoff.reset();
                if let Some(state) = &self.state {
                    state.renewed(name, granted);
                }
                self.metrics.lease_expiry(name, Some(SystemTime::now() + granted));
                if holding.renewed(granted, now) {
                    tracing::info!(lease = %lease.id, left_s = granted.as_secs(), "lease reached its max TTL");
                } else {
                    tracing::debug!(lease = %lease.id, ttl_s = granted.as_secs(), "renewed lease");
                }
                None
            }
            Err(e @ BackendError::Permanent(_)) => {
                self.metrics.failure(name, e.kind());
                tracing::warn!(error = %e, "lease renewal refused; fetching a new credential");
                Some(Flow::Read)
            }
            Err(e) => {
                self.metrics.failure(name, e.kind());
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lease renewal failed");
                // Judged at the answer, not at the request: it may have
                // taken until the lease's end.
                holding.failed(delay, Instant::now()).then_some(Flow::Read)
            }
        }
    }

    /// Asks whether the held version is still current; `Some` when a new
    /// read is due.
    async fn check_version(&mut self, holding: &mut Holding, backoff: &mut Backoff, now: Instant) -> Option<Flow> {
        let name = &self.source.name;
        let Held::Versioned { version, check } = &holding.held else { return Some(Flow::Read) };
        let result = self.backend.version(check).await;
        self.metrics.version_check(name, result.is_ok());
        match result {
            Ok(v) if v == *version => {
                backoff.reset();
                holding.unchanged(now, self.refresh);
                None
            }
            Ok(v) => {
                tracing::info!(version = %v, "a new version exists");
                Some(Flow::Read)
            }
            Err(e) => {
                self.metrics.failure(name, e.kind());
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "version check failed; keeping the last good files");
                holding.failed(delay, now);
                None
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
            .any(|(i, spec)| !spec.optional && self.plan.file_sources[i].iter().any(|&s| latest[s].is_none()));
        if waiting {
            return None;
        }
        let mut out = Rendered::new();
        for (i, spec) in self.config.files.iter().enumerate() {
            let Some(secrets) =
                self.plan.file_sources[i].iter().map(|&s| latest[s].as_deref()).collect::<Option<Vec<&Secret>>>()
            else {
                if spec.optional {
                    continue;
                }
                return None;
            };
            let go = self.plan.go_templates[i].as_deref();
            match render_file(spec, go, &self.plan.file_sources[i], &self.plan.sources, &secrets) {
                Ok(files) => {
                    errors.remove(&spec.name);
                    out.insert(spec.name.clone(), files);
                }
                Err(e) => {
                    tracing::error!(file = %spec.name, reference = %spec.reference, error = %e, "cannot render the file; keeping its last good content");
                    self.metrics.render_failure(&spec.name);
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

    /// What is missing for a complete write, and why.
    fn describe_missing(&self, p: &Progress) -> String {
        let mut parts = Vec::new();
        for (i, spec) in self.config.files.iter().enumerate() {
            if spec.optional {
                continue;
            }
            if let Some(&s) = self.plan.file_sources[i].iter().find(|&&s| p.latest[s].is_none()) {
                let why = p.source_errors[s].as_ref().map_or("no answer yet".to_owned(), ToString::to_string);
                match &spec.cert {
                    Some(_) => parts
                        .push(format!("certificate {} (annotation sidekey.dev/cert-{}): {why}", spec.name, spec.name)),
                    None => parts.push(format!("file {} ({}): {why}", spec.name, self.plan.sources[s].reference)),
                }
            } else if let Some(e) = p.render_errors.get(&spec.name) {
                parts.push(format!("file {}: {e}", spec.name));
            }
        }
        parts.join("; ")
    }

    /// The files to write, from what was rendered.
    fn payload(&self, rendered: &Rendered) -> Payload {
        let mut payload = Payload::default();
        for spec in &self.config.files {
            let Some(files) = rendered.get(&spec.name) else { continue };
            if spec.dir {
                let dir =
                    files.iter().map(|(n, b, m)| (n.clone(), PayloadFile { content: b.clone(), mode: *m })).collect();
                payload.dirs.insert(spec.name.clone(), dir);
            } else if let Some((_, b, m)) = files.first() {
                payload.files.insert(spec.name.clone(), PayloadFile { content: b.clone(), mode: *m });
            }
        }
        payload
    }

    /// Takes in one update. `Err` ends a one-shot run that cannot succeed;
    /// `Ok(false)`: nothing new to render.
    fn take(&self, p: &mut Progress, update: Update) -> Result<bool, StartupError> {
        match update {
            Update::Data { source, secret } => {
                p.latest[source] = Some(secret);
                p.source_errors[source] = None;
                Ok(true)
            }
            Update::Failed { source, error } => {
                let permanent = matches!(error, BackendError::Permanent(_) | BackendError::Denied(_));
                p.source_errors[source] = Some(error);
                if self.once && permanent && self.plan.sources[source].required && p.latest[source].is_none() {
                    return Err(StartupError::Failed(self.describe_missing(p)));
                }
                Ok(false)
            }
        }
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
        let mut p = Progress::new(self.plan.sources.len());
        let mut timed_out = false;
        let deadline = Instant::now() + self.config.startup_timeout;
        let http = crate::notify::reqwest_like::Client;
        loop {
            let update = tokio::select! {
                u = rx.recv() => match u { Some(u) => u, None => return Ok(()) },
                () = tokio::time::sleep_until(deadline), if !p.written && !timed_out => {
                    let missing = self.describe_missing(&p);
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
            if !self.take(&mut p, update)? {
                continue;
            }
            let Some(rendered) = self.render_all(&p.latest, &p.previous, &mut p.render_errors) else {
                let all_read = p.latest.iter().enumerate().all(|(i, l)| l.is_some() || !self.plan.sources[i].required);
                if self.once && !p.render_errors.is_empty() && all_read {
                    return Err(StartupError::Failed(self.describe_missing(&p)));
                }
                continue;
            };
            if p.written && same(&rendered, &p.previous) {
                continue;
            }
            let payload = self.payload(&rendered);
            match self.writer.write(&payload) {
                Ok(()) => {
                    self.metrics.rendered();
                    tracing::info!(files = payload.files.len() + payload.dirs.len(), "wrote the secret files");
                    p.previous = rendered;
                    if p.written {
                        crate::notify::notify(&self.config.on_change, &self.config.mount_path, &http, &self.metrics)
                            .await;
                    } else {
                        p.written = true;
                        self.metrics.set_ready();
                        let _ = ready.send(true);
                        if self.once {
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the secret files; keeping the last good ones");
                    self.metrics.render_failure("*");
                    if self.once {
                        return Err(StartupError::Failed(e.to_string()));
                    }
                }
            }
        }
    }
}

/// What the renderer knows so far.
struct Progress {
    /// The latest data of each source.
    latest: Vec<Option<Arc<Secret>>>,
    /// The last error of each source, until it reads again.
    source_errors: Vec<Option<BackendError>>,
    /// Files that cannot be rendered from the latest data, and why.
    render_errors: HashMap<String, String>,
    /// What was written last.
    previous: Rendered,
    /// Whether a complete set was written.
    written: bool,
}

impl Progress {
    fn new(sources: usize) -> Self {
        Progress {
            latest: vec![None; sources],
            source_errors: vec![None; sources],
            render_errors: HashMap::new(),
            previous: Rendered::new(),
            written: false,
        }
    }
}

fn render_file(
    spec: &FileSpec,
    go: Option<&GoTemplate>,
    indexes: &[usize],
    sources: &[Source],
    secrets: &[&Secret],
) -> Result<Vec<(String, SecretBytes, u32)>, crate::render::RenderError> {
    if let Some(template) = go {
        let read: Vec<crate::render::TemplateSource<'_>> = indexes
            .iter()
            .zip(secrets)
            .filter_map(|(&i, s)| match &sources[i].reference {
                Reference::Vault { path, .. } => Some(crate::render::TemplateSource {
                    path: path.as_str(),
                    write: sources[i].write.as_deref().unwrap_or_default(),
                    secret: s,
                }),
                _ => None,
            })
            .collect();
        return Ok(vec![(spec.name.clone(), render_go(spec, template, &read)?, spec.mode)]);
    }
    let Some(secret) = secrets.first() else { return Ok(Vec::new()) };
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

#[cfg(test)]
mod tests;
