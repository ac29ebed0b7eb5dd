//! The AWS Secrets Manager backend
//! (<https://docs.aws.amazon.com/secretsmanager/latest/apireference/>).
//!
//! Credentials come from the default chain (environment, IRSA web identity
//! with `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, EKS Pod Identity,
//! profiles, IMDS), optionally used to assume `roleArn`. The region comes
//! from the reference's ARN, then the config, then the environment. Every
//! `refresh`, one `DescribeSecret` tells whether the selected version stage
//! moved; `GetSecretValue` runs only when it did. A reference pinned to a
//! `version-id` never changes and is never checked again.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;
use sidekey::agent_config::AwsConfig;
use sidekey::reference::{AwsVersion, Reference};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, oneshot};

use super::{BackendError, Fetched};
use crate::secret::{Secret, SecretBytes, SecretValue};

/// Secrets Manager clients, one per region, created on first use.
pub struct Aws {
    config: AwsConfig,
    clients: Mutex<HashMap<String, Client>>,
    /// Reads of current versions waiting to go out together.
    pending: std::sync::Mutex<Vec<Pending>>,
    /// Set when `BatchGetSecretValue` is refused (not allowed, not
    /// supported): every read goes alone from then on.
    no_batch: AtomicBool,
}

/// One read waiting for a batch.
struct Pending {
    reference: Reference,
    region: Option<String>,
    secret_id: String,
    reply: oneshot::Sender<Result<Fetched, BackendError>>,
}

/// Secrets per `BatchGetSecretValue` call (the API's limit).
const BATCH: usize = 20;

/// rustls with ring for HTTPS; a plain HTTP client when every endpoint the
/// agent talks to is `http://` (a VPC proxy, moto in tests), which spares
/// loading the system's root certificates at start.
fn http_client(plain: bool) -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    if plain {
        return aws_smithy_http_client::Builder::new().build_http();
    }
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Sorts a service error code into transient, denied or permanent.
fn classify_code(op: &str, id: &str, code: &str) -> BackendError {
    let what = format!("{op} {id}: {code}");
    match code {
        "ResourceNotFoundException" => {
            BackendError::Permanent(format!("{op} {id}: not found (ResourceNotFoundException)"))
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException" => BackendError::Denied(what),
        "InvalidRequestException" | "InvalidParameterException" | "DecryptionFailure" => BackendError::Permanent(what),
        _ => BackendError::Transient(what),
    }
}

/// Sorts an SDK error into transient, denied or permanent; the message
/// names the operation and the secret, and the service's error code.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    id: &str,
    e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> BackendError {
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let Some(code) = se.err().code() else {
                // No error code the SDK could parse (a proxy's page, an
                // emulator's XML): the HTTP status decides.
                return match status {
                    401 | 403 => BackendError::Denied(format!("{op} {id}: access denied (HTTP {status})")),
                    404 => BackendError::Permanent(format!("{op} {id}: not found (HTTP 404)")),
                    429 | 500.. => BackendError::Transient(format!("{op} {id}: HTTP {status}")),
                    _ => BackendError::Permanent(format!("{op} {id}: HTTP {status}")),
                };
            };
            classify_code(op, id, code)
        }
        SdkError::TimeoutError(_) => BackendError::Transient(format!("{op} {id}: timed out")),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed"
            } else {
                "could not send the request"
            };
            BackendError::Transient(format!("{op} {id}: {why}"))
        }
        SdkError::ResponseError(_) => BackendError::Transient(format!("{op} {id}: malformed response")),
        _ => BackendError::Transient(format!("{op} {id}: request failed")),
    }
}

/// The secret of a `SecretString` (fields when it is a JSON object, raw
/// bytes otherwise) or a `SecretBinary` (raw bytes).
fn to_secret(
    op: &str,
    secret_id: &str,
    string: Option<&str>,
    binary: Option<&aws_sdk_secretsmanager::primitives::Blob>,
) -> Result<Secret, BackendError> {
    let raw =
        |bytes: &[u8]| Secret { fields: SecretValue::new(Value::Null), raw: Some(SecretBytes::new(bytes.to_vec())) };
    if let Some(s) = string {
        return Ok(match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Secret::from_fields(v),
            Ok(other) => {
                drop(SecretValue::new(other));
                raw(s.as_bytes())
            }
            Err(_) => raw(s.as_bytes()),
        });
    }
    match binary {
        Some(b) => Ok(raw(b.as_ref())),
        None => Err(BackendError::Permanent(format!("{op} {secret_id}: the secret has no value"))),
    }
}

