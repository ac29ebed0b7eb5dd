//! A real single-node Kubernetes cluster for tests: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet, kube-proxy and CoreDNS
//! (built from the Go module proxy by `make testenv`), containerd, runc and
//! the CNI plugins from Debian. Pods really run.
//!
//! Everything runs inside a network and mount namespace of its own (held
//! open by a `sleep` started with `unshare`), so what the kubelet and
//! kube-proxy do to the network (iptables chains, the `cni0` bridge, routes,
//! per-namespace sysctls) and every mount (container root filesystems,
//! tmpfs volumes, projected tokens) lives and dies with it. The node's
//! address, the pod network and the Service range exist only there; the host
//! reaches the apiserver through a forwarder on 127.0.0.1, and nothing is
//! routed or NATed off the machine.
//!
//! What the kubelet changes outside those namespaces is restored at teardown
//! (also after a crash: the next start finds the leftovers and removes
//! them): the kernel sysctls it tunes, its cgroups (under a cgroup root of
//! its own), the directories it creates. Measured facts and pitfalls of
//! running a node on these machines: `NODE-NOTES.md` in the project's shared
//! folder (`restrict_oom_score_adj`, cgroup v1, no loopback node address).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{KubeApi, Process, cache_dir, tool, wait_until};

/// The node's address, on the `lo` of its network namespace: the apiserver
/// advertises it, the kubelet serves on it, pods reach the node through it.
pub const NODE_IP: &str = "10.213.0.1";
/// The pods' subnet (the `cni0` bridge is its `.1`).
pub const POD_CIDR: &str = "10.214.0.0/24";
/// The Service range.
pub const SERVICE_CIDR: &str = "10.215.0.0/16";
/// The ClusterIP of the `kubernetes` Service (the first of the range).
pub const API_SERVICE_IP: &str = "10.215.0.1";
/// The node's name.
pub const NODE_NAME: &str = "sidekey-node";

/// Kernel sysctls (not per network namespace) the kubelet or kube-proxy may
/// change; saved before the node starts and written back at teardown.
const GLOBAL_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
];

/// Host paths shadowed inside the node's mount namespace by directories of
/// its own, so what the kubelet, containerd and the CNI plugins write there
/// (`/var/lib/kubelet/device-plugins`, `/var/lib/cni`, `/var/log/pods`,
/// containerd's shim sockets) never reaches the host.
const SHADOWED: &[(&str, &str)] =
    &[("var-lib", "/var/lib"), ("var-log", "/var/log"), ("run-containerd", "/run/containerd")];

/// The namespaces and host changes of one node; see the module docs.
pub struct Node {
    dir: PathBuf,
    cgroup_root: String,
    holder: Process,
    /// Held for the node's life: one node per machine at a time (the sysctls
    /// it restores are the machine's).
    _lock: fs::File,
}

