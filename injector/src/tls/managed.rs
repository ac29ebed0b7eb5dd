//! The self-managed mode: a CA and serving certificate kept in a Secret
//! shared by every replica, and the webhook's caBundle kept current.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{CertStore, TlsError, certified_key};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// Where the material lives and what it must cover.
#[derive(Debug, Clone)]
pub struct Managed {
    /// The namespace of the Secret.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The MutatingWebhookConfiguration whose caBundle is kept current.
    pub webhook_config: String,
    /// DNS names and IP addresses of the serving certificate.
    pub sans: Vec<String>,
    /// Lifetime of a serving certificate.
    pub cert_lifetime: Duration,
    /// Lifetime of the CA.
    pub ca_lifetime: Duration,
}

/// The Secret's contents.
pub struct Material {
    /// PEM of every CA to trust (current first, then older ones still valid).
    pub ca_bundle: String,
    ca_cert: String,
    ca_key: String,
    /// Serving certificate PEM.
    pub cert: String,
    /// Serving key PEM.
    pub key: String,
    /// When the CA and the serving certificate expire (Unix seconds),
    /// kept in annotations so no certificate has to be parsed.
    ca_not_after: i64,
    cert_not_after: i64,
}

const CA_NOT_AFTER: &str = "sidekey.dev/ca-not-after";
const CERT_NOT_AFTER: &str = "sidekey.dev/cert-not-after";

fn ca_params(now: time_like::Now, lifetime: Duration) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap_or_default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, "sidekey-injector-ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = now.offset(-3600);
    p.not_after = now.offset(lifetime.as_secs() as i64);
    p
}

fn serving(
    ca_params: CertificateParams,
    ca_key: &KeyPair,
    sans: &[String],
    lifetime: Duration,
) -> Result<(String, String, i64), TlsError> {
    let key = KeyPair::generate().map_err(|e| TlsError::Pem(e.to_string()))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| TlsError::Pem(e.to_string()))?;
    for san in sans {
        match san.parse::<std::net::IpAddr>() {
            Ok(ip) => p.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => p.subject_alt_names.push(SanType::DnsName(
                san.clone().try_into().map_err(|_| TlsError::Pem(format!("bad DNS name {san}")))?,
            )),
        }
    }
    p.distinguished_name.push(DnType::CommonName, sans.first().map_or("sidekey-injector", String::as_str));
    let now = time_like::Now::get();
    p.not_before = now.offset(-3600);
    p.not_after = now.offset(lifetime.as_secs() as i64);
    let issuer = Issuer::new(ca_params, ca_key);
    let cert = p.signed_by(&key, &issuer).map_err(|e| TlsError::Pem(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem(), now.secs() + lifetime.as_secs() as i64))
}

fn generate(m: &Managed) -> Result<Material, TlsError> {
    let now = time_like::Now::get();
    let ca_key = KeyPair::generate().map_err(|e| TlsError::Pem(e.to_string()))?;
    let ca = ca_params(now, m.ca_lifetime).self_signed(&ca_key).map_err(|e| TlsError::Pem(e.to_string()))?;
    let (cert, key, cert_not_after) = serving(ca_params(now, m.ca_lifetime), &ca_key, &m.sans, m.cert_lifetime)?;
    Ok(Material {
        ca_bundle: ca.pem(),
        ca_cert: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        cert,
        key,
        ca_not_after: now.secs() + m.ca_lifetime.as_secs() as i64,
        cert_not_after,
    })
}

