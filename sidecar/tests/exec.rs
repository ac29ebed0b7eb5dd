//! `sidekey-agent exec`: secrets as env vars that exist only in the app's
//! process, and the supervisor that restarts the app when they change.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::process::Command;
use std::time::{Duration, Instant};

use sidekey::secret::SecretBytes;
use sidekey_agent::writer::{AtomicWriter, Payload, PayloadFile};

fn write(w: &AtomicWriter, a: &str) {
    let mut p = Payload::default();
    p.files.insert("a".into(), PayloadFile { content: SecretBytes::new(a.as_bytes().to_vec()), mode: 0o440 });
    let mut dir = std::collections::BTreeMap::new();
    dir.insert("K1".to_owned(), PayloadFile { content: SecretBytes::new(b"v1".to_vec()), mode: 0o440 });
    p.dirs.insert("d".into(), dir);
    w.write(&p).unwrap();
}

#[test]
fn exec_sets_variables_from_files_and_replaces_itself() {
    let dir = tempfile::tempdir().unwrap();
    write(&AtomicWriter::new(dir.path()), "s3cret value");
    let d = dir.path().display();
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
        .args([
            "exec",
            "--env",
            &format!("A={d}/a"),
            "--env-dir",
            &format!("{d}/d:P_"),
            "--",
            "sh",
            "-c",
            "echo \"$A|$P_K1\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cret value|v1\n");
}

#[test]
fn variables_named_like_options_stay_values_in_the_injected_form() {
    let dir = tempfile::tempdir().unwrap();
    write(&AtomicWriter::new(dir.path()), "v");
    let d = dir.path().display();
    // `--restart-on-change` is a valid env var name in Kubernetes; the
    // injector writes each option and its value as one token.
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
        .args(["exec", &format!("--env=--restart-on-change={d}/a"), &format!("--env-dir={d}/d:--P_"), "--", "env"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.lines().any(|l| l == "--restart-on-change=v"), "{env}");
    assert!(env.lines().any(|l| l == "--P_K1=v1"), "{env}");
}

#[test]
fn exec_times_out_naming_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
        .args(["exec", "--timeout", "300ms", "--env", &format!("A={d}/missing"), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out") && err.contains("missing"), "{err}");
}

#[test]
fn the_supervisor_restarts_the_command_when_secrets_change() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let w = AtomicWriter::new(&secrets);
    write(&w, "one");
    let log = dir.path().join("seen");
    let s = secrets.display();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
        .args(["exec", "--restart-on-change", &s.to_string(), "--env", &format!("A={s}/a"), "--", "sh", "-c"])
        .arg(format!("echo \"$A\" >> {}; exec sleep 60", log.display()))
        .spawn()
        .unwrap();
    let wait_lines = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().count() >= n {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the command did not run {n} times");
    };
    assert_eq!(wait_lines(1), "one\n");
    write(&w, "two");
    assert_eq!(wait_lines(2), "one\ntwo\n");
    let start = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// The owner of `/proc/<pid>/environ`: root for a non-dumpable process,
/// whatever its UID.
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid()
}

#[test]
fn every_command_is_non_dumpable_before_it_reads_anything() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let fifo = dir.path().join("config");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let f = fifo.display().to_string();
    // As an unprivileged UID (the tests run as root), each command blocks
    // reading its config from a FIFO: it must already be non-dumpable.
    for args in [vec!["ready", "--config", &f], vec!["run", "--config", &f]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
            .args(&args)
            .uid(65534)
            .gid(65534)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(proc_owner(child.id()), 0, "{args:?} is dumpable while it reads its config");
        std::fs::write(&fifo, "{}").unwrap();
        child.wait().unwrap();
    }
}
