//! An app that follows credential rotation without a restart, the way
//! sidekey expects apps to: it reads `DB_USERNAME_FILE` and
//! `DB_PASSWORD_FILE` (paths into the secrets volume), connects to
//! PostgreSQL, queries every `QUERY_INTERVAL_MS` (200), and when the agent
//! swaps the files (a new `..data`, seen with inotify) it reads the new
//! credentials, opens a new connection and drops the old one.
//!
//! It reads both files from one resolved `..data` version, so username and
//! password always belong together. With `RUN_SECONDS` it stops after that
//! long and prints a JSON summary (queries, failures, reconnects, distinct
//! users); it never prints a password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Settings from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The username file.
    pub username_file: PathBuf,
    /// The password file.
    pub password_file: PathBuf,
    /// `host=… port=… dbname=…` without credentials.
    pub target: String,
    /// Time between queries.
    pub interval: Duration,
    /// Stop after this long (`None`: run until SIGTERM).
    pub run_for: Option<Duration>,
}

impl Settings {
    /// Reads `DB_USERNAME_FILE`, `DB_PASSWORD_FILE`, `DB_HOST`, `DB_PORT`,
    /// `DB_NAME`, `QUERY_INTERVAL_MS`, `RUN_SECONDS`.
    ///
    /// # Errors
    /// A missing variable, by name.
    pub fn from_env() -> Result<Settings, String> {
        let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Ok(Settings {
            username_file: var("DB_USERNAME_FILE")?.into(),
            password_file: var("DB_PASSWORD_FILE")?.into(),
            target: format!(
                "host={} port={} dbname={} connect_timeout=5",
                std::env::var("DB_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
                num("DB_PORT", 5432),
                std::env::var("DB_NAME").unwrap_or_else(|_| "postgres".into())
            ),
            interval: Duration::from_millis(num("QUERY_INTERVAL_MS", 200)),
            run_for: std::env::var("RUN_SECONDS").ok().and_then(|v| v.parse().ok()).map(Duration::from_secs),
        })
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Queries attempted.
    pub queries: u64,
    /// Queries (or connections) that failed.
    pub failures: u64,
    /// New connections after a rotation.
    pub reconnects: u64,
    /// Distinct usernames used.
    pub users: Vec<String>,
}

/// Reads both files from one version of the volume.
fn read_credentials(s: &Settings) -> std::io::Result<(String, Zeroizing<String>)> {
    let resolve = |p: &Path| -> PathBuf {
        // <mount>/<name> -> ..data/<name>: resolve ..data once for both files.
        let dir = p.parent().unwrap_or(Path::new("."));
        match std::fs::read_link(dir.join("..data")) {
            Ok(v) => dir.join(v).join(p.file_name().unwrap_or_default()),
            Err(_) => p.to_owned(),
        }
    };
    let user = std::fs::read_to_string(resolve(&s.username_file))?;
    let password = Zeroizing::new(std::fs::read_to_string(resolve(&s.password_file))?);
    Ok((user.trim().to_owned(), password))
}

async fn connect(s: &Settings) -> Result<(tokio_postgres::Client, String), String> {
    let (user, password) = read_credentials(s).map_err(|e| format!("reading the credential files: {e}"))?;
    let mut config: tokio_postgres::Config = s.target.parse().map_err(|e| format!("{e}"))?;
    config.user(&user).password(password.as_bytes());
    let (client, conn) =
        config.connect(tokio_postgres::NoTls).await.map_err(|e| format!("connecting as {user}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, user))
}

/// Runs until `run_for` passes or SIGTERM.
pub async fn run(s: Settings) -> Summary {
    let mut summary = Summary::default();
    let (tx, mut changes) = mpsc::channel::<()>(8);
    let dir = s.username_file.parent().unwrap_or(Path::new(".")).to_owned();
    let watcher = notify::recommended_watcher(move |_e: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    });
    let _watcher = watcher.ok().and_then(|mut w| {
        use notify::Watcher;
        w.watch(&dir, notify::RecursiveMode::NonRecursive).ok().map(|()| w)
    });
    let version = || std::fs::read_link(dir.join("..data")).ok();
    let mut seen = version();
    let mut client = None;
    let deadline = s.run_for.map(|d| tokio::time::Instant::now() + d);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        while changes.try_recv().is_ok() {}
        let now = version();
        if now != seen && client.is_some() {
            seen = now;
            match connect(&s).await {
                Ok((c, user)) => {
                    client = Some(c);
                    summary.reconnects += 1;
                    eprintln!("credentials rotated: reconnected as {user}");
                    if !summary.users.contains(&user) {
                        summary.users.push(user);
                    }
                }
                Err(e) => eprintln!("reconnect failed, keeping the old connection: {e}"),
            }
        }
        if client.is_none() {
            match connect(&s).await {
                Ok((c, user)) => {
                    client = Some(c);
                    eprintln!("connected as {user}");
                    if !summary.users.contains(&user) {
                        summary.users.push(user);
                    }
                }
                Err(e) => {
                    summary.queries += 1;
                    summary.failures += 1;
                    eprintln!("{e}");
                }
            }
        }
        if let Some(c) = &client {
            summary.queries += 1;
            if let Err(e) = c.simple_query("SELECT 1").await {
                summary.failures += 1;
                eprintln!("query failed: {e}");
                client = None;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(s.interval) => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => break,
        }
    }
    summary
}
