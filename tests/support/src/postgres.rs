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
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The superuser's name.
    pub superuser: String,
    /// The superuser's password.
    pub password: String,
    bin: PathBuf,
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

fn command(bin: &Path, name: &str, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

impl Postgres {
    /// Creates and starts a cluster.
    pub fn start() -> Postgres {
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
        let out = command(&bin, "initdb", user)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut cmd = command(&bin, "postgres", user);
        cmd.arg("-D").arg(&data).args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"]).arg(dir.path()).args([
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
            psql_raw(&bin, port, "postgres", &password, "select 1").is_ok()
        };
        wait_until("PostgreSQL to accept connections", Duration::from_secs(30), || pg(&process), || process.log());
        Postgres { port, superuser: "postgres".into(), password, bin, process, _dir: dir }
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
        psql_raw(&self.bin, self.port, user, password, sql)
    }
}

fn psql_raw(bin: &Path, port: u16, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(bin.join("psql"))
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