fn to_secret(m: &Managed, mat: &Material) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", &mat.ca_bundle),
        ("ca-current.crt", &mat.ca_cert),
        ("ca.key", &mat.ca_key),
        ("tls.crt", &mat.cert),
        ("tls.key", &mat.key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(m.secret.clone()),
            namespace: Some(m.namespace.clone()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "sidekey-injector".to_owned())])),
            annotations: Some(BTreeMap::from([
                (CA_NOT_AFTER.to_owned(), mat.ca_not_after.to_string()),
                (CERT_NOT_AFTER.to_owned(), mat.cert_not_after.to_string()),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// `new` as a replacement of `existing`: its resourceVersion (a
/// concurrent writer makes the replace fail, not vanish), the
/// installer's labels (ours only where it set none) and annotations
/// (Helm's ownership marks among them) with ours added.
fn replacing(existing: &Secret, mut new: Secret) -> Secret {
    new.metadata.resource_version = existing.metadata.resource_version.clone();
    // The type cannot change (the chart creates it Opaque, older installs
    // kubernetes.io/tls).
    if existing.type_.is_some() {
        new.type_ = existing.type_.clone();
    }
    // The installer's labels win (Helm checks its managed-by label).
    let mut labels = new.metadata.labels.take().unwrap_or_default();
    labels.extend(existing.metadata.labels.clone().unwrap_or_default());
    new.metadata.labels = Some(labels);
    let mut annotations = existing.metadata.annotations.clone().unwrap_or_default();
    annotations.extend(new.metadata.annotations.take().unwrap_or_default());
    new.metadata.annotations = Some(annotations);
    new
}

fn from_secret(s: &Secret) -> Option<Material> {
    let d = s.data.as_ref()?;
    let get = |k: &str| d.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
    let ann =
        |k: &str| s.metadata.annotations.as_ref().and_then(|a| a.get(k)).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(Material {
        ca_not_after: ann(CA_NOT_AFTER),
        cert_not_after: ann(CERT_NOT_AFTER),
        ca_bundle: get("ca.crt")?,
        ca_cert: get("ca-current.crt").or_else(|| get("ca.crt"))?,
        ca_key: get("ca.key")?,
        cert: get("tls.crt")?,
        key: get("tls.key")?,
    })
}

/// Whether the serving certificate and key in `mat` can be served.
fn serving_usable(mat: &Material) -> bool {
    certified_key(mat.cert.as_bytes(), mat.key.as_bytes()).is_ok()
}

/// A new serving certificate in `mat`, signed by its CA.
fn reissue_serving(m: &Managed, mat: &mut Material) -> Result<(), TlsError> {
    let ca_key = KeyPair::from_pem(&mat.ca_key).map_err(|e| TlsError::Pem(e.to_string()))?;
    let (cert, key, not_after) =
        serving(ca_params(time_like::Now::get(), m.ca_lifetime), &ca_key, &m.sans, m.cert_lifetime)?;
    mat.cert = cert;
    mat.key = key;
    mat.cert_not_after = not_after;
    Ok(())
}

/// Gets the Secret, filling it when it exists empty (as the chart
/// creates it) or creating it when absent (other installs); with several
/// replicas the first write wins and the others read what it wrote.
///
/// # Errors
/// [`TlsError::Kube`] when the API refuses.
pub async fn load_or_create(client: &kube::Client, m: &Managed) -> Result<Material, TlsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &m.namespace);
    for _ in 0..5 {
        if let Some(s) = api.get_opt(&m.secret).await.map_err(TlsError::kube("reading the TLS Secret"))? {
            if let Some(mut mat) = from_secret(&s) {
                if serving_usable(&mat) {
                    return Ok(mat);
                }
                // The CA is there but the serving certificate is not (an
                // `apply` of a manifest that lists the keys empty): a new
                // one from the same CA, so the published caBundle holds.
                reissue_serving(m, &mut mat)?;
                match api.replace(&m.secret, &PostParams::default(), &replacing(&s, to_secret(m, &mat))).await {
                    Ok(_) => {
                        tracing::warn!(secret = %m.secret, namespace = %m.namespace, "the Secret's serving certificate was unusable; issued a new one from its CA");
                        return Ok(mat);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(TlsError::kube("repairing the TLS Secret")(e)),
                }
            }
            // The chart creates the Secret empty, so the injector needs
            // no right to create Secrets (which would let it mint
            // ServiceAccount tokens); fill it, the first replica wins.
            let empty = s.data.as_ref().is_none_or(|d| d.values().all(|v| v.0.is_empty()));
            if !empty {
                return Err(TlsError::UnusableSecret(format!("{}/{}", m.namespace, m.secret)));
            }
            let mat = generate(m)?;
            let filled = replacing(&s, to_secret(m, &mat));
            match api.replace(&m.secret, &PostParams::default(), &filled).await {
                Ok(_) => {
                    tracing::info!(secret = %m.secret, namespace = %m.namespace, "filled the webhook CA and serving certificate into the empty Secret");
                    return Ok(mat);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(TlsError::kube("filling the TLS Secret")(e)),
            }
        }
        let mat = generate(m)?;
        match api.create(&PostParams::default(), &to_secret(m, &mat)).await {
            Ok(_) => {
                tracing::info!(secret = %m.secret, namespace = %m.namespace, "created the webhook CA and serving certificate");
                return Ok(mat);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(TlsError::kube("creating the TLS Secret")(e)),
        }
    }
    Err(TlsError::Contended(format!("the TLS Secret {}/{}", m.namespace, m.secret)))
}

/// Sets the caBundle of every webhook of the configuration.
///
/// # Errors
/// [`TlsError::Kube`] when the configuration cannot be read or patched.
pub async fn publish_ca(client: &kube::Client, m: &Managed, ca_bundle: &str) -> Result<bool, TlsError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let encoded = ByteString(ca_bundle.as_bytes().to_vec());
    // Read-modify-replace with the resourceVersion: a concurrent writer
    // (another replica) makes this fail with 409 and we try again.
    for _ in 0..5 {
        let mut current =
            api.get(&m.webhook_config).await.map_err(TlsError::kube("reading the MutatingWebhookConfiguration"))?;
        let webhooks = current.webhooks.get_or_insert_with(Vec::new);
        if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(&encoded)) {
            return Ok(false);
        }
        for w in webhooks.iter_mut() {
            w.client_config.ca_bundle = Some(encoded.clone());
        }
        match api.replace(&m.webhook_config, &PostParams::default(), &current).await {
            Ok(_) => {
                tracing::info!(webhook_config = %m.webhook_config, "published the CA bundle");
                return Ok(true);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(TlsError::kube("updating the webhook caBundle")(e)),
        }
    }
    Err(TlsError::Contended(format!("MutatingWebhookConfiguration {}", m.webhook_config)))
}

/// Sets up the self-managed certificate: Secret, caBundle, store.
///
/// # Errors
/// [`TlsError`].
pub async fn start(client: &kube::Client, m: &Managed) -> Result<std::sync::Arc<CertStore>, TlsError> {
    let mat = load_or_create(client, m).await?;
    publish_ca(client, m, &mat.ca_bundle).await?;
    Ok(CertStore::new(certified_key(mat.cert.as_bytes(), mat.key.as_bytes())?))
}

/// Keeps the material fresh: re-reads the Secret (another replica may
/// have rotated it), re-issues the serving certificate when a third of
/// its lifetime is left, rotates the CA likewise (the old CA stays in the
/// bundle until it expires), and re-publishes the caBundle.
pub async fn maintain(
    client: kube::Client,
    m: Managed,
    store: std::sync::Arc<CertStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = refresh(&client, &m, &store).await {
            tracing::warn!(error = %e, "refreshing the self-managed certificate failed; retrying in a minute");
        }
    }
}

async fn refresh(client: &kube::Client, m: &Managed, store: &CertStore) -> Result<(), TlsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &m.namespace);
    let secret = api.get(&m.secret).await.map_err(TlsError::kube("reading the TLS Secret"))?;
    let Some(mut mat) = from_secret(&secret) else {
        return Err(TlsError::UnusableSecret(format!("{}/{}", m.namespace, m.secret)));
    };
    let mut changed = false;
    let left = |not_after: i64| not_after - time_like::Now::get().secs();
    if left(mat.ca_not_after) < (m.ca_lifetime / 3).as_secs() as i64 {
        let now = time_like::Now::get();
        let key = KeyPair::generate().map_err(|e| TlsError::Pem(e.to_string()))?;
        let ca = ca_params(now, m.ca_lifetime).self_signed(&key).map_err(|e| TlsError::Pem(e.to_string()))?;
        // Trust the new CA before serving anything it signed.
        mat.ca_bundle = format!("{}{}", ca.pem(), mat.ca_cert);
        mat.ca_cert = ca.pem();
        mat.ca_key = key.serialize_pem();
        mat.ca_not_after = now.secs() + m.ca_lifetime.as_secs() as i64;
        publish_ca(client, m, &mat.ca_bundle).await?;
        let (cert, k, not_after) = serving(ca_params(now, m.ca_lifetime), &key, &m.sans, m.cert_lifetime)?;
        mat.cert = cert;
        mat.key = k;
        mat.cert_not_after = not_after;
        changed = true;
    } else if left(mat.cert_not_after) < (m.cert_lifetime / 3).as_secs() as i64 || !serving_usable(&mat) {
        reissue_serving(m, &mut mat)?;
        changed = true;
    }
    if changed {
        let s = replacing(&secret, to_secret(m, &mat));
        api.replace(&m.secret, &PostParams::default(), &s)
            .await
            .map_err(TlsError::kube("rotating the serving certificate"))?;
        tracing::info!("rotated the self-managed serving certificate");
    }
    publish_ca(client, m, &mat.ca_bundle).await?;
    store.replace(certified_key(mat.cert.as_bytes(), mat.key.as_bytes())?);
    Ok(())
}

/// The clock for certificate validity.
pub(crate) mod time_like {
    /// Now, in Unix seconds.
    #[derive(Clone, Copy)]
    pub struct Now(i64);

    impl Now {
        pub fn get() -> Now {
            Now(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
        }

        pub fn secs(self) -> i64 {
            self.0
        }

        pub fn offset(self, secs: i64) -> time::OffsetDateTime {
            time::OffsetDateTime::from_unix_timestamp(self.0 + secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        }
    }
}
