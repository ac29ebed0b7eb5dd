//! The secret stores `migrate --push` writes to: Vault/OpenBao KV (v2 or
//! v1) and AWS Secrets Manager. Each reads the current value (to compare,
//! so a second run writes nothing) and writes a new one. Messages name
//! paths and keys, never values.
//!
//! Vault is configured the way the `vault`/`bao` CLI is: `VAULT_ADDR` (or
//! `BAO_ADDR`), `VAULT_TOKEN` (or `BAO_TOKEN`, or `~/.vault-token`),
//! `VAULT_NAMESPACE`, `VAULT_CACERT`. AWS through the SDK's default chain
//! (`AWS_REGION`, `AWS_PROFILE`, IRSA, `AWS_ENDPOINT_URL`…).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::kv::{self, KvError, KvPath, Mount};
use crate::reference::{AwsVersion, Reference};
use crate::secret::{ExposeSecret, SecretString, SecretValue};

/// What a store holds at one reference.
pub struct Current {
    /// The value, `None` when there is none (absent or deleted).
    pub value: Option<SecretValue>,
    /// Vault only: the KV version of the mount, found by the read.
    kv: Option<KvPath>,
    /// Vault KV v2 only: the current version, for check-and-set.
    version: u64,
}

/// The stores, each set up on first use.
#[derive(Default)]
pub struct Stores {
    vault: Option<Vault>,
    /// Secrets Manager clients by region (`None`: the environment's).
    aws: std::collections::HashMap<Option<String>, aws_sdk_secretsmanager::Client>,
}

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl Stores {
    /// Reads what `reference` holds now.
    ///
    /// # Errors
    /// A message naming the reference and the reason.
    pub async fn read(&mut self, reference: &Reference) -> Result<Current, String> {
        match reference {
            Reference::Vault { path, .. } => self.vault()?.read(path).await,
            Reference::Aws { secret_id, version, .. } => {
                if *version != AwsVersion::Current {
                    return Err(format!("{reference}: pinned to a version; push writes the current version only"));
                }
                let client = self.aws(reference.arn_region()).await;
                aws_read(&client, secret_id).await
            }
            _ => Err(format!("{reference}: sidekey pushes to vault: and aws-sm: references only")),
        }
    }

    /// Writes `value` to `reference`, given what [`Stores::read`] found.
    ///
    /// # Errors
    /// A message naming the reference and the reason.
    pub async fn write(&mut self, reference: &Reference, current: &Current, value: &SecretValue) -> Result<(), String> {
        // KV v1 and Secrets Manager have no check-and-set: read again just
        // before writing, and stop if the value changed since the first read
        // (this narrows the window; only KV v2's cas closes it).
        let unchecked = match reference {
            Reference::Vault { .. } => matches!(current.kv, Some(KvPath::V1)),
            _ => true,
        };
        if unchecked {
            let now = self.read(reference).await?;
            let same = match (&now.value, &current.value) {
                (None, None) => true,
                (Some(now), Some(then)) => crate::push::compare(Some(now), then) == crate::push::Comparison::Unchanged,
                _ => false,
            };
            if !same {
                return Err(format!("{reference}: changed in the store since it was read; not written"));
            }
        }
        match reference {
            Reference::Vault { path, .. } => self.vault()?.write(path, current, value).await,
            Reference::Aws { secret_id, .. } => {
                let client = self.aws(reference.arn_region()).await;
                aws_write(&client, secret_id, current, value).await
            }
            _ => Err(format!("{reference}: sidekey pushes to vault: and aws-sm: references only")),
        }
    }

    fn vault(&mut self) -> Result<&Vault, String> {
        if self.vault.is_none() {
            self.vault = Some(Vault::from_env()?);
        }
        self.vault.as_ref().ok_or_else(|| "no Vault client".to_owned())
    }

    async fn aws(&mut self, region: Option<&str>) -> aws_sdk_secretsmanager::Client {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let key = region.map(str::to_owned);
        if let Some(c) = self.aws.get(&key) {
            return c.clone();
        }
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        let client = aws_sdk_secretsmanager::Client::new(&loader.load().await);
        self.aws.insert(key, client.clone());
        client
    }
}

/// A Vault/OpenBao client with a token.
struct Vault {
    http: reqwest::Client,
    addr: String,
    token: SecretString,
    namespace: Option<String>,
    /// The last `X-Vault-Index` answered, sent back for read-your-writes
    /// on a cluster whose standbys answer reads ([`kv::INDEX_HEADER`]):
    /// the version a push reads before its check-and-set write is then
    /// never older than one it wrote before.
    index: std::sync::Mutex<Option<reqwest::header::HeaderValue>>,
}

