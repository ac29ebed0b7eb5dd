//! Certificates from Vault's / OpenBao's PKI engine, with the private key
//! born in the pod: the `sidekey.dev/cert-<name>` annotation and what the
//! agent is told.
//!
//! ```text
//! sidekey.dev/cert-web: "pki/sign/web cn=web.shop.svc alt=web,web.shop ttl=24h"
//! ```
//!
//! The first word is the engine's endpoint: `<mount>/sign/<role>` (the agent
//! generates the key pair and sends a CSR, so the private key never leaves
//! the pod and never passes through Vault's responses or audit log) or
//! `<mount>/issue/<role>` (Vault generates the key; for roles that refuse
//! CSRs). Options, space-separated: `cn=` (required), `alt=` DNS names and
//! `ip=` addresses (comma-separated), `ttl=`, `renew=` the share of the
//! lifetime after which a new certificate is fetched (`66%` by default),
//! `chain` (tls.crt holds the leaf and the chain), `combined` (also tls.pem:
//! key, leaf and chain in one file). Files: `<name>/tls.crt`, `tls.key`,
//! `ca.crt`, swapped together.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// A certificate to keep issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertRequest {
    /// The PKI engine's mount, `pki` or `pki_int`.
    pub mount: String,
    /// The role.
    pub role: String,
    /// `issue` (Vault generates the key) rather than `sign` (a CSR).
    #[serde(default, skip_serializing_if = "is_false")]
    pub issue: bool,
    /// The common name.
    pub common_name: String,
    /// DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alt_names: Vec<String>,
    /// IP subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_sans: Vec<String>,
    /// The lifetime asked for; absent: the role's default.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::opt_serde")]
    pub ttl: Option<Duration>,
    /// The share of the lifetime after which a new certificate is fetched,
    /// in percent (10–90).
    #[serde(default = "default_renew")]
    pub renew_percent: u8,
    /// tls.crt holds the leaf and the chain.
    #[serde(default, skip_serializing_if = "is_false")]
    pub chain: bool,
    /// Also tls.pem: key, leaf and chain.
    #[serde(default, skip_serializing_if = "is_false")]
    pub combined: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_renew() -> u8 {
    66
}

impl CertRequest {
    /// The endpoint, `<mount>/sign/<role>` or `<mount>/issue/<role>`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.mount, if self.issue { "issue" } else { "sign" }, self.role)
    }

    /// How long after issuance to fetch the next certificate, for one
    /// valid for `lifetime`.
    pub fn renew_after(&self, lifetime: Duration) -> Duration {
        lifetime.mul_f64(f64::from(self.renew_percent.clamp(10, 90)) / 100.0)
    }

    /// Why it cannot be asked for, if so.
    pub fn problem(&self) -> Option<String> {
        if !path_like(&self.mount) {
            return Some(format!("the mount {:?} is not a path", self.mount));
        }
        if self.role.is_empty() || !self.role.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Some(format!("the role {:?} is not a role name", self.role));
        }
        if !host_like(&self.common_name) {
            return Some("cn= must be a host name (letters, digits, '-', '.', '*')".into());
        }
        if let Some(a) = self.alt_names.iter().find(|a| !host_like(a)) {
            return Some(format!("alt= {a:?} is not a host name"));
        }
        if let Some(ip) = self.ip_sans.iter().find(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
            return Some(format!("ip= {ip:?} is not an IP address"));
        }
        if !(10..=90).contains(&self.renew_percent) {
            return Some("renew= must be between 10% and 90%".into());
        }
        None
    }
}

fn path_like(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn host_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
}

