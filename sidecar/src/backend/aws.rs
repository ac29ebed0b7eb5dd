//! The AWS Secrets Manager backend
//! (<https://docs.aws.amazon.com/secretsmanager/latest/apireference/>).
//!
//! Credentials come from the default chain (environment, IRSA web identity
//! with `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, EKS Pod Identity,
//! profiles, IMDS), optionally used to assume `roleArn`. The region comes
//! from the reference's ARN, then the config, then the environment.
//!
//! Calls are what Secrets Manager bills and throttles, so they are few:
//! reads that start together go out as `BatchGetSecretValue` calls of up to
//! 20 secrets, and so do the version checks of current versions, which all
//! sources of an agent make on the same refresh tick — one call per 20
//! secrets per refresh (the first check of a tick asks for every current
//! secret the agent holds; the others find their answer). A secret is read
//! again (`GetSecretValue`) only when its version moved. A custom stage is
//! checked with `DescribeSecret`; a reference pinned to a `version-id`
//! never changes and is never checked again. Without
//! `secretsmanager:BatchGetSecretValue` the agent falls back, once and for
//! good, to one call per secret. A throttling answer holds every call of
//! the agent ([`crate::throttle`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;
use sidekey::agent_config::AwsConfig;
use sidekey::reference::{AwsVersion, Reference};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, oneshot};

use super::{BackendError, Fetched};
use crate::metrics::Metrics;
use crate::secret::{Secret, SecretBytes, SecretValue};
use crate::throttle::Throttle;

/// Secrets Manager clients, one per region, created on first use.
pub struct Aws {
    config: AwsConfig,
    clients: Mutex<HashMap<String, Client>>,
    /// Reads of current versions waiting to go out together.
    pending: std::sync::Mutex<Vec<Pending>>,
    /// Set when `BatchGetSecretValue` is refused (not allowed, not
    /// supported): every read and check goes alone from then on.
    no_batch: AtomicBool,
    /// The current-version secrets read so far, by region: what a check
    /// sweep asks about.
    current: std::sync::Mutex<BTreeMap<Option<String>, BTreeSet<String>>>,
    /// The last check sweep of each region; held while one runs, so the
    /// checks of one tick wait for it and take their answer from it.
    sweeps: Mutex<HashMap<Option<String>, Sweep>>,
    metrics: Arc<Metrics>,
    throttle: Throttle,
    /// How long a sweep answers later checks ([`sweep_reuse`]).
    reuse: Duration,
}

/// The current version of each secret, as one sweep saw it.
struct Sweep {
    at: tokio::time::Instant,
    versions: HashMap<String, Result<String, BackendError>>,
}

