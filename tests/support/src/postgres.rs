//! A private PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a
//! free loopback port, run as an unprivileged user (both refuse root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::{Process, free_port, tool, wait_until};

/// A running PostgreSQL server with password (SCRAM) authentication over TCP.
pub struct Postgres {
    /// The address clients connect to: 127.0.0.1, or a node's address when
    /// the server runs in the node's network namespace.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The superuser's name.
    pub superuser: String,
    /// The superuser's password.
    pub password: String,
    bin: PathBuf,
    /// `nsenter` into a node's network namespace, when there.
    netns_pid: Option<u32>,
    process: Process,
    _dir: TempDir,
}

/// The UID and GID to run the server binaries as: ourselves, or the
/// `postgres` user when we are root.
fn run_as() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find(|l| l.starts_with("postgres:")).unwrap_or_else(|| {
        panic!("running as root, PostgreSQL needs an unprivileged user: create one named postgres (apt-get install postgresql creates it)")
    });
    let f: Vec<&str> = entry.split(':').collect();
    Some((f[2].parse().unwrap(), f[3].parse().unwrap()))
}

/// `bin/name`, run as `user`; inside the network namespace of process
/// `netns_pid` when given (nsenter enters it as root, then drops to `user`).
fn command(bin: &Path, name: &str, user: Option<(u32, u32)>, netns_pid: Option<u32>) -> Command {
    let mut cmd = match netns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--target={pid}")).arg("--net");
            if let Some((uid, gid)) = user {
                c.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
            }
            c.arg("--").arg(bin.join(name));
            c
        }
        None => {
            let mut c = Command::new(bin.join(name));
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c
        }
    };
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

impl Postgres {
    /// Creates and starts a cluster on 127.0.0.1.
    pub fn start() -> Postgres {
        Self::start_on(None)
    }

    /// Creates and starts a cluster inside `node`'s network namespace,
    /// listening on its loopback and on the node's address, where pods reach
    /// it (a database outside the cluster, as most are).
    pub fn start_in(node: &crate::node::Node) -> Postgres {
        Self::start_on(Some(node.pid()))
    }

    fn start_on(netns_pid: Option<u32>) -> Postgres {
        let bin = tool("SIDEKEY_PG_BIN");
        let user = run_as();
        let dir = tempfile::Builder::new().prefix("sidekey-pg").tempdir().unwrap();
        let password = "pg-superuser-test-password".to_owned();
        std::fs::write(dir.path().join("pwfile"), &password).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(dir.path().join("pwfile"), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = command(&bin, "initdb", user, None)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if netns_pid.is_some() {
            // Pods connect from the pod network (still with a password).
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(&format!("host all all {} scram-sha-256\n", crate::node::POD_CIDR));
            std::fs::write(&hba, text).unwrap();
        }
        let (port, host, listen) = match netns_pid {
            Some(_) => (5432, crate::node::NODE_IP.to_owned(), format!("127.0.0.1,{}", crate::node::NODE_IP)),
            None => (free_port(), "127.0.0.1".to_owned(), "127.0.0.1".to_owned()),
        };
        let mut cmd = command(&bin, "postgres", user, netns_pid);
        cmd.arg("-D").arg(&data).args(["-p", &port.to_string(), "-h", &listen, "-k"]).arg(dir.path()).args([
            "-c",
            "fsync=off",
            "-c",
            "max_connections=300",
            "-c",
            "log_min_messages=warning",
        ]);
        let process = Process::spawn("postgres", cmd, dir.path());
        let pg = |process: &Process| {
            process.assert_running();
            psql_raw(&bin, netns_pid, port, "postgres", &password, "select 1").is_ok()
        };
        wait_until("PostgreSQL to accept connections", Duration::from_secs(30), || pg(&process), || process.log());
        Postgres { host, port, superuser: "postgres".into(), password, bin, netns_pid, process, _dir: dir }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `sql` over TCP as `user` with `password` (psql, tuples only).
    ///
    /// # Errors
    /// psql's error output when the login or the statement fails.
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        psql_raw(&self.bin, self.netns_pid, self.port, user, password, sql)
    }
}

fn psql_raw(
    bin: &Path,
    netns_pid: Option<u32>,
    port: u16,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let out = command(bin, "psql", None, netns_pid)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
            "-tAX",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("psql: {e} (install the PostgreSQL client: apt-get install postgresql-client)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
