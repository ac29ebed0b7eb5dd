//! An OCI registry and cosign, for the supply-chain path: push images to a
//! real registry (the CNCF distribution registry, built from the Go module
//! proxy), sign and attest them by digest with cosign and a key pair made
//! for the run, verify, and pull them by digest on a node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::node::{NODE_IP, Node};
use crate::{Process, TcpProxy, http, tool, wait_until};

/// A running registry on a node, plain HTTP, storing blobs in a temp directory.
pub struct Registry {
    /// `HOST:PORT` as this process reaches it (a loopback proxy): where
    /// pushes, cosign and the helpers go.
    pub host: String,
    /// `HOST:PORT` as the node reaches it: the registry part of the image
    /// references pods use.
    pub node_host: String,
    _process: Process,
    _proxy: TcpProxy,
    _dir: TempDir,
}

/// The port of a registry on a node.
pub const NODE_REGISTRY_PORT: u16 = 5000;

impl Registry {
    /// Starts a registry on the node's address (`NODE_IP:5000`, where its
    /// containerd pulls from, configured by `Cluster::start`), reached from
    /// here through a loopback proxy.
    pub fn start_in(node: &Node) -> Registry {
        let netns = node.netns();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let node_host = format!("{NODE_IP}:{NODE_REGISTRY_PORT}");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {node_host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display())).arg("--").arg(tool("SIDEKEY_REGISTRY")).arg("serve").arg(&config);
        let process = Process::spawn("registry", cmd, dir.path());
        let proxy = TcpProxy::start_in(&node_host, Some(&netns));
        let host = proxy.addr.clone();
        let agent = http();
        wait_until(
            "the registry to answer /v2/",
            Duration::from_secs(30),
            || {
                process.assert_running();
                agent.get(format!("http://{host}/v2/")).call().is_ok_and(|r| r.status() == 200)
            },
            || process.log(),
        );
        Registry { host, node_host, _process: process, _proxy: proxy, _dir: dir }
    }

    /// Pushes a docker-archive or OCI tarball as `HOST/<name>` (`repo:tag`)
    /// with skopeo; returns the manifest digest (`sha256:…`).
    ///
    /// # Panics
    /// When skopeo is missing or the push fails.
    pub fn push_archive(&self, archive: &Path, name: &str) -> String {
        let transport = if archive.extension().is_some_and(|e| e == "tar") { "docker-archive" } else { "oci-archive" };
        self.push(&format!("{transport}:{}", archive.display()), name)
    }

    /// Copies `source` (a skopeo image reference) to `HOST/<name>`; its digest.
    fn push(&self, source: &str, name: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let digest_file = dir.path().join("digest").display().to_string();
        let dest = format!("docker://{}/{name}", self.host);
        skopeo(&["copy", "--quiet", "--dest-tls-verify=false", "--digestfile", &digest_file, source, &dest]);
        std::fs::read_to_string(digest_file).unwrap().trim().to_owned()
    }

    /// Pushes the image of `archive` changed after the fact (a label added to
    /// its config, as a tampered build would differ) as `HOST/<name>`;
    /// returns its digest, which differs from the original's.
    pub fn push_modified(&self, archive: &Path, name: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("oci");
        let oci = format!("oci:{}:modified", layout.display());
        skopeo(&["copy", "--quiet", &format!("docker-archive:{}", archive.display()), &oci]);
        let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let put = |bytes: &[u8]| -> (String, usize) {
            let digest = format!("sha256:{}", hex(&Sha256::digest(bytes)));
            std::fs::write(blob(&digest), bytes).unwrap();
            (digest, bytes.len())
        };
        let mut index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let mut manifest: Value = serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let mut config: Value = serde_json::from_slice(&std::fs::read(blob(&config_digest)).unwrap()).unwrap();
        config["config"]["Labels"]["sidekey.test/modified"] = "after signing".into();
        let (digest, size) = put(&serde_json::to_vec(&config).unwrap());
        manifest["config"]["digest"] = digest.into();
        manifest["config"]["size"] = size.into();
        let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
        index["manifests"][0]["digest"] = digest.into();
        index["manifests"][0]["size"] = size.into();
        std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        self.push(&oci, name)
    }

    /// Pushes `archive` as `sidekey/<name>:<tag>`, signs it by digest and,
    /// given a CycloneDX SBOM, attests it to the image.
    ///
    /// # Panics
    /// When a step fails.
    pub fn publish(&self, cosign: &Cosign, archive: &Path, name: &str, tag: &str, sbom: Option<&Path>) -> Published {
        let repo = format!("sidekey/{name}");
        let digest = self.push_archive(archive, &format!("{repo}:{tag}"));
        let p = Published {
            repository: format!("{}/{repo}", self.node_host),
            local: format!("{}/{repo}", self.host),
            repo,
            tag: tag.to_owned(),
            digest,
        };
        cosign.sign(&p.local_pinned()).unwrap_or_else(|e| panic!("{e}"));
        if let Some(sbom) = sbom {
            cosign.attest(&p.local_pinned(), sbom, "cyclonedx").unwrap_or_else(|e| panic!("{e}"));
        }
        p
    }

    /// The digest `repo:tag` resolves to now.
    pub fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let r = http()
            .head(format!("http://{}/v2/{repo}/manifests/{tag}", self.host))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json",
            )
            .call()
            .ok()?;
        r.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// An image pushed by [`Registry::publish`].
