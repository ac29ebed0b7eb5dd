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
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::{BackendError, Fetched};
use crate::secret::{Secret, SecretBytes, SecretValue};

/// Secrets Manager clients, one per region, created on first use.
pub struct Aws {
    config: AwsConfig,
    clients: Mutex<HashMap<String, Client>>,
}

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
            let what = format!("{op} {id}: {code}");
            match code {
                "ResourceNotFoundException" => {
                    BackendError::Permanent(format!("{op} {id}: not found (ResourceNotFoundException)"))
                }
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "ExpiredTokenException"
                | "InvalidSignatureException" => BackendError::Denied(what),
                "InvalidRequestException" | "InvalidParameterException" | "DecryptionFailure" => {
                    BackendError::Permanent(what)
                }
                _ => BackendError::Transient(what),
            }
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

impl Aws {
    /// A backend for `config`; clients are built lazily.
    pub fn new(config: &AwsConfig) -> Self {
        Aws { config: config.clone(), clients: Mutex::default() }
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
        let client = self.client(reference.arn_region()).await;
        let mut req = client.get_secret_value().secret_id(secret_id);
        req = match version {
            AwsVersion::Current => req,
            AwsVersion::Stage(s) => req.version_stage(s),
            AwsVersion::Id(i) => req.version_id(i),
        };
        let out = req.send().await.map_err(|e| classify("GetSecretValue", secret_id, &e))?;
        let version_id = out.version_id().map(str::to_owned);
        let secret = if let Some(s) = out.secret_string() {
            match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => Secret::from_fields(v),
                Ok(other) => {
                    drop(SecretValue::new(other));
                    Secret { fields: SecretValue::new(Value::Null), raw: Some(SecretBytes::new(s.as_bytes().to_vec())) }
                }
                Err(_) => {
                    Secret { fields: SecretValue::new(Value::Null), raw: Some(SecretBytes::new(s.as_bytes().to_vec())) }
                }
            }
        } else if let Some(b) = out.secret_binary() {
            Secret {
                fields: SecretValue::new(Value::Null),
                raw: Some(SecretBytes::new(Zeroizing::new(b.as_ref().to_vec()).to_vec())),
            }
        } else {
            return Err(BackendError::Permanent(format!("GetSecretValue {secret_id}: the secret has no value")));
        };
        drop(out);
        // A pinned version id never changes: nothing to check later.
        let check = (!matches!(version, AwsVersion::Id(_))).then(|| reference.to_string());
        Ok(Fetched { secret: Arc::new(secret), version: version_id, lease: None, check, owner: 0 })
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
