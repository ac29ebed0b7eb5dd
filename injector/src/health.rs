//! The injector's check of its own webhook configuration, done the way the
//! API server will use it:
//!
//! - `configuration`: the MutatingWebhookConfiguration can be read and has
//!   webhooks;
//! - `ca_bundle`: every webhook's caBundle trusts the certificate this
//!   replica serves, for the name the API server will check (the Service's
//!   `name.namespace.svc`, or the host of the webhook's URL);
//! - `service`: the endpoint each webhook names (its Service, or its URL)
//!   completes a TLS handshake verified by that caBundle.
//!
//! The results are the gauge
//! `sidekey_injector_webhook_configuration_healthy{check}` (1 or 0); a
//! check that starts failing (or fails for a new reason) is logged with
//! the reason, and again when it recovers. A failed round is repeated after 10 s rather than the full
//! interval, so a replica that started before its Service had endpoints
//! reports healthy soon after.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, WebhookClientConfig};
use kube::api::Api;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::metrics::Metrics;
use crate::tls::CertStore;

/// One check of the webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The configuration can be read and has webhooks.
    Configuration,
    /// Every caBundle trusts the served certificate.
    CaBundle,
    /// Every webhook's endpoint answers a verified TLS handshake.
    Service,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Check; 3] = [Check::Configuration, Check::CaBundle, Check::Service];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Configuration => "configuration",
            Check::CaBundle => "ca_bundle",
            Check::Service => "service",
        }
    }
}

/// The outcome of one round: for each check, `Ok` or why it failed.
pub type Report = [(Check, Result<(), String>); 3];

/// Where the API server sends a webhook's reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name it connects to and verifies the certificate for.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Endpoint {
    /// The endpoint of a webhook's clientConfig: the Service's
    /// `name.namespace.svc` (port 443 unless set), or the URL's host.
    ///
    /// # Errors
    /// Why the clientConfig names no endpoint.
    pub fn of(config: &WebhookClientConfig) -> Result<Endpoint, String> {
        if let Some(s) = &config.service {
            let port = s.port.unwrap_or(443);
            let port = u16::try_from(port).map_err(|_| format!("service port {port} is out of range"))?;
            return Ok(Endpoint { host: format!("{}.{}.svc", s.name, s.namespace), port });
        }
        let Some(url) = &config.url else {
            return Err("clientConfig has neither service nor url".into());
        };
        let rest = url.strip_prefix("https://").ok_or_else(|| format!("url {url:?} is not https"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = match authority.strip_prefix('[') {
            // [v6]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| format!("url {url:?}: unclosed '['"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => 443,
            Some(p) => p.parse().map_err(|_| format!("url {url:?}: bad port {p:?}"))?,
        };
        if host.is_empty() {
            return Err(format!("url {url:?} has no host"));
        }
        Ok(Endpoint { host: host.to_owned(), port })
    }

    fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone()).map_err(|_| format!("{:?} is not a valid server name", self.host))
    }
}