impl Vault {
    fn from_env() -> Result<Self, String> {
        let addr = env(&["VAULT_ADDR", "BAO_ADDR"])
            .ok_or("VAULT_ADDR (or BAO_ADDR) is not set: the address of the Vault or OpenBao to push to")?;
        let token = match env(&["VAULT_TOKEN", "BAO_TOKEN"]) {
            Some(t) => t,
            None => std::env::var_os("HOME")
                .and_then(|h| std::fs::read_to_string(std::path::Path::new(&h).join(".vault-token")).ok())
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .ok_or(
                    "VAULT_TOKEN (or BAO_TOKEN, or ~/.vault-token) is not set: a token that may write the KV paths",
                )?,
        };
        let mut builder = reqwest::Client::builder()
            // Never follow a redirect: it would carry X-Vault-Token along.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sidekey/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = env(&["VAULT_CACERT", "BAO_CACERT"]) {
            let pem = std::fs::read(&ca).map_err(|e| format!("VAULT_CACERT {ca}: {e}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("VAULT_CACERT {ca}: {e}"))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| format!("Vault HTTP client: {e}"))?;
        Ok(Vault {
            http,
            addr: addr.trim_end_matches('/').to_owned(),
            token: SecretString::from(token),
            namespace: env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]),
            index: std::sync::Mutex::default(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", self.token.expose_secret())
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_vec());
        }
        if let Some(index) = self.index.lock().ok().and_then(|i| i.clone()) {
            req = req.header(kv::INDEX_HEADER, index).header(kv::INCONSISTENT.0, kv::INCONSISTENT.1);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {path}: cannot reach {}: {e}", self.addr))?;
        let status = resp.status();
        if let Some(index) = resp.headers().get(kv::INDEX_HEADER).filter(|v| v.len() <= kv::MAX_INDEX_BYTES)
            && let Ok(mut kept) = self.index.lock()
        {
            *kept = Some(index.clone());
        }
        let text = Zeroizing::new(resp.text().await.map_err(|e| format!("{method} {path}: {e}"))?);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, v))
    }

    fn failure(method: &Method, path: &str, status: StatusCode, v: &Value) -> String {
        let errors = v["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
        let detail = errors.filter(|e| !e.is_empty()).unwrap_or_else(|| "no error detail".into());
        let hint = match status {
            StatusCode::FORBIDDEN => " (the token needs read, create and update on this path)",
            _ => "",
        };
        format!("{method} {path}: HTTP {}: {detail}{hint}", status.as_u16())
    }

    /// How `path` is written, from its mount as `vault kv` finds it.
    async fn kv(&self, path: &str) -> Result<KvPath, String> {
        let (status, v) = self.call(Method::GET, &kv::mount_endpoint(path), None).await?;
        if !status.is_success() {
            // No access to the mount list: go by the path's shape.
            return Ok(KvPath::by_shape(path));
        }
        let mount = Mount::from_answer(&v).filter(Mount::is_kv).ok_or_else(|| {
            let kind = v["data"]["type"].as_str().unwrap_or("").to_owned();
            let mount = v["data"]["path"].as_str().unwrap_or("").to_owned();
            format!("{}: sidekey pushes to KV only", KvError::NotKv { path: path.to_owned(), kind, mount })
        })?;
        KvPath::on(path, &mount).map_err(|e| e.to_string())
    }

    async fn read(&self, path: &str) -> Result<Current, String> {
        let kv = self.kv(path).await?;
        let (status, mut v) = self.call(Method::GET, path, None).await?;
        if status == StatusCode::NOT_FOUND {
            // KV v2 answers 404 for a deleted current version too, with its metadata.
            let version = v["data"]["metadata"]["version"].as_u64().unwrap_or(0);
            return Ok(Current { value: None, kv: Some(kv), version });
        }
        if !status.is_success() {
            return Err(Self::failure(&Method::GET, path, status, &v));
        }
        let (data, version) = kv.take_fields(&mut v);
        drop(SecretValue::new(v));
        let value = (!data.is_null()).then(|| SecretValue::new(data));
        Ok(Current { value, kv: Some(kv), version: version.unwrap_or(0) })
    }

    async fn write(&self, path: &str, current: &Current, value: &SecretValue) -> Result<(), String> {
        let kv = match &current.kv {
            Some(kv) => kv.clone(),
            None => self.kv(path).await?,
        };
        // KV v2: check-and-set, which fails rather than overwrite a version
        // written since the read.
        let body = kv.write_body(value.expose_secret(), current.version);
        let bytes = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| format!("POST {path}: {e}"))?);
        drop(SecretValue::new(body));
        let (status, v) = self.call(Method::POST, path, Some(bytes)).await?;
        if !status.is_success() {
            return Err(Self::failure(&Method::POST, path, status, &v));
        }
        Ok(())
    }
}

fn aws_error<E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::fmt::Display, R>(
    op: &str,
    id: &str,
    e: &aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> String {
    use aws_sdk_secretsmanager::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown error");
            let msg = se.err().message().unwrap_or("");
            format!("{op} {id}: {code}: {msg}")
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            format!("{op} {id}: cannot reach Secrets Manager (region and endpoint from the AWS environment)")
        }
        _ => format!("{op} {id}: request failed"),
    }
}

async fn aws_read(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Current, String> {
    match client.get_secret_value().secret_id(id).send().await {
        Ok(out) => {
            let text = Zeroizing::new(out.secret_string().unwrap_or_default().to_owned());
            // A SecretString that is not a JSON object differs from anything we write.
            let v = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| Value::String("(not JSON)".into()));
            Ok(Current { value: Some(SecretValue::new(v)), kv: None, version: 0 })
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            Ok(Current { value: None, kv: None, version: 0 })
        }
        Err(e) => Err(aws_error("GetSecretValue", id, &e)),
    }
}

async fn aws_write(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
    current: &Current,
    value: &SecretValue,
) -> Result<(), String> {
    let text = Zeroizing::new(serde_json::to_string(value.expose_secret()).map_err(|e| format!("{id}: {e}"))?);
    if current.value.is_some() {
        client
            .put_secret_value()
            .secret_id(id)
            .secret_string(text.as_str())
            .send()
            .await
            .map_err(|e| aws_error("PutSecretValue", id, &e))?;
    } else {
        if id.starts_with("arn:") {
            return Err(format!("{id}: not found, and a secret cannot be created by ARN: use its name"));
        }
        client
            .create_secret()
            .name(id)
            .description("Moved from a Kubernetes Secret by sidekey migrate --push")
            .secret_string(text.as_str())
            .send()
            .await
            .map_err(|e| aws_error("CreateSecret", id, &e))?;
    }
    Ok(())
}