#[derive(Debug, Clone)]
pub struct Published {
    /// The repository as pods name it (`NODE_IP:5000/sidekey/<name>`).
    pub repository: String,
    /// The repository as this process reaches it.
    pub local: String,
    /// The repository path in the registry (`sidekey/<name>`).
    pub repo: String,
    /// The tag it was pushed under.
    pub tag: String,
    /// Its manifest digest (`sha256:…`).
    pub digest: String,
}

impl Published {
    /// `repository@digest`, as pods reference it.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }

    /// `local@digest`, for cosign from here.
    pub fn local_pinned(&self) -> String {
        format!("{}@{}", self.local, self.digest)
    }

    /// `local:tag`.
    pub fn local_tagged(&self) -> String {
        format!("{}:{}", self.local, self.tag)
    }
}

/// cosign with a key pair generated for this run (no transparency log: the
/// machines here cannot reach Rekor, and a local key needs none).
pub struct Cosign {
    dir: TempDir,
    bin: PathBuf,
}

/// The password of the throwaway key.
const PASSWORD: &str = "sidekey-test-key";

impl Cosign {
    /// Generates a key pair (`cosign.key`, `cosign.pub`).
    pub fn new() -> Cosign {
        let c = Cosign { dir: tempfile::tempdir().unwrap(), bin: tool("SIDEKEY_COSIGN") };
        c.run(&["generate-key-pair", "--output-key-prefix", "cosign"]).expect("cosign generate-key-pair");
        c
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .args(args)
            .current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("COSIGN_YES", "true")
            // No update checks, no TUF root fetches: nothing leaves the machine.
            .env("SIGSTORE_NO_CACHE", "true")
            .env("TUF_ROOT", self.dir.path().join("tuf"))
            .output()
            .map_err(|e| format!("cannot run cosign: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("cosign {}: {}{}", args.join(" "), text, String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Signs `image` (`HOST/repo@sha256:…`) with the key.
    ///
    /// # Errors
    /// cosign's output when it fails.
    pub fn sign(&self, image: &str) -> Result<(), String> {
        self.run(&["sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-http-registry", image]).map(drop)
    }

    /// Attaches `predicate` (a file) of `kind` (`cyclonedx`, …) to `image`
    /// as a signed in-toto attestation.
    ///
    /// # Errors
    /// cosign's output when it fails.
    pub fn attest(&self, image: &str, predicate: &Path, kind: &str) -> Result<(), String> {
        let predicate = predicate.display().to_string();
        let args = [
            "attest",
            "--key",
            "cosign.key",
            "--tlog-upload=false",
            "--allow-http-registry",
            "--type",
            kind,
            "--predicate",
        ];
        let mut all: Vec<&str> = args.to_vec();
        all.push(&predicate);
        all.push(image);
        self.run(&all).map(drop)
    }

    /// Verifies `image`'s signature against the key; the verified payloads.
    ///
    /// # Errors
    /// cosign's output when no valid signature is found.
    pub fn verify(&self, image: &str) -> Result<String, String> {
        self.run(&["verify", "--key", "cosign.pub", "--insecure-ignore-tlog=true", "--allow-http-registry", image])
    }

    /// Verifies `image`'s attestation of `kind`; the verified envelopes.
    ///
    /// # Errors
    /// cosign's output when no valid attestation is found.
    pub fn verify_attestation(&self, image: &str, kind: &str) -> Result<String, String> {
        self.run(&[
            "verify-attestation",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            kind,
            image,
        ])
    }
}

/// Runs skopeo.
///
/// # Panics
/// When it is missing or fails.
fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo: {e} (apt-get install skopeo; make testenv does)"));
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Default for Cosign {
    fn default() -> Self {
        Cosign::new()
    }
}