impl FromStr for CertRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_ascii_whitespace();
        let endpoint = words.next().ok_or("empty: expected <mount>/sign/<role> cn=<name> …")?;
        let (mount, op_role) = endpoint
            .rsplit_once('/')
            .and_then(|(rest, role)| rest.rsplit_once('/').map(|(mount, op)| (mount, (op, role))))
            .ok_or("must start with <mount>/sign/<role> or <mount>/issue/<role>")?;
        let issue = match op_role.0 {
            "sign" => false,
            "issue" => true,
            _ => return Err("must start with <mount>/sign/<role> or <mount>/issue/<role>".into()),
        };
        let mut c = CertRequest {
            mount: mount.to_owned(),
            role: op_role.1.to_owned(),
            issue,
            common_name: String::new(),
            alt_names: Vec::new(),
            ip_sans: Vec::new(),
            ttl: None,
            renew_percent: default_renew(),
            chain: false,
            combined: false,
        };
        let list = |v: &str| v.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        for w in words {
            match w.split_once('=') {
                Some(("cn", v)) => c.common_name = v.to_owned(),
                Some(("alt", v)) => c.alt_names = list(v),
                Some(("ip", v)) => c.ip_sans = list(v),
                Some(("ttl", v)) => c.ttl = Some(duration::parse(v).map_err(|e| format!("ttl: {e}"))?),
                Some(("renew", v)) => {
                    c.renew_percent = v
                        .strip_suffix('%')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("renew={v}: expected a percentage such as 66%"))?;
                }
                None if w == "chain" => c.chain = true,
                None if w == "combined" => c.combined = true,
                _ => {
                    return Err(format!(
                        "unknown option {:?} (known: cn=, alt=, ip=, ttl=, renew=, chain, combined)",
                        w.split('=').next().unwrap_or(w)
                    ));
                }
            }
        }
        if c.common_name.is_empty() {
            return Err("cn=<common name> is required".into());
        }
        match c.problem() {
            Some(p) => Err(p),
            None => Ok(c),
        }
    }
}

impl fmt::Display for CertRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cn={}", self.path(), self.common_name)
    }
}

/// What consul-template's `pkiCert` shows of a PKI `issue` answer (as
/// the Go template engine's resolver returns it, `.Data` holding Vault's
/// fields): the PEMs `Cert`, `Key` and `CA` (each ending in a newline, as
/// Go's `pem.EncodeToMemory` writes them), `CAChain` (the issuing CA
/// first, each once), and `.Data` for the same.
pub fn pki_cert_view(answer: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let data = &answer["Data"];
    let pem = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(|s| format!("{}\n", s.trim_end_matches('\n')));
    let ca = pem(&data["issuing_ca"]);
    let mut chain: Vec<String> = Vec::new();
    for c in ca.iter().cloned().chain(data["ca_chain"].as_array().into_iter().flatten().filter_map(pem)) {
        if !chain.contains(&c) {
            chain.push(c);
        }
    }
    let mut out = serde_json::json!({
        "Cert": pem(&data["certificate"]).unwrap_or_default(),
        "Key": pem(&data["private_key"]).unwrap_or_default(),
        "CA": ca.unwrap_or_default(),
        "CAChain": chain,
    });
    out["Data"] = out.clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_annotation_grammar() {
        let c: CertRequest =
            "pki_int/sign/web cn=web.shop.svc alt=web,web.shop ip=10.0.0.1 ttl=24h renew=70% combined".parse().unwrap();
        assert_eq!(c.path(), "pki_int/sign/web");
        assert_eq!(c.common_name, "web.shop.svc");
        assert_eq!(c.alt_names, ["web", "web.shop"]);
        assert_eq!(c.ip_sans, ["10.0.0.1"]);
        assert_eq!(c.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(c.renew_after(Duration::from_secs(100)), Duration::from_secs(70));
        assert!(c.combined && !c.chain && !c.issue);
        let i: CertRequest = "team/pki/issue/legacy cn=old.example".parse().unwrap();
        assert!(i.issue && i.mount == "team/pki");
        assert_eq!(i.renew_after(Duration::from_secs(30)), Duration::from_secs_f64(19.8));
    }

    #[test]
    fn refuses_what_cannot_be_asked_for_naming_the_part() {
        for (text, expected) in [
            ("", "empty"),
            ("pki/web cn=a", "must start with"),
            ("pki/read/web cn=a", "must start with"),
            ("pki/sign/web", "cn=<common name> is required"),
            ("pki/sign/web cn=a ttl=forever", "ttl:"),
            ("pki/sign/web cn=a renew=95%", "renew="),
            ("pki/sign/web cn=a ip=example.com", "ip="),
            ("pki/sign/web cn=a keyType=rsa", "unknown option \"keyType\""),
            ("../pki/sign/web cn=a", "mount"),
            ("pki/sign/web cn=a/b", "cn="),
        ] {
            let e = text.parse::<CertRequest>().unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