impl Node {
    /// Creates the namespaces, after removing what a crashed earlier run left.
    fn create() -> Node {
        for (what, path) in [("unshare", "/usr/bin/unshare"), ("nsenter", "/usr/bin/nsenter"), ("ip", "/usr/sbin/ip")] {
            assert!(
                Path::new(path).exists() || Path::new(&path.replace("/usr", "")).exists(),
                "{what} not found: install util-linux and iproute2 (make testenv does)"
            );
        }
        assert!(
            rustix::process::geteuid().is_root(),
            "a real node needs root (namespaces, cgroups, mounts); run the tests as root"
        );
        let base = cache_dir().join("node-state");
        fs::create_dir_all(&base).unwrap();
        let lock = fs::File::create(base.join("lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        // Holding the lock, every other state directory is a crashed run's.
        for entry in fs::read_dir(&base).unwrap().flatten() {
            if entry.path().is_dir() {
                eprintln!("node: removing what an earlier run left in {}", entry.path().display());
                teardown(&entry.path());
            }
        }
        let id = std::process::id().to_string();
        let dir = base.join(&id);
        fs::create_dir_all(&dir).unwrap();
        let cgroup_root = format!("sidekey-node-{id}");
        fs::write(dir.join("cgroup-root"), &cgroup_root).unwrap();

        // Save what the kubelet may change before anything can change it.
        let saved: String = GLOBAL_SYSCTLS
            .iter()
            .filter_map(|k| fs::read_to_string(format!("/proc/sys/{k}")).ok().map(|v| format!("{k}={}\n", v.trim())))
            .collect();
        fs::write(dir.join("sysctls"), saved).unwrap();
        if !Path::new("/run/containerd").exists() {
            fs::create_dir_all("/run/containerd").unwrap();
            fs::write(dir.join("created-run-containerd"), "").unwrap();
        }
        create_cgroup_root(&cgroup_root);

        // A route for the Service range, so that connections the node itself
        // opens to a ClusterIP (the apiserver calling a webhook) get as far
        // as kube-proxy's DNAT; there is no default route, so nothing else
        // leaves the namespace.
        let mut script = String::from(
            "set -eu\nip link set lo up\nip addr add \"$NODE_IP/32\" dev lo\n\
             ip route add \"$SERVICE_CIDR\" dev lo\n\
             echo 1 > /proc/sys/net/ipv4/ip_forward\n\
             echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables\n",
        );
        for (own, host) in SHADOWED {
            script.push_str(&format!("mkdir -p \"$STATE/{own}\"\nmount --bind \"$STATE/{own}\" {host}\n"));
        }
        script.push_str("touch \"$STATE/holder.ready\"\nexec sleep infinity\n");
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script])
            .env("NODE_IP", NODE_IP)
            .env("SERVICE_CIDR", SERVICE_CIDR)
            .env("STATE", &dir);
        let holder = Process::spawn("node-namespaces", cmd, &dir);
        fs::write(dir.join("holder.pid"), holder.pid().to_string()).unwrap();
        let node = Node { dir, cgroup_root, holder, _lock: lock };
        wait_until(
            "the node's namespaces",
            Duration::from_secs(10),
            || {
                node.holder.assert_running();
                node.dir.join("holder.ready").exists()
            },
            || node.holder.log(),
        );
        // The namespaces by identity, so a teardown finds every process in
        // them even when the holder is gone (a crashed run).
        for ns in ["mnt", "net"] {
            let link = fs::read_link(format!("/proc/{}/ns/{ns}", node.pid())).unwrap();
            fs::write(node.dir.join(format!("ns-{ns}")), link.to_string_lossy().as_bytes()).unwrap();
        }
        node
    }

    /// A command that runs `program` inside the node's namespaces.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.holder.pid())).args(["--net", "--mount", "--"]).arg(program);
        cmd
    }

    /// The pid of the process holding the node's namespaces (for `nsenter`).
    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }

    /// The node's network namespace (`/proc/PID/ns/net` of its holder).
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.pid()))
    }

    /// The node's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates the kubelet's cgroup root in every hierarchy (the kubelet refuses
/// a root that does not exist); cpuset needs its cpus and mems before a task
/// can join.
fn create_cgroup_root(root: &str) {
    for h in cgroup_hierarchies() {
        let d = h.join(root);
        let _ = fs::create_dir_all(&d);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = fs::read_to_string(h.join(f)) {
                let _ = fs::write(d.join(f), v.trim());
            }
        }
    }
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// The processes in `dir` and every cgroup below it.
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(cgroup_pids(&e.path()));
            }
        }
    }
    pids
}

/// Removes `dir` and the cgroups below it, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The processes whose `kind` namespace (`mnt`, `net`) is `ns` (the link
/// text, `mnt:[…]`).
fn pids_in_ns(kind: &str, ns: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/{kind}")).is_ok_and(|l| l.to_string_lossy() == ns))
        .collect()
}