/// How long a sweep answers later checks: the checks of one refresh tick
/// arrive within milliseconds, or a few seconds when the agent's first
/// reads were spread out by a slow start; never as long as the next tick.
fn sweep_reuse(refresh: Duration) -> Duration {
    (refresh / 4).min(Duration::from_secs(10))
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

/// Whether the error asks to slow down (HTTP 429, or a throttling code).
fn throttled<E: ProvideErrorMetadata>(e: &SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 429
                || matches!(
                    se.err().code(),
                    Some("ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded")
                )
        }
        _ => false,
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
    let raw = |bytes: &[u8]| Secret {
        fields: SecretValue::new(Value::Null),
        raw: Some(SecretBytes::new(bytes.to_vec())),
        meta: Default::default(),
    };
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
    /// `refresh`: the agent's refresh period.
    pub fn new(config: &AwsConfig, metrics: Arc<Metrics>, refresh: Duration) -> Self {
        Aws {
            config: config.clone(),
            clients: Mutex::default(),
            pending: std::sync::Mutex::default(),
            no_batch: AtomicBool::new(false),
            current: std::sync::Mutex::default(),
            sweeps: Mutex::default(),
            metrics,
            throttle: Throttle::default(),
            reuse: sweep_reuse(refresh),
        }
    }

    /// Before a call: waits out a throttling hold, counts the call.
    async fn calling(&self) {
        self.throttle.wait().await;
        self.metrics.request("aws");
    }

    /// After a call: a throttling error holds every call for a while.
    fn called<T, E: ProvideErrorMetadata>(
        &self,
        result: &Result<T, SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>>,
    ) {
        match result {
            Err(e) if throttled(e) => {
                self.metrics.throttled("aws");
                self.throttle.slow_down(None);
            }
            _ => self.throttle.ok(),
        }
    }

    /// One `BatchGetSecretValue` of `ids` (at most [`BATCH`]).
    async fn batch(
        &self,
        client: &Client,
        ids: Vec<String>,
    ) -> Result<aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueOutput, BackendError>
    {
        let n = ids.len();
        self.calling().await;
        let result = client.batch_get_secret_value().set_secret_id_list(Some(ids)).send().await;
        self.called(&result);
        result.map_err(|e| classify("BatchGetSecretValue", &format!("({n} secrets)"), &e))
    }

    /// Remembers a current-version secret for the check sweeps.
    fn remember(&self, region: Option<&str>, secret_id: &str) {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        current.entry(region.map(str::to_owned)).or_default().insert(secret_id.to_owned());
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
        let out = match self.batch(&client, ids).await {
            Ok(out) => out,
            Err(error) => {
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
                self.remember(region, &p.secret_id);
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
        self.calling().await;
        let result = req.send().await;
        self.called(&result);
        let out = result.map_err(|e| classify("GetSecretValue", secret_id, &e))?;
        if *version == AwsVersion::Current {
            self.remember(reference.arn_region(), secret_id);
        }
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
        if *version == AwsVersion::Current && !self.no_batch.load(Ordering::Relaxed) {
            if let Some(answer) = self.swept(reference.arn_region(), secret_id).await {
                return answer;
            }
        }
        let client = self.client(reference.arn_region()).await;
        self.calling().await;
        let result = client.describe_secret().secret_id(secret_id).send().await;
        self.called(&result);
        let out = result.map_err(|e| classify("DescribeSecret", secret_id, &e))?;
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

    /// The current version of `secret_id` from this tick's sweep, running
    /// the sweep when none is fresh: `BatchGetSecretValue` for every
    /// current secret of the region, 20 per call (the values it returns are
    /// dropped at once). `None`: ask `DescribeSecret` (the secret was not in
    /// the answer, or batches are refused from now on).
    async fn swept(&self, region: Option<&str>, secret_id: &str) -> Option<Result<String, BackendError>> {
        self.remember(region, secret_id);
        let key = region.map(str::to_owned);
        let mut sweeps = self.sweeps.lock().await;
        if let Some(s) = sweeps.get(&key).filter(|s| s.at.elapsed() < self.reuse) {
            if let Some(answer) = s.versions.get(secret_id) {
                return Some(answer.clone());
            }
        }
        let ids: Vec<String> = {
            let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            current.get(&key).map(|s| s.iter().cloned().collect()).unwrap_or_default()
        };
        let client = self.client(region).await;
        let mut versions = HashMap::new();
        for chunk in ids.chunks(BATCH) {
            let out = match self.batch(&client, chunk.to_vec()).await {
                Ok(out) => out,
                Err(error) => {
                    if error.is_transient() {
                        return Some(Err(BackendError::Transient(format!("checking {secret_id}: {error}"))));
                    }
                    self.no_batch.store(true, Ordering::Relaxed);
                    tracing::info!(error = %error, "BatchGetSecretValue refused; checking secrets one by one");
                    return None;
                }
            };
            for id in chunk {
                let named = |name: Option<&str>, arn: Option<&str>| name == Some(id) || arn == Some(id);
                if let Some(v) = out.secret_values().iter().find(|v| named(v.name(), v.arn())) {
                    let version = v.version_id().map(str::to_owned).ok_or_else(|| {
                        BackendError::Permanent(format!("BatchGetSecretValue {id}: the answer has no version id"))
                    });
                    versions.insert(id.clone(), version);
                } else if let Some(e) = out.errors().iter().find(|e| e.secret_id() == Some(id)) {
                    let code = e.error_code().unwrap_or("unknown");
                    versions.insert(id.clone(), Err(classify_code("BatchGetSecretValue", id, code)));
                }
            }
            drop(out);
        }
        let answer = versions.get(secret_id).cloned();
        sweeps.insert(key, Sweep { at: tokio::time::Instant::now(), versions });
        answer
    }
}
