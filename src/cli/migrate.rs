//! `sidekey migrate`: maps the Kubernetes Secrets workloads read through env
//! vars to a secret store, through sidekey annotations.

use std::io::Write;
use std::path::PathBuf;

use crate::migrate::migrate;

use super::{exit, read_inputs};

/// Options of `sidekey migrate`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Move Kubernetes-Secret env vars of workloads to Vault or AWS Secrets Manager through sidekey",
    long_about = "Rewrites manifests so that every Kubernetes Secret a pod template reads through env \
(secretKeyRef, envFrom.secretRef) is replaced by a reference: it adds the label and annotation \
sidekey.dev/inject: \"true\" and one sidekey.dev/map-<secret> annotation per Secret, pointing at --to with \
{namespace} and {secret} filled in. Nothing else changes: lines are inserted into the original text, so \
comments, key order and formatting are kept (a pod template whose metadata is written in flow style {…} \
makes its file be rewritten, without comments; the report says so). Running it again changes nothing.\n\n\
The values themselves must be in the store at those paths (copy them, e.g. with `vault kv put`, before \
rolling out).",
    after_help = "Examples:\n  sidekey migrate -f deploy.yaml --to 'vault:secret/data/{namespace}/{secret}' > deploy.migrated.yaml\n  \
sidekey migrate -f k8s/ --to 'aws-sm:{namespace}/{secret}' --in-place\n\n\
Exit status: 0 done; 1 invalid input or --to; 66 unreadable input."
)]
pub struct MigrateArgs {
    /// Manifest file, directory (recursive) or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Where the Secrets go: a reference template with {secret} (and usually {namespace}), no #key.
    #[arg(long, value_name = "TEMPLATE")]
    pub to: String,
    /// Rewrite the files instead of printing to stdout.
    #[arg(long)]
    pub in_place: bool,
}

/// Runs `sidekey migrate`; returns the exit code.
pub fn run(args: &MigrateArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    if let Err(e) = crate::migrate::check_target(&args.to) {
        let _ = writeln!(stderr, "error: {e}");
        return exit::INVALID_INPUT;
    }
    if args.in_place && args.files.iter().any(|f| f.as_os_str() == "-") {
        let _ = writeln!(stderr, "error: --in-place cannot rewrite stdin");
        return exit::CONFIG;
    }
    let inputs = match read_inputs(&args.files, stderr) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut outputs = Vec::new();
    for input in &inputs {
        match migrate(&input.text, &args.to) {
            Ok((text, changes)) => {
                for c in &changes {
                    for (k, v) in &c.added {
                        let _ = writeln!(stderr, "{}: {}: added {k}: {v}", input.shown, c.object);
                    }
                    for (s, why) in &c.skipped {
                        let _ =
                            writeln!(stderr, "warning: {}: {}: Secret {s} not mapped: {why}", input.shown, c.object);
                    }
                    if c.reserialized {
                        let _ = writeln!(
                            stderr,
                            "warning: {}: rewritten as a whole (flow-style metadata): comments in it are lost",
                            input.shown
                        );
                    }
                }
                outputs.push((input.shown.clone(), text));
            }
            Err(e) => {
                let _ = writeln!(stderr, "error: {}: {e}", input.shown);
                return exit::INVALID_INPUT;
            }
        }
    }
    for (i, (shown, text)) in outputs.iter().enumerate() {
        let result = if args.in_place {
            std::fs::write(shown, text)
        } else {
            let sep = if i > 0 && !text.starts_with("---") { "---\n" } else { "" };
            stdout.write_all(format!("{sep}{text}").as_bytes())
        };
        if let Err(e) = result {
            let _ = writeln!(stderr, "error: writing {shown}: {e}");
            return exit::IO;
        }
    }
    exit::OK
}