fn kill_all(pids: &[i32]) {
    for &pid in pids {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// Tears down the node whose state is in `dir`: every container (by its
/// cgroup) and every process in the node's mount namespace (daemons, shims,
/// the holder) killed, which frees the namespaces with their mounts, network
/// devices and iptables rules; then the cgroups removed, the sysctls written
/// back, the directories created on the host removed. Safe to run twice.
pub(crate) fn teardown(dir: &Path) {
    let cgroup_root = fs::read_to_string(dir.join("cgroup-root")).unwrap_or_default();
    // The node's namespaces as recorded at start (never the host's own, which
    // is never swept): every daemon, shim and the holder are in its mount
    // namespace, and servers started beside the node (PostgreSQL) in its
    // network namespace.
    let node_ns: Vec<(String, String)> = ["mnt", "net"]
        .iter()
        .filter_map(|ns| {
            let host = fs::read_link(format!("/proc/self/ns/{ns}")).ok()?.to_string_lossy().into_owned();
            let node = fs::read_to_string(dir.join(format!("ns-{ns}"))).ok()?;
            (node != host && !node.is_empty()).then(|| (ns.to_string(), node))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut pids = Vec::new();
        if !cgroup_root.is_empty() {
            for h in cgroup_hierarchies() {
                pids.extend(cgroup_pids(&h.join(&cgroup_root)));
            }
        }
        for (kind, ns) in &node_ns {
            pids.extend(pids_in_ns(kind, ns));
        }
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("node teardown: processes {pids:?} would not die");
            }
            break;
        }
        kill_all(&pids);
        std::thread::sleep(Duration::from_millis(50));
    }
    if !cgroup_root.is_empty() {
        for h in cgroup_hierarchies() {
            remove_cgroup(&h.join(&cgroup_root));
        }
    }
    for line in fs::read_to_string(dir.join("sysctls")).unwrap_or_default().lines() {
        if let Some((k, v)) = line.split_once('=') {
            let path = format!("/proc/sys/{k}");
            if fs::read_to_string(&path).is_ok_and(|cur| cur.trim() != v) {
                let _ = fs::write(&path, v);
            }
        }
    }
    if dir.join("created-run-containerd").exists() {
        let _ = fs::remove_dir_all("/run/containerd");
    }
    // The mounts went with the namespace; what is left are plain files.
    if let Err(e) = fs::remove_dir_all(dir) {
        eprintln!("node teardown: cannot remove {}: {e}", dir.display());
    }
}

/// A running single-node cluster; see the module docs. Dropping it tears
/// everything down (the node goes last, sweeping whatever is left).
pub struct Cluster {
    /// The control plane: kubeconfig, CA, kubectl, kube-rs client.
    pub api: KubeApi,
    daemons: Vec<Daemon>,
    node: Node,
}

/// A node daemon and how it was started, to restart it.
struct Daemon {
    process: Process,
    program: PathBuf,
    args: Vec<String>,
}

impl Cluster {
    /// Starts the node and the control plane, waits until the node is
    /// Ready, the `default` ServiceAccount exists and cluster DNS answers,
    /// and loads the images in `images` (docker-archive tarballs, see
    /// `make images`) into containerd.
    ///
    /// # Panics
    /// When a part does not come up, with its log; when not root.
    pub fn start(images: &[PathBuf]) -> Cluster {
        let started = Instant::now();
        let bin = tool("SIDEKEY_KUBE_BIN");
        let coredns = tool("SIDEKEY_COREDNS");
        let cni_bin = tool("SIDEKEY_CNI_BIN");
        let node = Node::create();
        let d = node.dir().to_owned();

        // containerd first: the kubelet waits for it, and images load meanwhile.
        let containerd =
            node.spawn("containerd", &which("containerd"), &["--config", &write_containerd_config(&d, &cni_bin)]);
        let api = KubeApi::start_on(Some(&node));
        let mut cluster = Cluster { api, daemons: vec![containerd], node };
        let sock = d.join("containerd/containerd.sock");
        cluster.wait("containerd", Duration::from_secs(30), || sock.exists());
        for image in images {
            cluster.import_image(image);
        }

        // Inside the node, components use the apiserver's own address.
        let kubeconfig = d.join("node.kubeconfig");
        let host_config = fs::read_to_string(&cluster.api.kubeconfig).unwrap();
        fs::write(&kubeconfig, host_config.replace(&cluster.api.url, &format!("https://{NODE_IP}:6443"))).unwrap();
        let kc = kubeconfig.display().to_string();
        let api_dir = cluster.api.dir().to_owned();
        let cm = cluster.node.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                &format!("--kubeconfig={kc}"),
                &format!("--service-account-private-key-file={}", api_dir.join("sa.pem").display()),
                &format!("--root-ca-file={}", api_dir.join("ca.pem").display()),
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
                "--v=1",
            ],
        );
        let scheduler = cluster.node.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[&format!("--kubeconfig={kc}"), "--leader-elect=false", "--bind-address=127.0.0.1", "--v=1"],
        );
        let kubelet_config = cluster.write_kubelet_config(&sock);
        let kubelet = cluster.node.spawn(
            "kubelet",
            &bin.join("kubelet"),
            &[
                &format!("--config={kubelet_config}"),
                &format!("--kubeconfig={kc}"),
                &format!("--hostname-override={NODE_NAME}"),
                &format!("--node-ip={NODE_IP}"),
                &format!("--root-dir={}", d.join("kubelet").display()),
                "--v=1",
            ],
        );
        let proxy_config = d.join("kube-proxy.yaml");
        fs::write(
            &proxy_config,
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 clientConnection:\n  kubeconfig: {kc}\nmode: iptables\nhostnameOverride: {NODE_NAME}\n\
                 clusterCIDR: {POD_CIDR}\nbindAddress: 0.0.0.0\nhealthzBindAddress: 127.0.0.1:10256\n\
                 metricsBindAddress: 127.0.0.1:10249\n\
                 conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n\
                 iptables:\n  minSyncPeriod: 0s\n  syncPeriod: 30s\n"
            ),
        )
        .unwrap();
        let proxy = cluster.node.spawn(
            "kube-proxy",
            &bin.join("kube-proxy"),
            &[&format!("--config={}", proxy_config.display())],
        );
        let corefile = d.join("Corefile");
        fs::write(
            &corefile,
            format!(
                ".:53 {{\n    bind {NODE_IP}\n    errors\n    ready 127.0.0.1:8181\n    health 127.0.0.1:8080\n\
                 \x20   kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kc} test\n        pods insecure\n    }}\n\
                 \x20   cache 5\n}}\n"
            ),
        )
        .unwrap();
        let dns = cluster.node.spawn("coredns", &coredns, &["-conf", &corefile.display().to_string()]);
        cluster.daemons.extend([cm, scheduler, kubelet, proxy, dns]);

        cluster.wait("the node to be Ready", Duration::from_secs(90), || {
            let out = cluster.api.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout) == "True"
        });
        cluster.wait("the default ServiceAccount", Duration::from_secs(60), || {
            cluster.api.kubectl(&["get", "serviceaccount", "default"]).status.success()
        });
        eprintln!("node: cluster ready in {:.1}s", started.elapsed().as_secs_f64());
        cluster
    }

    fn wait(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        wait_until(
            what,
            timeout,
            || {
                self.assert_running();
                check()
            },
            || self.logs(),
        );
    }

    /// Fails with every log if a daemon has exited.
    pub fn assert_running(&self) {
        for d in &self.daemons {
            if !d.process.running() {
                panic!("a node daemon exited early\n{}", self.logs());
            }
        }
    }

    /// The tail of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |name: &str, log: String| {
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(40);
            format!("--- {name} (last {} lines) ---\n{}\n", lines.len() - from, lines[from..].join("\n"))
        };
        out.push_str(&tail("kube-apiserver", self.api.log()));
        for d in &self.daemons {
            out.push_str(&tail(d.process.name(), d.process.log()));
        }
        out
    }

    /// Imports a docker-archive or OCI tarball into containerd's `k8s.io`
    /// namespace (where the kubelet finds images).
    pub fn import_image(&self, tarball: &Path) {
        let out = Command::new("ctr")
            .arg(format!("--address={}", self.node.dir().join("containerd/containerd.sock").display()))
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tarball)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e} (apt-get install containerd)"));
        assert!(
            out.status.success(),
            "ctr images import {}: {}{}",
            tarball.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl apply -f -` of `manifest` (YAML or JSON).
    pub fn apply(&self, manifest: &str) -> std::process::Output {
        self.api.kubectl_stdin(&["apply", "-f", "-"], manifest)
    }

    /// [`Cluster::apply`], failing with kubectl's message.
    pub fn apply_ok(&self, manifest: &str) {
        let out = self.apply(manifest);
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `kubectl get … -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.api.kubectl_ok(&a)).unwrap()
    }

    /// `kubectl exec` into `container` of `ns/pod`.
    pub fn exec(&self, ns: &str, pod: &str, container: &str, cmd: &[&str]) -> std::process::Output {
        let mut args = vec!["-n", ns, "exec", pod, "-c", container, "--"];
        args.extend_from_slice(cmd);
        self.api.kubectl(&args)
    }

    /// Waits until `ns/pod` is Ready, or fails with its state, its events and
    /// the node's logs.
    pub fn wait_ready(&self, ns: &str, pod: &str, timeout: Duration) {
        self.wait_pod(ns, pod, timeout, |p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        });
    }

    /// Waits until `check` holds for `ns/pod` (as JSON), or fails like
    /// [`Cluster::wait_ready`].
    pub fn wait_pod(&self, ns: &str, pod: &str, timeout: Duration, check: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.api.kubectl(&["-n", ns, "get", "pod", pod, "-o", "json"]);
            if out.status.success() && check(&serde_json::from_slice(&out.stdout).unwrap()) {
                return;
            }
            if Instant::now() > deadline {
                let state = self.api.kubectl(&["-n", ns, "get", "pod", pod, "-o", "yaml"]);
                let events = self.api.kubectl(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"]);
                panic!(
                    "pod {ns}/{pod} not as expected after {timeout:?}\n{}\n{}\n{}",
                    String::from_utf8_lossy(&state.stdout),
                    String::from_utf8_lossy(&events.stdout),
                    self.logs()
                );
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills every process of `container` in `ns/pod` with SIGKILL (found
    /// through its cgroup, as the OOM killer or a crash would end it); the
    /// kubelet then restarts it per the pod's policy.
    pub fn kill_container(&self, ns: &str, pod: &str, container: &str) {
        let p = self.get_json(&["-n", ns, "get", "pod", pod]);
        let id = ["initContainerStatuses", "containerStatuses"]
            .iter()
            .flat_map(|k| p["status"][k].as_array().cloned().unwrap_or_default())
            .find(|c| c["name"] == container)
            .and_then(|c| c["containerID"].as_str().map(|s| s.trim_start_matches("containerd://").to_owned()))
            .unwrap_or_else(|| panic!("no running container {container} in {ns}/{pod}"));
        fn find(dir: &Path, name: &str) -> Option<PathBuf> {
            for e in fs::read_dir(dir).ok()?.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if e.file_name().to_string_lossy() == name {
                        return Some(e.path());
                    }
                    if let Some(found) = find(&e.path(), name) {
                        return Some(found);
                    }
                }
            }
            None
        }
        let root = Path::new("/sys/fs/cgroup/pids").join(&self.node.cgroup_root);
        let dir = find(&root, &id).unwrap_or_else(|| panic!("no cgroup for container {id} under {}", root.display()));
        let pids = cgroup_pids(&dir);
        assert!(!pids.is_empty(), "container {container} has no process");
        kill_all(&pids);
    }

    /// Every value stored in etcd (all keys, through etcd's JSON gateway),
    /// for checks that something never reached the cluster's storage.
    pub fn etcd_values(&self) -> Vec<Vec<u8>> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let forward = crate::TcpProxy::start_in("127.0.0.1:2379", Some(&self.node.netns()));
        let mut resp = crate::http()
            .post(format!("{}/v3/kv/range", forward.url()))
            .send_json(serde_json::json!({"key": "AA==", "range_end": "AA=="}))
            .unwrap();
        let body: serde_json::Value = resp.body_mut().read_json().unwrap();
        let kvs = body["kvs"].as_array().cloned().unwrap_or_default();
        assert!(!kvs.is_empty(), "etcd returned no keys: {body}");
        kvs.iter().filter_map(|kv| b64.decode(kv["value"].as_str()?).ok()).collect()
    }

    /// Restarts node daemon `name` (`kubelet`, `containerd`) as a service
    /// manager would: SIGTERM, then the same command again. What runs in
    /// containers is not its child and keeps running. Returns when the
    /// node reports Ready again (after a kubelet restart the kubelet has
    /// posted its status anew), with how long that took.
    pub fn restart_daemon(&self, name: &str) -> Duration {
        let d =
            self.daemons.iter().find(|d| d.process.name() == name).unwrap_or_else(|| panic!("no node daemon {name}"));
        let started = Instant::now();
        let mut cmd = self.node.command(&d.program);
        cmd.args(&d.args);
        d.process.restart(cmd, Duration::from_secs(15));
        // The kubelet's heartbeat renews its Lease; a fresh one after the
        // restart shows it is back, Ready with it.
        self.wait_heartbeat(&format!("the node to be Ready after {name} restarted"));
        started.elapsed()
    }

    /// A node reboot, simulated: the kubelet and containerd stopped, every
    /// container and shim killed, every mount of the pods (their tmpfs
    /// volumes, root filesystems, network namespaces) unmounted and
    /// containerd's runtime state removed, as a reboot clears `/run` and
    /// memory; what is on disk stays (the kubelet's pod directories,
    /// disk-backed `emptyDir`s, images). Then containerd and the kubelet
    /// start again; returns when the node is Ready with a fresh heartbeat,
    /// with how long that took. The control plane and the servers beside
    /// the node (PostgreSQL, the registry) keep running.
    pub fn reboot(&self) -> Duration {
        let started = Instant::now();
        let daemon = |name: &str| self.daemons.iter().find(|d| d.process.name() == name).unwrap();
        for name in ["kubelet", "containerd"] {
            daemon(name).process.stop(Duration::from_secs(15));
        }
        let d = self.node.dir().to_owned();
        let shims = || -> Vec<i32> {
            let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.starts_with("/usr/bin/containerd-shim") && c.contains(&*d.to_string_lossy())
                    })
                })
                .collect()
        };
        let containers = || -> Vec<i32> {
            let mut pids: Vec<i32> =
                cgroup_hierarchies().iter().flat_map(|h| cgroup_pids(&h.join(&self.node.cgroup_root))).collect();
            pids.extend(shims());
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = containers();
            if pids.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "processes {pids:?} would not die");
            kill_all(&pids);
            std::thread::sleep(Duration::from_millis(50));
        }
        // The node's mounts of pods and containers, deepest first.
        let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", self.node.pid())).unwrap();
        let prefixes = [
            d.join("kubelet/pods"),
            d.join("containerd/state"),
            d.join("containerd/root/io.containerd.grpc.v1.cri/sandboxes"),
        ];
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| prefixes.iter().any(|p| Path::new(m).starts_with(p)))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            let out = self.node.command(Path::new("/bin/umount")).args(["-l", m]).output().unwrap();
            assert!(
                out.status.success() || !Path::new(m).exists(),
                "umount {m}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = fs::remove_dir_all(d.join("containerd/state"));
        let start = |name: &str| {
            let daemon = daemon(name);
            let mut cmd = self.node.command(&daemon.program);
            cmd.args(&daemon.args);
            daemon.process.start_again(cmd);
        };
        let sock = d.join("containerd/containerd.sock");
        let _ = fs::remove_file(&sock);
        start("containerd");
        // Not `self.wait`: the kubelet is not running yet.
        wait_until(
            "containerd after the reboot",
            Duration::from_secs(30),
            || {
                daemon("containerd").process.assert_running();
                sock.exists()
            },
            || daemon("containerd").process.log(),
        );
        start("kubelet");
        self.wait_heartbeat("the node to be Ready after the reboot");
        started.elapsed()
    }

    /// Waits until the node is Ready with a heartbeat newer than now.
    fn wait_heartbeat(&self, what: &str) {
        let renewed = || {
            let out = self.api.kubectl(&[
                "-n",
                "kube-node-lease",
                "get",
                "lease",
                NODE_NAME,
                "-o",
                "jsonpath={.spec.renewTime}",
            ]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let before = renewed();
        self.wait(what, Duration::from_secs(90), || {
            let out = self.api.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout) == "True" && renewed() != before
        });
    }

    /// Rejects every TCP packet from the pod address `from` to each of `to`
    /// (a network cut between pods: the node's bridge passes bridged
    /// traffic through its iptables), first in the node's FORWARD chain so
    /// no accept rule of kube-proxy's comes before it, until the returned
    /// guard is dropped. The rules live in the node's network namespace and
    /// go with it at teardown.
    pub fn reject_traffic(&self, from: &str, to: &[String]) -> Rejected<'_> {
        let rules: Vec<Vec<String>> = to
            .iter()
            .map(|ip| {
                ["-p", "tcp", "-s", from, "-d", ip, "-j", "REJECT", "--reject-with", "tcp-reset"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            })
            .collect();
        for rule in &rules {
            let args = [&["-I", "FORWARD", "1"][..], &rule.iter().map(String::as_str).collect::<Vec<_>>()].concat();
            if let Err(e) = self.iptables(&args) {
                panic!("{e}");
            }
        }
        Rejected { cluster: self, rules }
    }

    fn iptables(&self, args: &[&str]) -> Result<(), String> {
        let out = self.node.command(&which("iptables")).args(["-w", "5"]).args(args).output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!("iptables {args:?}: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => Err(format!("iptables {args:?}: {e}")),
        }
    }

    /// The node's namespaces (to run a process there, or forward to it).
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn write_kubelet_config(&self, sock: &Path) -> String {
        let d = self.node.dir();
        let cert = self.api.sign_serving_cert(&[NODE_NAME, NODE_IP]);
        fs::write(d.join("kubelet.pem"), &cert.cert_pem).unwrap();
        fs::write(d.join("kubelet-key.pem"), &cert.key_pem).unwrap();
        fs::write(d.join("resolv.conf"), "").unwrap();
        let ca = self.api.dir().join("ca.pem");
        let path = d.join("kubelet.yaml");
        fs::write(
            &path,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 containerRuntimeEndpoint: unix://{sock}\n\
                 cgroupDriver: cgroupfs\ncgroupRoot: /{root}\nfailCgroupV1: false\nfailSwapOn: false\n\
                 oomScoreAdj: 0\naddress: {NODE_IP}\nport: 10250\nreadOnlyPort: 0\n\
                 healthzBindAddress: 127.0.0.1\nhealthzPort: 10248\n\
                 tlsCertFile: {d}/kubelet.pem\ntlsPrivateKeyFile: {d}/kubelet-key.pem\n\
                 authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n  x509:\n    clientCAFile: {ca}\n\
                 authorization:\n  mode: Webhook\n\
                 clusterDNS: [{NODE_IP}]\nclusterDomain: cluster.local\nresolvConf: {d}/resolv.conf\n\
                 evictionHard:\n  memory.available: 50Mi\n  nodefs.available: 1%\n  imagefs.available: 1%\n  nodefs.inodesFree: 1%\n\
                 imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n\
                 serializeImagePulls: false\nmaxPods: 60\nsyncFrequency: 10s\nfileCheckFrequency: 5s\n\
                 nodeStatusUpdateFrequency: 5s\nprotectKernelDefaults: false\n",
                sock = sock.display(),
                root = self.node.cgroup_root,
                d = d.display(),
                ca = ca.display(),
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

/// Rules of [`Cluster::reject_traffic`], removed on drop.
pub struct Rejected<'a> {
    cluster: &'a Cluster,
    rules: Vec<Vec<String>>,
}

impl Drop for Rejected<'_> {
    fn drop(&mut self) {
        for rule in &self.rules {
            let args = [&["-D", "FORWARD"][..], &rule.iter().map(String::as_str).collect::<Vec<_>>()].concat();
            // Not a panic in a drop: the rules go with the node anyway.
            if let Err(e) = self.cluster.iptables(&args) {
                eprintln!("{e}");
            }
        }
    }
}

impl Node {
    fn spawn(&self, name: &str, program: &Path, args: &[&str]) -> Daemon {
        let mut cmd = self.command(program);
        cmd.args(args);
        let process = Process::spawn(name, cmd, &self.dir);
        Daemon { process, program: program.to_owned(), args: args.iter().map(|a| (*a).to_owned()).collect() }
    }
}

impl Drop for Node {
    /// Tears the node down (also when its start failed half-way).
    fn drop(&mut self) {
        let started = Instant::now();
        teardown(&self.dir);
        eprintln!("node: torn down in {:.1}s", started.elapsed().as_secs_f64());
    }
}

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} not found on PATH: apt-get install {name} (make testenv does)"))
}

