//! Go templates as the contract uses them: parsed and their calls found
//! once ([`CheckedTemplate`]), each call's path a valid `vault:` reference,
//! and the `auth/` and `sys/` paths that only the namespace policy can open
//! ([`system_path`]).

use std::collections::BTreeMap;

use crate::contract::Delims;
use crate::reference::Reference;

/// A Go template that parsed and whose calls were checked: what the
/// annotation parser and the vault-k8s translation hand on, so a template
/// is parsed once per review.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedTemplate {
    /// The SHA-256 of the template's text: what tells the same text again
    /// without keeping a copy of it (ten templates of 256 KiB are 2.5 MiB
    /// per review).
    pub digest: [u8; 32],
    /// Its delimiters, when not `{{ }}`.
    pub delims: Option<Delims>,
    /// Its `secret`/`pkiCert` calls, each once, in order of appearance.
    pub calls: Vec<crate::gotemplate::SecretCall>,
}

/// Templates checked earlier in a review, by the file they render: the
/// annotation parser takes a template's calls from here when its text and
/// delimiters are the same, instead of parsing it again.
pub type CheckedTemplates = BTreeMap<String, CheckedTemplate>;

/// The first segment of `path` when it is `auth` or `sys`: Vault's own
/// endpoints (the token's `auth/token/lookup-self`, `auth/token/create`,
/// `sys/wrapping/wrap`, `sys/policies/…`), which reach the agent's own
/// token or Vault's configuration. A Go template may call them only where
/// the injector's policy names them.
pub fn system_path(path: &str) -> Option<&'static str> {
    match path.split('/').next() {
        Some("auth") => Some("auth"),
        Some("sys") => Some("sys"),
        _ => None,
    }
}

/// Why a Go template cannot be used; the message names the line or the
/// call, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// It does not parse, or a call's path or argument is not a literal.
    #[error(transparent)]
    Go(#[from] crate::gotemplate::Error),
    /// A path with `#` or `?` (a reference's key or query).
    #[error("secret {path:?}: a path has no '#' or '?'")]
    PathHasKey {
        /// The call's path.
        path: String,
    },
    /// A path that is not a valid `vault:` reference.
    #[error("secret {path:?}: {source}")]
    Reference {
        /// The call's path.
        path: String,
        /// Why.
        source: crate::reference::ReferenceError,
    },
    /// A write argument without a field name (`"=v"`).
    #[error("secret {path:?}: an argument has no name before '='")]
    UnnamedArgument {
        /// The call's path.
        path: String,
    },
}

/// A Go template that parsed and whose `secret`/`pkiCert` calls are valid:
/// parsed once where the text is read (the annotation, the agent config)
/// and rendered from as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct GoTemplate {
    template: crate::gotemplate::Template,
    calls: Vec<crate::gotemplate::SecretCall>,
}

impl GoTemplate {
    /// Parses `text` (with `delims`, or `{{ }}`) and finds the paths it
    /// reads and writes.
    ///
    /// # Errors
    /// [`TemplateError`]: it does not parse, or a `secret` path or argument
    /// is not a literal string or not a valid path.
    pub fn parse(text: &str, delims: Option<&Delims>) -> Result<GoTemplate, TemplateError> {
        let (l, r) = delims.map_or(("{{", "}}"), |d| (d.left.as_str(), d.right.as_str()));
        let template = crate::gotemplate::Template::parse_with(text, l, r)?;
        let calls = template.secret_calls()?;
        for c in &calls {
            let path = || c.path.clone();
            if c.path.contains(['#', '?']) {
                return Err(TemplateError::PathHasKey { path: path() });
            }
            format!("vault:{}", c.path)
                .parse::<Reference>()
                .map_err(|source| TemplateError::Reference { path: path(), source })?;
        }
        if let Some(c) = calls.iter().find(|c| c.args.iter().any(|(k, _)| k.is_empty())) {
            return Err(TemplateError::UnnamedArgument { path: c.path.clone() });
        }
        Ok(GoTemplate { template, calls })
    }

    /// The parsed template.
    pub fn template(&self) -> &crate::gotemplate::Template {
        &self.template
    }

    /// Its `secret`/`pkiCert` calls, each once, in order of appearance.
    pub fn calls(&self) -> &[crate::gotemplate::SecretCall] {
        &self.calls
    }
}

/// The check of `template`, its calls kept with the digest of the text
/// they came from.
///
/// # Errors
/// As [`GoTemplate::parse`].
pub fn checked_template(template: &str, delims: Option<&Delims>) -> Result<CheckedTemplate, TemplateError> {
    let go = GoTemplate::parse(template, delims)?;
    Ok(CheckedTemplate { digest: digest(template), delims: delims.cloned(), calls: go.calls })
}

impl CheckedTemplate {
    /// Whether this is the check of `template` with `delims`.
    pub fn is_of(&self, template: &str, delims: Option<&Delims>) -> bool {
        self.delims.as_ref() == delims && self.digest == digest(template)
    }
}

fn digest(template: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(template.as_bytes()).into()
}
