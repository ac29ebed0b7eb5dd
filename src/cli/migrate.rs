//! `sidekey migrate`: maps the Kubernetes Secrets workloads read through env
//! vars to a secret store, through sidekey annotations.

use std::io::Write;
use std::path::PathBuf;

use crate::migrate::migrate;

use super::{exit, read_inputs};

/// Options of `sidekey migrate`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Move Kubernetes-Secret env vars of workloads to Vault or AWS Secrets Manager through sidekey, or Vault Agent injector annotations to sidekey's",
    long_about = "Rewrites manifests so that every Kubernetes Secret a pod template reads through env \
(secretKeyRef, envFrom.secretRef) is replaced by a reference: it adds the label and annotation \
sidekey.dev/inject: \"true\" and one sidekey.dev/map-<secret> annotation per Secret, pointing at --to with \
{namespace} and {secret} filled in. Nothing else changes: text is inserted into the original (lines into block \
mappings, entries into flow mappings {…}), so comments, key order and formatting are kept; a pod template \
without metadata makes its file be rewritten, without comments (the report says so). Running it again \
changes nothing.\n\n\
The values must be in the store at those paths before the pods roll out: --push copies them there from the \
Kubernetes Secret manifests among the inputs (or, with --cluster, from the Secrets of the current kubeconfig \
context). Each Secret becomes one JSON object {key: value} (a KV secret's fields, a Secrets Manager \
SecretString), so the agent renders each key as exactly the bytes the Secret held; binary (non-UTF-8) values \
are refused by key. Values are never printed: the report names references and keys. Before anything is \
written every Secret is found, every key a workload reads is checked, and the store is read; a store value \
that exists and differs is not replaced without --overwrite. Running it again writes nothing.\n\n\
--push writes only under --to for each workload's own namespace (the text before {secret}, with \
{namespace} filled in) and under the --allow-destination prefixes, and reads only the Secrets of the --namespace namespaces (required with --cluster): a workload's \
sidekey.dev/map-<secret> annotation or namespace outside them is refused before anything is read or written. \
Writes to several references are not one transaction: if one fails, the report lists exactly what was \
written (kept) and what was not; run again after fixing the cause. KV v2 writes use check-and-set; KV v1 and \
Secrets Manager have none, so the value is read again just before writing and a change since the first \
read stops the push.\n\n\
--dry-run writes nothing anywhere: it shows what --push would write (keys only) and the manifest diff.\n\n\
--from vault-k8s instead rewrites the vault.hashicorp.com/* annotations of every pod template (the Vault Agent \
injector's) into sidekey.dev/* annotations and the sidekey.dev/inject label, as the injector's \
compatibility.vaultK8s setting translates them (docs/vault-k8s.md): each secret becomes a file rendered by \
its Go template (format-<name>: go-template), byte for byte what Vault Agent renders. The entries are taken \
out and put in where they were; comments and the rest of the file are kept. A workload with an annotation \
sidekey cannot translate (agent-configmap, agent-inject-token, a shell command…) is left as it is and named, \
with the reason; the exit status is then 1.\n\n\
Vault/OpenBao: VAULT_ADDR (or BAO_ADDR), VAULT_TOKEN (or BAO_TOKEN, or ~/.vault-token), VAULT_NAMESPACE, \
VAULT_CACERT; KV v2 and v1 mounts. AWS: the SDK's default chain (AWS_REGION, AWS_PROFILE, IRSA, \
AWS_ENDPOINT_URL…); the secret is created, or given a new version.",
    after_help = "Examples:\n  sidekey migrate -f deploy.yaml --to 'vault:secret/data/{namespace}/{secret}' > deploy.migrated.yaml\n  \
sidekey migrate -f k8s/ --to 'aws-sm:{namespace}/{secret}' --in-place\n  \
sidekey migrate -f k8s/ --to 'vault:secret/data/{namespace}/{secret}' --push --dry-run\n  \
sidekey migrate -f deploy.yaml --to 'vault:secret/data/{namespace}/{secret}' --push --cluster -n shop --in-place\n  \
sidekey migrate -f k8s/ --from vault-k8s --dry-run\n\n\
Exit status: 0 done; 1 invalid input or --to, a Secret or key missing, a store value that differs (without \
--overwrite), a workload --from cannot translate; 66 unreadable input; 69 the cluster or the store cannot be reached or refuses."
)]
pub struct MigrateArgs {
    /// Manifest file, directory (recursive) or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Where the Secrets go: a reference template with {secret} (and usually {namespace}), no #key.
    #[arg(long, value_name = "TEMPLATE", required_unless_present = "from", conflicts_with = "from")]
    pub to: Option<String>,
    /// Rewrite another injector's annotations instead: vault-k8s (vault.hashicorp.com/*) into sidekey.dev/*.
    #[arg(long, value_name = "INJECTOR", value_enum, conflicts_with_all = ["push", "cluster"])]
    pub from: Option<From>,
    /// Rewrite the files instead of printing to stdout.
    #[arg(long, conflicts_with = "dry_run")]
    pub in_place: bool,
    /// Copy the values of the Secrets the workloads read into the store (from the Secret manifests among the inputs).
    #[arg(long)]
    pub push: bool,
    /// With --push: read the Secrets from the cluster of the current kubeconfig context instead (needs --namespace).
    #[arg(long, requires_all = ["push", "namespaces"])]
    pub cluster: bool,
    /// With --push: the namespaces whose Secrets may be read and pushed; a workload in another is refused. Repeatable.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE", requires = "push")]
    pub namespaces: Vec<String>,
    /// With --push: a reference prefix that a workload's own sidekey.dev/map-<secret> annotation may point to, besides --to for its own namespace. Repeatable.
    #[arg(long = "allow-destination", value_name = "PREFIX", requires = "push")]
    pub allow_destinations: Vec<String>,
    /// With --push: replace store values that exist and differ.
    #[arg(long, requires = "push")]
    pub overwrite: bool,
    /// Change nothing: print what --push would write (keys only) and the manifest diff.
    #[arg(long)]
    pub dry_run: bool,
}

