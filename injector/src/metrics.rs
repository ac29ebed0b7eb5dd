//! The injector's Prometheus metrics: reviews by verdict, latency,
//! injections, denials and errors. Labels never carry pod specs or values.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric of the injector.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Histogram,
    injections: Counter,
    denials: Counter,
    errors: Family<Labels, Counter>,
    tls_reloads: Counter,
    certificate_expiry: Gauge,
    webhook_health: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sidekey_injector");
        let requests = Family::<Labels, Counter>::default();
        // 50 µs … ~3 s.
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let (injections, denials, tls_reloads) = (Counter::default(), Counter::default(), Counter::default());
        let errors = Family::<Labels, Counter>::default();
        registry.register("requests", "AdmissionReviews handled, by verdict", requests.clone());
        registry.register("request_duration_seconds", "Time to answer an AdmissionReview", latency.clone());
        registry.register("injections", "Pods injected", injections.clone());
        registry.register("denials", "Pods denied (invalid or refused by policy)", denials.clone());
        registry.register("errors", "Requests that were not valid AdmissionReviews, by reason", errors.clone());
        registry.register("tls_reloads", "Serving certificate reloads", tls_reloads.clone());
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate ends (Unix time)",
            certificate_expiry.clone(),
        );
        let webhook_health = Family::<Labels, Gauge>::default();
        registry.register(
            "webhook_configuration_healthy",
            "Whether the webhook configuration passes a check (1) or not (0), by check: configuration, ca_bundle, service",
            webhook_health.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            injections,
            denials,
            errors,
            tls_reloads,
            certificate_expiry,
            webhook_health,
        }
    }
}

impl Metrics {
    /// One review answered.
    pub fn review(&self, verdict: crate::review::Verdict, seconds: f64) {
        use crate::review::Verdict;
        self.requests.get_or_create(&vec![("verdict", verdict.as_str().to_owned())]).inc();
        self.latency.observe(seconds);
        match verdict {
            Verdict::Injected => {
                self.injections.inc();
            }
            Verdict::Denied => {
                self.denials.inc();
            }
            Verdict::BadRequest => {
                self.errors.get_or_create(&vec![("reason", "bad_request".to_owned())]).inc();
            }
            Verdict::Skipped => {}
        }
    }

    /// An error outside the review logic (`reason`: `body_too_large`, `read_body`, `body_timeout`,
    /// `too_many_connections`, `not_found`).
    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// The gauge of the serving certificate's end, for the certificate store.
    pub fn certificate_expiry(&self) -> Gauge {
        self.certificate_expiry.clone()
    }

    /// The outcome of one check of the webhook configuration
    /// ([`crate::health`]).
    pub fn webhook_check(&self, check: &'static str, healthy: bool) {
        self.webhook_health.get_or_create(&vec![("check", check.to_owned())]).set(i64::from(healthy));
    }

    /// The certificate was reloaded.
    pub fn tls_reload(&self) {
        self.tls_reloads.inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
