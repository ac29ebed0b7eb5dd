//! `sidekey inject`: the webhook's mutation, offline, for GitOps and review.

use std::io::Write;
use std::path::PathBuf;

use crate::config::InjectorConfig;
use crate::mutate::Outcome;
use crate::workload;
use crate::yaml;

use super::{Input, exit, read_inputs};

/// Options of `sidekey inject`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Inject the sidekey agent into workload manifests",
    long_about = "Reads Kubernetes manifests (YAML, multi-document streams and v1 Lists) and writes them to \
stdout with every opted-in pod template injected, exactly as the sidekey webhook would: the agent \
container, the in-memory secrets volume, read-only mounts, and env-var secrets moved to files.\n\n\
A pod template opts in with the annotation sidekey.dev/inject: \"true\" on the pod template \
(not on the Deployment). Objects that do not opt in, pods injected already and objects that \
are not workloads are written unchanged. Comments are not kept.\n\n\
If any object is invalid, nothing is written to stdout; every problem is printed to stderr \
naming the annotation or env var and the reason.",
    after_help = "Examples:\n  sidekey inject -f deploy.yaml > deploy.injected.yaml\n  \
kubectl get deploy api -o yaml | sidekey inject -f - | kubectl apply -f -\n  \
sidekey inject -f base/ -f overlays/prod/patch.yaml --config injector.yaml\n\n\
Exit status: 0 written; 1 invalid input (nothing written); 64 bad --config; 66 unreadable input.\n\
Annotations: docs/annotations.md"
)]
pub struct InjectArgs {
    /// Manifest file to read, or - for stdin. Repeatable; directories are read
    /// recursively (*.yaml, *.yml, *.json).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Injector config (YAML), as the webhook uses: agent image, Vault address,
    /// backends, defaults. Without it, built-in defaults are used, except that
    /// any sidekey.dev/vault-addr is accepted (the webhook's default allows none).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Do not print warnings to stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Output format: yaml (one document per input document) or json (one
    /// object, or a v1 List when there are several).
    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: Output,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// YAML documents separated by `---`.
    Yaml,
    /// JSON.
    Json,
}

/// Runs `sidekey inject`, writing YAML to `stdout` and messages to `stderr`.
/// Returns the exit code.
pub fn run(args: &InjectArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let config = match &args.config {
        None => InjectorConfig::for_files(),
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => {
                let _ = writeln!(stderr, "error: --config {}: {e}", path.display());
                return exit::CONFIG;
            }
            Ok(text) => match InjectorConfig::from_yaml(&text) {
                Ok(c) => c,
                Err(e) => {
                    let _ = writeln!(stderr, "error: --config {}: {e}", path.display());
                    return exit::CONFIG;
                }
            },
        },
    };

    let inputs = match read_inputs(&args.files, stderr) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut out_docs = Vec::new();
    let mut failed = false;
    for Input { shown, text } in &inputs {
        let docs = match yaml::parse_documents(text) {
            Ok(d) => d,
            Err(e) => {
                let _ = writeln!(stderr, "error: {shown}: {e}");
                failed = true;
                continue;
            }
        };
        for (i, mut doc) in docs.into_iter().enumerate() {
            for (object, tp) in workload::templates(&doc) {
                let annotations = doc.pointer(&format!("{tp}/metadata/annotations")).and_then(|a| a.as_object());
                if !args.quiet && crate::vault_k8s::uses_vault_k8s(annotations) {
                    let object = workload::describe(doc.pointer(&object).unwrap_or(&doc));
                    let _ = writeln!(
                        stderr,
                        "note: {shown}: {object}: annotated for the Vault Agent injector (vault.hashicorp.com/*), which inject leaves alone: translate it with sidekey migrate --from vault-k8s (the webhook does it itself with compatibility.vaultK8s)"
                    );
                }
            }
            match workload::mutate_object(&mut doc, &config) {
                Ok(outcomes) => {
                    if !args.quiet {
                        for o in outcomes {
                            let warnings = match &o.outcome {
                                Some(Outcome::Injected { warnings }) => warnings.clone(),
                                _ => o.not_opted_in_warnings,
                            };
                            for w in warnings {
                                let _ = writeln!(stderr, "warning: {shown}: {}: {w}", o.object);
                            }
                        }
                    }
                    out_docs.push(doc);
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(stderr, "error: {shown}: document {}: {} is invalid:", i + 1, e.object);
                    for p in &e.invalid.problems {
                        let _ = writeln!(stderr, "  - {p}");
                    }
                }
            }
        }
    }
    if failed {
        let _ = writeln!(stderr, "error: nothing was written; fix the problems above");
        return exit::INVALID_INPUT;
    }
    let text = match args.output {
        Output::Yaml => yaml::to_yaml_stream(&out_docs),
        Output::Json => {
            let v = if out_docs.len() == 1 {
                out_docs.remove(0)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": out_docs})
            };
            let mut t = serde_json::to_string_pretty(&v).unwrap_or_default();
            t.push('\n');
            t
        }
    };
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(stderr, "error: writing output: {e}");
            exit::IO
        }
    }
}
