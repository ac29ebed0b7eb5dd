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

/// Parses a Go template (with `delims`, or `{{ }}`) and finds the paths it
/// reads; an error names the line or the call.
///
/// # Errors
/// Why the template cannot be used: it does not parse, or a `secret` path
/// or argument is not a literal string.
pub fn check_go_template(
    template: &str,
    delims: Option<&Delims>,
) -> Result<(crate::gotemplate::Template, Vec<crate::gotemplate::SecretCall>), String> {
    let (l, r) = delims.map_or(("{{", "}}"), |d| (d.left.as_str(), d.right.as_str()));
    let t = crate::gotemplate::Template::parse_with(template, l, r).map_err(|e| e.to_string())?;
    let calls = t.secret_calls().map_err(|e| e.to_string())?;
    for c in &calls {
        let bad = |reason: String| format!("secret {:?}: {reason}", c.path);
        if c.path.contains(['#', '?']) {
            return Err(bad("a path has no '#' or '?'".into()));
        }
        format!("vault:{}", c.path).parse::<Reference>().map_err(|e| bad(e.to_string()))?;
    }
    if let Some(c) = calls.iter().find(|c| c.args.iter().any(|(k, _)| k.is_empty())) {
        return Err(format!("secret {:?}: an argument has no name before '='", c.path));
    }
    Ok((t, calls))
}

/// [`check_go_template`], the calls kept with the text they came from.
///
/// # Errors
/// As [`check_go_template`].
pub fn checked_template(template: &str, delims: Option<&Delims>) -> Result<CheckedTemplate, String> {
    let (_, calls) = check_go_template(template, delims)?;
    Ok(CheckedTemplate { digest: digest(template), delims: delims.cloned(), calls })
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