impl Aws {
    /// A backend for `config`; clients are built lazily.
    pub fn new(config: &AwsConfig) -> Self {
        Aws {
            config: config.clone(),
            clients: Mutex::default(),
            pending: std::sync::Mutex::default(),
            no_batch: AtomicBool::new(false),
        }
    }

    async fn client(&self, region: Option<&str>) -> Client {
        let key = region.unwrap_or("").to_owned();
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&key) {
            return c.clone();
        }
        // Plain HTTP only when the endpoints (ours and, for web identity, the
        // SDK-wide override used for STS) are all http://.
        let sdk_endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
        let plain = self.config.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
            && sdk_endpoint.as_deref().is_none_or(|e| e.starts_with("http://"))
            && (sdk_endpoint.is_some() || std::env::var_os("AWS_ROLE_ARN").is_none() && self.config.role_arn.is_none());
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client(plain));
        if let Some(r) = region.map(str::to_owned).or_else(|| self.config.region.clone()) {
            loader = loader.region(Region::new(r));
        }
        let base = loader.load().await;
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&base);
        if let Some(role) = &self.config.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("sidekey-agent")
                .configure(&base)
                .build()
                .await;
            builder = builder.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        clients.insert(key, client.clone());
        client
    }

    /// Reads the secret (`GetSecretValue`).
    ///
    /// # Errors
    /// [`BackendError`].
    pub async fn read(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        let Reference::Aws { secret_id, version, .. } = reference else {
            return Err(BackendError::Permanent(format!("{reference}: not an AWS reference")));
        };
        if *version == AwsVersion::Current && !self.no_batch.load(Ordering::Relaxed) {
            return self.read_batched(reference, secret_id).await;
        }
        self.read_one(reference).await
    }

    /// Reads of current versions that start together (every secret at
    /// start-up) go out as `BatchGetSecretValue` calls of up to 20: one
    /// round trip instead of one per secret. The first read to arrive lets
    /// the others queue up (one turn of the single-threaded runtime), then
    /// sends them all; a read alone is a plain `GetSecretValue`.
    async fn read_batched(&self, reference: &Reference, secret_id: &str) -> Result<Fetched, BackendError> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let region = reference.arn_region().map(str::to_owned);
            pending.push(Pending { reference: reference.clone(), region, secret_id: secret_id.to_owned(), reply });
            pending.len() == 1
        };
        if first {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            self.send_batch(batch).await;
        }
        answer.await.unwrap_or_else(|_| Err(BackendError::Transient(format!("GetSecretValue {secret_id}: cancelled"))))
    }

    async fn send_batch(&self, mut batch: Vec<Pending>) {
        batch.sort_by(|a, b| a.region.cmp(&b.region));
        while !batch.is_empty() {
            let region = batch[0].region.clone();
            let same = batch.iter().take_while(|p| p.region == region).count().min(BATCH);
            let chunk: Vec<Pending> = batch.drain(..same).collect();
            if chunk.len() == 1 || self.no_batch.load(Ordering::Relaxed) {
                for p in chunk {
                    let _ = p.reply.send(self.read_one(&p.reference).await);
                }
                continue;
            }
            self.batch_call(region.as_deref(), chunk).await;
        }
    }

    async fn batch_call(&self, region: Option<&str>, chunk: Vec<Pending>) {
        let client = self.client(region).await;
        let ids: Vec<String> = chunk.iter().map(|p| p.secret_id.clone()).collect();
        let out = match client.batch_get_secret_value().set_secret_id_list(Some(ids)).send().await {
            Ok(out) => out,
            Err(e) => {
                let error = classify("BatchGetSecretValue", &format!("({} secrets)", chunk.len()), &e);
                if error.is_transient() {
                    for p in chunk {
                        let msg = format!("GetSecretValue {} (in a batch): {error}", p.secret_id);
                        let _ = p.reply.send(Err(BackendError::Transient(msg)));
                    }
                } else {
                    // Not allowed (a policy without secretsmanager:BatchGetSecretValue) or
                    // not supported by the endpoint: one by one from now on.
                    self.no_batch.store(true, Ordering::Relaxed);
                    tracing::info!(error = %error, "BatchGetSecretValue refused; reading secrets one by one");
                    for p in chunk {
                        let _ = p.reply.send(self.read_one(&p.reference).await);
                    }
                }
                return;
            }
        };
        let mut rest: Vec<Pending> = Vec::new();
        for p in chunk {
            let matches =
                |name: Option<&str>, arn: Option<&str>| name == Some(&p.secret_id) || arn == Some(&p.secret_id);
            if let Some(v) = out.secret_values().iter().find(|v| matches(v.name(), v.arn())) {
                let secret = to_secret("BatchGetSecretValue", &p.secret_id, v.secret_string(), v.secret_binary());
                let fetched = secret.map(|secret| Fetched {
                    certificate: None,
                    secret: Arc::new(secret),
                    version: v.version_id().map(str::to_owned),
                    lease: None,
                    check: Some(p.reference.to_string()),
                    owner: 0,
                });
                let _ = p.reply.send(fetched);
            } else if let Some(e) = out.errors().iter().find(|e| e.secret_id() == Some(&p.secret_id)) {
                let code = e.error_code().unwrap_or("unknown");
                let _ = p.reply.send(Err(classify_code("BatchGetSecretValue", &p.secret_id, code)));
            } else {
                // Named differently in the answer (a partial ARN): read it alone.
                rest.push(p);
            }
        }
        drop(out);
        for p in rest {
            let _ = p.reply.send(self.read_one(&p.reference).await);
        }
    }

    /// One `GetSecretValue`.
    async fn read_one(&self, reference: &Reference) -> Result<Fetched, BackendError> {
        let Reference::Aws { secret_id, version, .. } = reference else {
            return Err(BackendError::Permanent(format!("{reference}: not an AWS reference")));
        };
        let client = self.client(reference.arn_region()).await;
        let mut req = client.get_secret_value().secret_id(secret_id);
        req = match version {
            AwsVersion::Current => req,
            AwsVersion::Stage(s) => req.version_stage(s),
            AwsVersion::Id(i) => req.version_id(i),
        };
        let out = req.send().await.map_err(|e| classify("GetSecretValue", secret_id, &e))?;
        let version_id = out.version_id().map(str::to_owned);
        let secret = to_secret("GetSecretValue", secret_id, out.secret_string(), out.secret_binary())?;
        drop(out);
        // A pinned version id never changes: nothing to check later.
        let check = (!matches!(version, AwsVersion::Id(_))).then(|| reference.to_string());
        Ok(Fetched { certificate: None, secret: Arc::new(secret), version: version_id, lease: None, check, owner: 0 })
    }

    /// The version id that currently carries the reference's stage
    /// (`DescribeSecret`, which returns no secret value).
    ///
    /// # Errors
    /// [`BackendError`].
    pub async fn version(&self, check: &str) -> Result<String, BackendError> {
        let reference: Reference = check.parse().map_err(|e| BackendError::Permanent(format!("{check}: {e}")))?;
        let Reference::Aws { secret_id, version, .. } = &reference else {
            return Err(BackendError::Permanent(format!("{check}: not an AWS reference")));
        };
        let stage = match version {
            AwsVersion::Current => "AWSCURRENT",
            AwsVersion::Stage(s) => s.as_str(),
            AwsVersion::Id(i) => return Ok(i.clone()),
        };
        let client = self.client(reference.arn_region()).await;
        let out = client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| classify("DescribeSecret", secret_id, &e))?;
        if out.deleted_date().is_some() {
            return Err(BackendError::Permanent(format!(
                "DescribeSecret {secret_id}: the secret is scheduled for deletion"
            )));
        }
        out.version_ids_to_stages()
            .and_then(|m| m.iter().find(|(_, stages)| stages.iter().any(|s| s == stage)).map(|(id, _)| id.clone()))
            .ok_or_else(|| {
                BackendError::Permanent(format!("DescribeSecret {secret_id}: no version has the stage {stage}"))
            })
    }
}