/// Injectors whose annotations `migrate --from` rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// The Vault Agent injector (vault.hashicorp.com/* annotations).
    #[value(name = "vault-k8s")]
    VaultK8s,
}

/// Runs `sidekey migrate`; returns the exit code.
pub fn run(args: &MigrateArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    if args.from == Some(From::VaultK8s) {
        return from_vault_k8s(args, stdout, stderr);
    }
    let to = args.to.as_deref().unwrap_or_default();
    if let Err(e) = crate::migrate::check_target(to) {
        let _ = writeln!(stderr, "error: {e}");
        return exit::INVALID_INPUT;
    }
    let inputs = match inputs(args, stderr) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut outputs = Vec::new();
    let mut docs = Vec::new();
    for input in &inputs {
        match migrate(&input.text, to) {
            Ok((text, changes)) => {
                if args.push {
                    docs.extend(crate::yaml::parse_documents(&input.text).unwrap_or_default());
                }
                for c in &changes {
                    for (k, v) in &c.added {
                        let _ = writeln!(stderr, "{}: {}: added {k}: {v}", input.shown, c.object);
                    }
                    if !c.refused.is_empty() {
                        let _ = writeln!(
                            stderr,
                            "warning: {}: {}: not migrated: sidekey inject (and the webhook) would refuse it: {}",
                            input.shown,
                            c.object,
                            c.refused.join("; ")
                        );
                    }
                    for n in &c.notes {
                        let _ = writeln!(stderr, "note: {}: {}: {n}", input.shown, c.object);
                    }
                    for (s, why) in &c.skipped {
                        let _ =
                            writeln!(stderr, "warning: {}: {}: Secret {s} not mapped: {why}", input.shown, c.object);
                    }
                }
                let cause: Vec<&str> = changes.iter().filter(|c| c.reserialized).map(|c| c.object.as_str()).collect();
                if changes.iter().any(|c| c.whole_file) {
                    let _ = writeln!(
                        stderr,
                        "warning: {}: written anew as a whole, because the pod template of {} could not be edited in place: every comment and the formatting of the whole file are lost",
                        input.shown,
                        cause.join(", ")
                    );
                } else {
                    for object in cause {
                        let _ = writeln!(
                            stderr,
                            "warning: {}: {object}: its document was written anew, because its pod template could not be edited in place: the comments and formatting inside that document are lost; the rest of the file is unchanged",
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
    if args.push {
        let code = push(args, &docs, stderr);
        if code != exit::OK {
            return code;
        }
    }
    write_outputs(args, &inputs, &outputs, stdout, stderr)
}

/// The manifests to migrate; `--in-place` cannot rewrite stdin.
fn inputs(args: &MigrateArgs, stderr: &mut dyn Write) -> Result<Vec<super::Input>, u8> {
    if args.in_place && args.files.iter().any(|f| f.as_os_str() == "-") {
        let _ = writeln!(stderr, "error: --in-place cannot rewrite stdin");
        return Err(exit::CONFIG);
    }
    read_inputs(&args.files, stderr)
}

/// Prints the diff (`--dry-run`), rewrites the files (`--in-place`) or
/// prints the migrated manifests.
fn write_outputs(
    args: &MigrateArgs,
    inputs: &[super::Input],
    outputs: &[(String, String)],
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    if args.dry_run {
        for (input, (shown, text)) in inputs.iter().zip(outputs) {
            let diff = similar::TextDiff::from_lines(&input.text, text);
            let unified =
                diff.unified_diff().context_radius(3).header(shown, &format!("{shown} (migrated)")).to_string();
            if let Err(e) = stdout.write_all(unified.as_bytes()) {
                let _ = writeln!(stderr, "error: writing the diff: {e}");
                return exit::IO;
            }
        }
        return exit::OK;
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

/// `migrate --from vault-k8s`: every pod template's `vault.hashicorp.com/*`
/// annotations rewritten into `sidekey.dev/*`.
fn from_vault_k8s(args: &MigrateArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let inputs = match inputs(args, stderr) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut outputs = Vec::new();
    let mut refused = false;
    for input in &inputs {
        let (text, report) = match crate::vault_k8s::migrate::migrate(&input.text) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(stderr, "error: {}: {e}", input.shown);
                return exit::INVALID_INPUT;
            }
        };
        for m in &report {
            let at = format!("{}: {}", input.shown, m.object);
            if !m.refused.is_empty() {
                refused = true;
                let _ = writeln!(
                    stderr,
                    "warning: {at}: not migrated: sidekey (and its injector in compatibility mode) would refuse it: {}",
                    m.refused.join("; ")
                );
                continue;
            }
            let _ = writeln!(
                stderr,
                "{at}: {} vault.hashicorp.com annotations replaced by {} sidekey.dev annotations",
                m.removed,
                m.added.len()
            );
            for n in &m.notes {
                let _ = writeln!(stderr, "note: {at}: {n}");
            }
            if m.reserialized {
                let _ = writeln!(
                    stderr,
                    "warning: {}: written anew as a whole, because {} could not be edited in place: every comment and the formatting of the file are lost",
                    input.shown, m.object
                );
            }
        }
        outputs.push((input.shown.clone(), text));
    }
    let code = write_outputs(args, &inputs, &outputs, stdout, stderr);
    if code == exit::OK && refused { exit::INVALID_INPUT } else { code }
}

/// Finds the Secrets the workloads in `docs` read, their values (manifests
/// or cluster) and what the store holds; then, unless `--dry-run`, writes
/// what differs. Reports on `stderr`, keys only. Nothing is written unless
/// every Secret resolves and no store value would be replaced unasked.
#[cfg(feature = "online")]
fn push(args: &MigrateArgs, docs: &[serde_json::Value], stderr: &mut dyn Write) -> u8 {
    use crate::push::{Comparison, Scope, compare, destinations, keys, resolve, secret_manifests};

    let to = args.to.as_deref().unwrap_or_default();
    let scope = Scope::new(to, &args.allow_destinations, &args.namespaces);
    let _ = writeln!(stderr, "push: may write {}", scope.describe());
    let plan = (|| {
        let dests = destinations(docs, to).map_err(|e| (exit::INVALID_INPUT, e.to_string()))?;
        scope.check(&dests).map_err(|e| (exit::INVALID_INPUT, e.to_string()))?;
        let secrets = if args.cluster {
            let wanted: Vec<(String, String)> = dests.iter().map(|d| (d.namespace.clone(), d.secret.clone())).collect();
            super::block_on(async {
                let client = super::cluster::client().await?;
                super::cluster::secrets(&client, &wanted).await
            })
            .map_err(|e| (exit::UNAVAILABLE, e))?
        } else {
            secret_manifests(docs).map_err(|e| (exit::INVALID_INPUT, e.to_string()))?
        };
        resolve(&dests, &secrets).map_err(|e| (exit::INVALID_INPUT, e.to_string()))
    })();
    let resolved = match plan {
        Ok(r) => r,
        Err((code, e)) => {
            let _ = writeln!(stderr, "error: --push: {e}");
            return code;
        }
    };
    if resolved.is_empty() {
        let _ = writeln!(stderr, "push: no workload reads a Kubernetes Secret through env: nothing to push");
        return exit::OK;
    }
    let outcome = super::block_on(async {
        let mut stores = super::store::Stores::default();
        let mut todo = Vec::new();
        let mut conflicts = Vec::new();
        for (reference, value) in &resolved {
            let current = stores.read(reference).await?;
            let cmp = compare(current.value.as_ref(), value);
            let verb = if args.dry_run { "would " } else { "" };
            let line = match &cmp {
                Comparison::Unchanged => format!("push: {reference}: unchanged (keys {})", keys(value)),
                Comparison::Create => format!("push: {reference}: {verb}create with keys {}", keys(value)),
                Comparison::Update { .. } if !args.overwrite => {
                    conflicts.push(reference.to_string());
                    format!(
                        "push: {reference}: differs from the Secret: {} (keys only; --overwrite to replace)",
                        cmp.summary()
                    )
                }
                Comparison::Update { .. } => format!("push: {reference}: {verb}{}", cmp.summary()),
            };
            let _ = writeln!(stderr, "{line}");
            if cmp != Comparison::Unchanged {
                todo.push((reference, current, value));
            }
        }
        if !conflicts.is_empty() {
            return Ok(Some(format!(
                "{} store value(s) exist and differ: {}; nothing was written (--overwrite replaces them)",
                conflicts.len(),
                conflicts.join(", ")
            )));
        }
        if !args.dry_run {
            // Writes to different references cannot be one transaction: on
            // a failure, say exactly which were written and which not.
            let mut written: Vec<String> = Vec::new();
            for (i, (reference, current, value)) in todo.iter().enumerate() {
                if let Err(e) = stores.write(reference, current, value).await {
                    let rest: Vec<String> = todo[i + 1..].iter().map(|(r, ..)| r.to_string()).collect();
                    let written = if written.is_empty() { "none".to_owned() } else { written.join(", ") };
                    let rest = if rest.is_empty() { String::new() } else { format!(", {}", rest.join(", ")) };
                    return Err(format!(
                        "{e}\npush: stopped: written (and kept): {written}; not written: {reference}{rest}; \
                         fix the cause and run again (written values are then unchanged)"
                    ));
                }
                let _ = writeln!(stderr, "push: {reference}: written");
                written.push(reference.to_string());
            }
        }
        Ok(None)
    });
    let (code, message) = match outcome {
        Ok(None) => return exit::OK,
        Ok(Some(conflict)) => (exit::INVALID_INPUT, conflict),
        Err(e) => (exit::UNAVAILABLE, e),
    };
    let _ = writeln!(stderr, "error: --push: {message}");
    code
}

#[cfg(not(feature = "online"))]
fn push(_: &MigrateArgs, _: &[serde_json::Value], stderr: &mut dyn Write) -> u8 {
    let _ = writeln!(stderr, "error: {}", super::OFFLINE);
    exit::CONFIG
}
