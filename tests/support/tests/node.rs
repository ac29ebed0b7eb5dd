//! The real node's handle: it comes up, and its teardown leaves the host as
//! it found it (processes, cgroups, sysctls, iptables, mounts, directories).

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use sidekey_testenv::Cluster;
use sidekey_testenv::node::NODE_NAME;

/// What a node could leave behind on the host.
#[derive(Debug, PartialEq)]
struct HostState {
    sysctls: Vec<(String, String)>,
    iptables_kube_rules: usize,
    mounts: Vec<String>,
    node_processes: Vec<String>,
    cgroups: Vec<String>,
    run_containerd: bool,
}

fn host_state() -> HostState {
    let sysctls = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom"]
        .iter()
        .map(|k| (k.to_string(), std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap().trim().to_owned()))
        .collect();
    let rules = |cmd: &str| {
        let out = Command::new(cmd).arg("-S").output().unwrap();
        let nat = Command::new(cmd).args(["-t", "nat", "-S"]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&nat.stdout))
            .lines()
            .filter(|l| l.contains("KUBE-"))
            .count()
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("kubelet") || l.contains("containerd") || l.contains("node-state"))
        .map(str::to_owned)
        .collect();
    let wanted = [
        "kubelet",
        "containerd",
        "kube-proxy",
        "kube-apiserver",
        "kube-controller",
        "kube-scheduler",
        "etcd",
        "coredns",
        "bao",
        "postgres",
    ];
    let mut node_processes = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) {
            let comm = comm.trim();
            if wanted.iter().any(|w| comm.starts_with(w)) {
                node_processes.push(comm.to_owned());
            }
        }
    }
    let mut cgroups = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for c in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            if name.starts_with("sidekey-node") || name == "kubepods" {
                cgroups.push(c.path().display().to_string());
            }
        }
    }
    HostState {
        sysctls,
        iptables_kube_rules: rules("iptables"),
        mounts,
        node_processes,
        cgroups,
        run_containerd: std::path::Path::new("/run/containerd").exists(),
    }
}

/// One test at a time: each compares the whole host before and after.
static HOST: Mutex<()> = Mutex::new(());

#[test]
fn node_comes_up_ready_and_its_teardown_restores_the_host() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let before = host_state();
    {
        let cluster = Cluster::start(&[]);
        let nodes = cluster.api.kubectl_ok(&["get", "nodes", "-o", "name"]);
        assert_eq!(nodes.trim(), format!("node/{NODE_NAME}"));
        // The kubelet did change the host while it ran (so the restore below
        // is not vacuous): it tunes vm.overcommit_memory to 1.
        assert_eq!(std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap().trim(), "1");
        // And kube-proxy's rules live in the node's namespace, not the host's.
        assert_eq!(host_state().iptables_kube_rules, 0);
    }
    assert_eq!(host_state(), before);
}

#[test]
fn a_crashed_run_is_cleaned_up_by_the_next_start() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let before = host_state();
    // `make demo-cluster`'s program, killed with SIGKILL once its cluster
    // runs: no Drop, its daemons and PostgreSQL orphaned, as after a crash.
    let mut demo =
        Command::new(env!("CARGO_BIN_EXE_demo-cluster")).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = std::io::BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("ready in") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo-cluster ended before its cluster was ready");
    }
    demo.kill().unwrap();
    demo.wait().unwrap();
    let left = host_state();
    assert!(left.node_processes.len() >= 5 && !left.cgroups.is_empty(), "the crash left its node behind: {left:?}");
    {
        let cluster = Cluster::start(&[]);
        cluster.api.kubectl_ok(&["get", "nodes"]);
    }
    assert_eq!(host_state(), before);
}