/// The trust anchors of a caBundle.
///
/// # Errors
/// Why the caBundle cannot be used.
pub fn roots(ca_bundle: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle) {
        let cert = cert.map_err(|e| format!("the caBundle is not PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("the caBundle holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the caBundle is empty".into());
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `roots` trust `chain` (leaf first) for `endpoint`, now.
///
/// # Errors
/// The verifier's reason.
pub fn trusts(roots: Arc<RootCertStore>, chain: &[CertificateDer<'static>], endpoint: &Endpoint) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate is served")?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("the caBundle cannot verify: {e}"))?;
    verifier
        .verify_server_cert(leaf, intermediates, &endpoint.server_name()?, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("the caBundle does not trust the served certificate for {}: {e}", endpoint.host))
}

/// A TLS handshake with `endpoint`, verified by `roots`, within `timeout`.
///
/// # Errors
/// Why it did not complete.
pub async fn handshake(roots: Arc<RootCertStore>, endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = endpoint.server_name()?;
    let at = format!("{}:{}", endpoint.host, endpoint.port);
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("connecting to {at}: {e}"))?;
        connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {at}: {e}"))?;
        Ok(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{at} did not complete a TLS handshake in {}s", timeout.as_secs())))
}

/// One round of checks of the configuration `name`.
pub async fn check(client: &kube::Client, name: &str, store: &CertStore) -> Report {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let webhooks = match api.get(name).await {
        Ok(c) => c.webhooks.unwrap_or_default(),
        Err(kube::Error::Api(e)) => {
            let why = format!("reading MutatingWebhookConfiguration {name}: {} ({})", e.message, e.code);
            return not_checked(Err(why));
        }
        Err(e) => return not_checked(Err(format!("reading MutatingWebhookConfiguration {name}: {e}"))),
    };
    if webhooks.is_empty() {
        return not_checked(Err(format!("MutatingWebhookConfiguration {name} has no webhooks")));
    }
    let chain = store.chain();
    let (mut ca_bundle, mut service) = (Ok(()), Ok(()));
    for w in &webhooks {
        let named = |e: String| format!("webhook {}: {e}", w.name);
        let endpoint = match Endpoint::of(&w.client_config) {
            Ok(e) => e,
            Err(e) => {
                return [
                    (Check::Configuration, Err(named(e))),
                    (Check::CaBundle, not_run()),
                    (Check::Service, not_run()),
                ];
            }
        };
        let bundle = w.client_config.ca_bundle.as_ref().map_or(&[][..], |b| b.0.as_slice());
        let roots = match roots(bundle) {
            Ok(r) => r,
            Err(e) => {
                first_error(&mut ca_bundle, named(e.clone()));
                first_error(&mut service, named(e));
                continue;
            }
        };
        if let Err(e) = trusts(roots.clone(), &chain, &endpoint) {
            first_error(&mut ca_bundle, named(e));
        }
        if let Err(e) = handshake(roots, &endpoint, Duration::from_secs(5)).await {
            first_error(&mut service, named(e));
        }
    }
    [(Check::Configuration, Ok(())), (Check::CaBundle, ca_bundle), (Check::Service, service)]
}

fn first_error(slot: &mut Result<(), String>, e: String) {
    if slot.is_ok() {
        *slot = Err(e);
    }
}

fn not_run() -> Result<(), String> {
    Err("not checked: the configuration check failed".into())
}

fn not_checked(configuration: Result<(), String>) -> Report {
    [(Check::Configuration, configuration), (Check::CaBundle, not_run()), (Check::Service, not_run())]
}

/// Checks the configuration `name` every `every` (10 s while a check
/// fails) until shutdown, publishing each round in `metrics`.
pub async fn watch(
    client: kube::Client,
    name: String,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last: Option<Report> = None;
    loop {
        let report = check(&client, &name, &store).await;
        for (check, result) in &report {
            metrics.webhook_check(check.as_str(), result.is_ok());
            let was = last.as_ref().and_then(|r| r.iter().find(|(c, _)| c == check)).map(|(_, r)| r);
            match result {
                // A new failure, or the same check failing for another reason.
                Err(why) if was.is_none_or(|w| w.as_ref().err() != Some(why)) => {
                    tracing::warn!(webhook_config = %name, check = check.as_str(), reason = %why, "the webhook configuration fails a check");
                }
                Ok(()) if was.is_some_and(Result::is_err) => {
                    tracing::info!(webhook_config = %name, check = check.as_str(), "the webhook configuration passes the check again");
                }
                _ => {}
            }
        }
        let healthy = report.iter().all(|(_, r)| r.is_ok());
        if healthy && last.is_none() {
            tracing::info!(webhook_config = %name, "the webhook configuration is healthy");
        }
        last = Some(report);
        let wait = if healthy { every } else { every.min(Duration::from_secs(10)) };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ServiceReference;

    fn url(u: &str) -> Result<Endpoint, String> {
        Endpoint::of(&WebhookClientConfig { url: Some(u.into()), ..Default::default() })
    }

    fn at(host: &str, port: u16) -> Result<Endpoint, String> {
        Ok(Endpoint { host: host.into(), port })
    }

    #[test]
    fn endpoints_are_where_the_api_server_connects() {
        let service = WebhookClientConfig {
            service: Some(ServiceReference { name: "inj".into(), namespace: "sk".into(), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(Endpoint::of(&service), at("inj.sk.svc", 443));
        let mut other_port = service.clone();
        other_port.service.as_mut().unwrap().port = Some(8443);
        assert_eq!(Endpoint::of(&other_port), at("inj.sk.svc", 8443));
        assert_eq!(url("https://127.0.0.1:9443/mutate"), at("127.0.0.1", 9443));
        assert_eq!(url("https://hook.example.com/mutate?x=1"), at("hook.example.com", 443));
        assert_eq!(url("https://[::1]:8443/mutate"), at("::1", 8443));
        assert_eq!(url("https://[::1]/"), at("::1", 443));
        for bad in ["http://x/mutate", "https://:443/", "https://x:port/", "https://[::1/"] {
            assert!(url(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::of(&WebhookClientConfig::default()).is_err());
    }

    #[test]
    fn a_ca_bundle_must_hold_certificates() {
        assert_eq!(roots(b"").unwrap_err(), "the caBundle is empty");
        assert_eq!(roots(b"not pem").unwrap_err(), "the caBundle is empty");
        assert!(roots(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
