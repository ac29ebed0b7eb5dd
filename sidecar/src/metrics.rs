//! The agent's Prometheus metrics. Labels carry references (paths, ARNs)
//! and outcomes, never values.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    fetches: Family<Labels, Counter>,
    version_checks: Family<Labels, Counter>,
    renewals: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    logins: Family<Labels, Counter>,
    token_renewals: Family<Labels, Counter>,
    notifications: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    throttled: Family<Labels, Counter>,
    renders: Counter,
    render_failures: Family<Labels, Counter>,
    last_render: Gauge<f64, AtomicU64>,
    lease_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    lease_expiry: Mutex<HashMap<String, SystemTime>>,
    failing_since: Family<Labels, Gauge<f64, AtomicU64>>,
    login_failing_since: Gauge<f64, AtomicU64>,
    ready: Gauge,
    is_ready: AtomicBool,
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// A run of failures starts at the first one and ends at a success: the
/// gauge holds the time of the first failure since the last success, so an
/// alert compares it with the clock (a counter's `increase()` cannot: its
/// first sample shows none, and an agent that never needs to log in again
/// shows no successes).
fn track(since: &Gauge<f64, AtomicU64>, ok: bool) {
    if ok {
        since.set(0.0);
    } else if since.get() == 0.0 {
        since.set(now_s());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sidekey_agent");
        let m = Metrics {
            fetches: Family::default(),
            version_checks: Family::default(),
            renewals: Family::default(),
            failures: Family::default(),
            logins: Family::default(),
            token_renewals: Family::default(),
            notifications: Family::default(),
            requests: Family::default(),
            throttled: Family::default(),
            renders: Counter::default(),
            render_failures: Family::default(),
            last_render: Gauge::default(),
            lease_seconds: Family::default(),
            lease_expiry: Mutex::default(),
            failing_since: Family::default(),
            login_failing_since: Gauge::default(),
            ready: Gauge::default(),
            is_ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register("fetches", "Secret reads, by source and outcome", m.fetches.clone());
        registry.register(
            "version_checks",
            "Cheap checks for a new version, by source and outcome",
            m.version_checks.clone(),
        );
        registry.register("lease_renewals", "Lease renewals, by source and outcome", m.renewals.clone());
        registry.register(
            "failures",
            "Backend failures, by source and kind (transient, denied, permanent)",
            m.failures.clone(),
        );
        registry.register("logins", "Vault logins, by outcome", m.logins.clone());
        registry.register("token_renewals", "Vault token renewals, by outcome", m.token_renewals.clone());
        registry.register("notifications", "on-change notifications of the app, by outcome", m.notifications.clone());
        registry.register("requests", "Requests sent to a secret store, by backend (vault, aws)", m.requests.clone());
        registry.register(
            "throttled",
            "Answers asking to slow down (HTTP 429, 503, throttling errors), by backend",
            m.throttled.clone(),
        );
        registry.register("renders", "Times a new set of files was written", m.renders.clone());
        registry.register(
            "render_failures",
            "Files that could not be rendered (template errors, missing keys) or written, by file",
            m.render_failures.clone(),
        );
        registry.register(
            "last_render_timestamp_seconds",
            "When files were last written (Unix time)",
            m.last_render.clone(),
        );
        registry.register(
            "lease_expiry_seconds",
            "Seconds until each lease expires, by source",
            m.lease_seconds.clone(),
        );
        registry.register(
            "failing_since_timestamp_seconds",
            "When the requests about a source started failing (Unix time; 0 while the last one succeeded), \
             by source and op (read: reading it; refresh: renewing its lease or checking its version)",
            m.failing_since.clone(),
        );
        registry.register(
            "login_failing_since_timestamp_seconds",
            "When logins started failing (Unix time; 0 while the last login succeeded or none was needed)",
            m.login_failing_since.clone(),
        );
        registry.register("ready", "1 once every file has been written", m.ready.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// A read of `source`.
    pub fn fetch(&self, source: &str, ok: bool) {
        self.fetches.get_or_create(&vec![("source", source.to_owned()), ("outcome", outcome(ok).into())]).inc();
        self.failing(source, "read", ok);
        if ok {
            // What was held before is replaced: its refresh failures are moot.
            self.failing(source, "refresh", true);
        }
    }

    fn failing(&self, source: &str, op: &'static str, ok: bool) {
        let labels = vec![("source", source.to_owned()), ("op", op.to_owned())];
        // Series appear with the first failure, not with every success.
        if ok && self.failing_since.get(&labels).is_none() {
            return;
        }
        track(&self.failing_since.get_or_create(&labels), ok);
    }

    /// A version check of `source`.
    pub fn version_check(&self, source: &str, ok: bool) {
        self.version_checks.get_or_create(&vec![("source", source.to_owned()), ("outcome", outcome(ok).into())]).inc();
        self.failing(source, "refresh", ok);
    }

    /// A lease renewal of `source`.
    pub fn renewal(&self, source: &str, ok: bool) {
        self.renewals.get_or_create(&vec![("source", source.to_owned()), ("outcome", outcome(ok).into())]).inc();
        self.failing(source, "refresh", ok);
    }

    /// A failure of `source` of `kind`.
    pub fn failure(&self, source: &str, kind: &str) {
        self.failures.get_or_create(&vec![("source", source.to_owned()), ("kind", kind.to_owned())]).inc();
    }

    /// A login.
    pub fn login(&self, ok: bool) {
        self.logins.get_or_create(&vec![("outcome", outcome(ok).into())]).inc();
        track(&self.login_failing_since, ok);
    }

    /// A request to the secret store `backend` (`vault`, `aws`).
    pub fn request(&self, backend: &'static str) {
        self.requests.get_or_create(&vec![("backend", backend.to_owned())]).inc();
    }

    /// `backend` asked to slow down.
    pub fn throttled(&self, backend: &'static str) {
        self.throttled.get_or_create(&vec![("backend", backend.to_owned())]).inc();
    }

    /// A token renewal.
    pub fn token_renewal(&self, ok: bool) {
        self.token_renewals.get_or_create(&vec![("outcome", outcome(ok).into())]).inc();
    }

    /// An on-change notification.
    pub fn notification(&self, ok: bool) {
        self.notifications.get_or_create(&vec![("outcome", outcome(ok).into())]).inc();
    }

    /// `file` could not be rendered or written (`*` for the whole set).
    pub fn render_failure(&self, file: &str) {
        self.render_failures.get_or_create(&vec![("file", file.to_owned())]).inc();
    }

    /// A new set of files was written.
    pub fn rendered(&self) {
        self.renders.inc();
        self.last_render.set(now_s());
    }

    /// The lease of `source` now ends at `at` (`None`: no lease).
    pub fn lease_expiry(&self, source: &str, at: Option<SystemTime>) {
        if let Ok(mut m) = self.lease_expiry.lock() {
            match at {
                Some(t) => {
                    m.insert(source.to_owned(), t);
                }
                None => {
                    m.remove(source);
                }
            }
        }
    }

    /// Every file has been written once.
    pub fn set_ready(&self) {
        self.ready.set(1);
        self.is_ready.store(true, Ordering::SeqCst);
    }

    /// Whether [`Metrics::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.is_ready.load(Ordering::SeqCst)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        if let Ok(m) = self.lease_expiry.lock() {
            let now = SystemTime::now();
            for (source, at) in m.iter() {
                let left = at.duration_since(now).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                self.lease_seconds.get_or_create(&vec![("source", source.clone())]).set(left);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl sidekey_runtime::Admin for Metrics {
    fn metrics(&self) -> String {
        self.encode()
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::default();
        m.fetch("vault:secret/data/a", true);
        m.lease_expiry("vault:database/creds/app", Some(SystemTime::now() + std::time::Duration::from_secs(30)));
        let text = m.encode();
        assert!(
            text.contains("sidekey_agent_fetches_total{source=\"vault:secret/data/a\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("sidekey_agent_lease_expiry_seconds{source=\"vault:database/creds/app\"} 2"), "{text}");
    }

    fn failing_since(m: &Metrics, source: &str, op: &'static str) -> Option<f64> {
        m.failing_since.get(&vec![("source", source.to_owned()), ("op", op.to_owned())]).map(|g| g.get())
    }

    #[test]
    fn a_run_of_failures_is_dated_by_its_first_and_ended_by_a_success() {
        let m = Metrics::default();
        let src = "vault:database/creds/app";
        m.fetch(src, true);
        assert_eq!(failing_since(&m, src, "read"), None, "no series before a failure");
        m.renewal(src, false);
        let first = failing_since(&m, src, "refresh").unwrap();
        assert!(first > 1.0e9, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        m.renewal(src, false);
        assert_eq!(failing_since(&m, src, "refresh"), Some(first), "a later failure keeps the first time");
        m.fetch(src, false);
        assert!(failing_since(&m, src, "read").unwrap() > first);
        // A new credential read ends both runs: the old lease's renewals no
        // longer matter.
        m.fetch(src, true);
        assert_eq!(failing_since(&m, src, "read"), Some(0.0));
        assert_eq!(failing_since(&m, src, "refresh"), Some(0.0));
        assert_eq!(m.login_failing_since.get(), 0.0);
        m.login(false);
        assert!(m.login_failing_since.get() > 1.0e9);
        m.login(true);
        assert_eq!(m.login_failing_since.get(), 0.0);
        let text = m.encode();
        assert!(text.contains("sidekey_agent_login_failing_since_timestamp_seconds 0"), "{text}");
        assert!(
            text.contains(
                "sidekey_agent_failing_since_timestamp_seconds{source=\"vault:database/creds/app\",op=\"refresh\"} 0"
            ),
            "{text}"
        );
    }
}
