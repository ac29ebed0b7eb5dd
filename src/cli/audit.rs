//! `sidekey audit`: security findings in manifests, as a table, JSON or SARIF.

use std::io::Write;
use std::path::PathBuf;

use crate::audit::{Finding, Severity, audit_all, to_sarif};
use crate::yaml;

use super::{Input, exit, read_inputs};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table.
    Table,
    /// JSON: a list of findings.
    Json,
    /// SARIF 2.1.0, for code-scanning UIs.
    Sarif,
}

/// `--fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Threshold {
    /// Any finding.
    Low,
    /// Medium or high.
    Medium,
    /// High only.
    High,
}

/// Options of `sidekey audit`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Find secrets in env vars and other security anti-patterns in manifests",
    long_about = "Reads Kubernetes manifests and reports, per workload and container, secrets in env vars \
(secretKeyRef, envFrom, literal values whose names or contents look like secrets — never printing a value), \
containers that may run as root, privilege escalation, capabilities not dropped, privileged containers, \
writable root filesystems, missing seccomp profiles, missing limits, :latest or unpinned images, host \
namespaces and hostPath volumes, and namespaces whose workloads have no default-deny NetworkPolicy among \
the inputs. Each finding has a severity, a rule id, the object and field path, and a fix.\n\n\
With --cluster it reads the live workloads (Pods, ReplicationControllers, Deployments, StatefulSets, \
DaemonSets, ReplicaSets, Jobs, CronJobs; objects a controller owns are judged through their owner) and the \
NetworkPolicies of the current kubeconfig context, in every namespace or in --namespace. It needs list on \
those kinds, nothing else; it never reads Secrets.",
    after_help = "Examples:\n  sidekey audit -f k8s/\n  sidekey audit -f deploy.yaml --format sarif > sidekey.sarif\n  \
sidekey audit -f k8s/ --fail-on high      # for CI gates\n  \
sidekey audit --cluster --namespace shop\n\n\
Exit status: 0 no finding at or above --fail-on (or no --fail-on); 1 findings at or above it, or unreadable YAML; 66 unreadable input; 69 the cluster cannot be read."
)]
pub struct AuditArgs {
    /// Manifest file, directory (recursive) or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required_unless_present = "cluster")]
    pub files: Vec<PathBuf>,
    /// Read the live workloads of the current kubeconfig context (KUBECONFIG) instead of files.
    #[arg(long, conflicts_with = "files")]
    pub cluster: bool,
    /// With --cluster: only this namespace (default: all).
    #[arg(short = 'n', long, value_name = "NAMESPACE", requires = "cluster")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Exit 1 when a finding has at least this severity.
    #[arg(long, value_enum)]
    pub fail_on: Option<Threshold>,
    /// Do not report namespaces without a default-deny NetworkPolicy (when the
    /// inputs are not a namespace's whole set of manifests).
    #[arg(long)]
    pub no_network_policy_check: bool,
}

fn table(findings: &[(String, Finding)], unread: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    // A file that did not parse was not audited: never a clean pass.
    let unread_line =
        if unread.is_empty() { String::new() } else { format!("\nnot audited (not YAML): {}", unread.join(", ")) };
    if findings.is_empty() {
        let what = if unread.is_empty() { "no findings" } else { "no findings in the files that were read" };
        return writeln!(out, "{what}{unread_line}");
    }
    writeln!(out, "{:<8} {:<6} {:<36} FINDING", "SEVERITY", "RULE", "OBJECT")?;
    for (_, f) in findings {
        let conf = f.confidence.map(|c| format!(" (confidence {c})")).unwrap_or_default();
        writeln!(out, "{:<8} {:<6} {:<36} {}{conf}", f.severity.as_str().to_uppercase(), f.rule, f.object, f.message)?;
        writeln!(out, "{:<8} {:<6} {:<36}   at {}; fix: {}", "", "", "", f.path, f.hint)?;
    }
    let count = |s| findings.iter().filter(|(_, f)| f.severity == s).count();
    writeln!(
        out,
        "\n{} findings: {} high, {} medium, {} low{unread_line}",
        findings.len(),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low)
    )
}

/// What findings from `--cluster` name as their file.
const CLUSTER: &str = "cluster";

#[cfg(feature = "online")]
fn read_cluster(namespace: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    super::block_on(async {
        let client = super::cluster::client().await?;
        super::cluster::workloads(&client, namespace).await
    })
}

#[cfg(not(feature = "online"))]
fn read_cluster(_: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    Err(super::OFFLINE.into())
}

/// Runs `sidekey audit`; returns the exit code.
pub fn run(args: &AuditArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    // Each document, and the file it came from (`cluster` for --cluster).
    let mut files: Vec<String> = Vec::new();
    let mut docs: Vec<serde_json::Value> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    let first = if args.cluster {
        match read_cluster(args.namespace.as_deref()) {
            Ok(objects) => {
                files = vec![CLUSTER.to_owned(); objects.len()];
                docs = objects;
            }
            Err(e) => {
                let _ = writeln!(stderr, "error: {e}");
                return exit::UNAVAILABLE;
            }
        }
        CLUSTER.to_owned()
    } else {
        let inputs = match read_inputs(&args.files, stderr) {
            Ok(i) => i,
            Err(code) => return code,
        };
        for Input { shown, text } in &inputs {
            match yaml::parse_documents(text) {
                Ok(parsed) => {
                    files.extend(std::iter::repeat_n(shown.clone(), parsed.len()));
                    docs.extend(parsed);
                }
                Err(e) => {
                    let _ = writeln!(stderr, "error: {shown}: {e}");
                    unread.push(shown.clone());
                }
            }
        }
        inputs.first().map(|i| i.shown.clone()).unwrap_or_default()
    };
    // Network policies are judged across all inputs; other findings per file.
    let mut findings: Vec<(String, Finding)> = Vec::new();
    for (file, doc) in files.iter().zip(&docs) {
        findings.extend(audit_all(std::slice::from_ref(doc), false).into_iter().map(|f| (file.clone(), f)));
    }
    if !args.no_network_policy_check {
        findings.extend(
            audit_all(&docs, true)
                .into_iter()
                .filter(|f| f.rule == crate::audit::NO_DEFAULT_DENY.id)
                .map(|f| (first.clone(), f)),
        );
    }
    findings
        .sort_by(|a, b| b.1.severity.cmp(&a.1.severity).then(a.1.object.cmp(&b.1.object)).then(a.1.rule.cmp(b.1.rule)));
    let written = match args.format {
        Format::Table => table(&findings, &unread, stdout),
        Format::Json => {
            let list: Vec<serde_json::Value> = findings
                .iter()
                .map(|(file, f)| {
                    let mut v = serde_json::to_value(f).unwrap_or_default();
                    v["file"] = serde_json::json!(file);
                    v
                })
                .collect();
            writeln!(stdout, "{}", serde_json::to_string_pretty(&list).unwrap_or_default())
        }
        Format::Sarif => writeln!(stdout, "{}", serde_json::to_string_pretty(&to_sarif(&findings)).unwrap_or_default()),
    };
    if let Err(e) = written {
        let _ = writeln!(stderr, "error: writing output: {e}");
        return exit::IO;
    }
    let threshold = args.fail_on.map(|t| match t {
        Threshold::Low => Severity::Low,
        Threshold::Medium => Severity::Medium,
        Threshold::High => Severity::High,
    });
    if !unread.is_empty() || threshold.is_some_and(|t| findings.iter().any(|(_, f)| f.severity >= t)) {
        return exit::INVALID_INPUT;
    }
    exit::OK
}