/// containerd's configuration: every path under the node's state directory,
/// `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE, so runc
/// cannot lower a container's OOM score), the CNI bridge with an IP range
/// of its own and no masquerading, and pulls over plain HTTP from a
/// registry on the node's address.
fn write_containerd_config(d: &Path, cni_bin: &Path) -> String {
    let net_d = d.join("cni/net.d");
    fs::create_dir_all(&net_d).unwrap();
    fs::create_dir_all(d.join("containerd")).unwrap();
    fs::write(
        net_d.join("10-sidekey.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "sidekey", "plugins": [{{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true, "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_CIDR}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "{}"}}}}]}}"#,
            d.join("cni/ipam").display()
        ),
    )
    .unwrap();
    // The registry a test may start on the node (`Registry::start_in`):
    // plain HTTP, on the node's own address.
    let registry = format!("{NODE_IP}:{}", crate::registry::NODE_REGISTRY_PORT);
    let hosts = d.join("certs.d").join(&registry);
    fs::create_dir_all(&hosts).unwrap();
    fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    let path = d.join("containerd.toml");
    fs::write(
        &path,
        format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd/containerd.sock"
[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "sidekey.test/pause:1"
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{net_d}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#,
            d = d.display(),
            cni = cni_bin.display(),
            net_d = net_d.display(),
        ),
    )
    .unwrap();
    let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
    path.display().to_string()
}
