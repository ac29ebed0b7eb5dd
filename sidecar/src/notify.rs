//! Tells the app that files changed: a signal to its processes (in a shared
//! process namespace) or an HTTP POST to a loopback URL, with retries.

use std::time::Duration;

use sidekey::annotations::{OnChange, Signal};

use crate::metrics::Metrics;

/// Whether a `/proc/<pid>/mountinfo` text has a mount at `path`: the
/// secrets volume, mounted only into the containers the pod selected
/// (mount points with spaces are octal-escaped; `path` has none, validated).
fn has_mount_at(mountinfo: &str, path: &str) -> bool {
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// Signals the processes of the selected containers (those that mount the
/// secrets at `mount_path`), never the agent, PID 1, a pause container or
/// another container of the pod; returns how many were signalled.
fn signal_processes(signal: Signal, mount_path: &str) -> Result<usize, String> {
    let sig = match signal {
        Signal::Hup => rustix::process::Signal::HUP,
        Signal::Usr1 => rustix::process::Signal::USR1,
        Signal::Usr2 => rustix::process::Signal::USR2,
        Signal::Int => rustix::process::Signal::INT,
        Signal::Quit => rustix::process::Signal::QUIT,
        Signal::Winch => rustix::process::Signal::WINCH,
    };
    let me = std::process::id();
    let mut sent = 0;
    let mut denied = 0;
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("listing /proc: {e}"))?;
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid <= 1 || pid as u32 == me {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "pause" || comm.trim().starts_with("sidekey-agent") {
            continue;
        }
        let mountinfo = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        if !has_mount_at(&mountinfo, mount_path) {
            continue;
        }
        let Some(pid) = rustix::process::Pid::from_raw(pid) else { continue };
        match rustix::process::kill_process(pid, sig) {
            Ok(()) => sent += 1,
            Err(_) => denied += 1,
        }
    }
    if sent == 0 {
        return Err(format!(
            "no process could be signalled ({denied} refused): the app must share the process namespace, run as the agent's UID and mount the secrets (sidekey.dev/containers)"
        ));
    }
    Ok(sent)
}

/// Notifies the app per `on_change` (signals go to the containers that
/// mount `mount_path`), retrying HTTP up to 3 times.
pub async fn notify(on_change: &OnChange, mount_path: &str, http: &reqwest_like::Client, metrics: &Metrics) {
    match on_change {
        OnChange::None => {}
        OnChange::Signal(sig) => match signal_processes(*sig, mount_path) {
            Ok(n) => {
                metrics.notification(true);
                tracing::info!(signal = %sig, processes = n, "notified the app");
            }
            Err(e) => {
                metrics.notification(false);
                tracing::warn!(signal = %sig, error = %e, "could not notify the app");
            }
        },
        OnChange::Http(url) => {
            let mut delay = Duration::from_millis(250);
            for attempt in 1..=3 {
                match http.post(url).await {
                    Ok(status) if (200..300).contains(&status) => {
                        metrics.notification(true);
                        tracing::info!(url = %url, "notified the app");
                        return;
                    }
                    Ok(status) => tracing::warn!(url = %url, status, attempt, "the app's reload endpoint refused"),
                    Err(e) => {
                        tracing::warn!(url = %url, error = %e, attempt, "could not reach the app's reload endpoint")
                    }
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            metrics.notification(false);
        }
    }
}

/// POSTs to the app's reload URL over HTTP/1.1 (hyper's client connection;
/// no TLS: the URL is always a loopback address inside the pod).
pub mod reqwest_like {
    use std::time::Duration;

    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    /// Stateless; one connection per notification.
    #[derive(Clone, Default)]
    pub struct Client;

    impl Client {
        /// POSTs an empty body to `url` (`http://host:port/path`); returns the status.
        ///
        /// # Errors
        /// Connection or protocol errors.
        pub async fn post(&self, url: &str) -> Result<u16, String> {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
            let authority = uri.authority().ok_or("the URL has no host")?.clone();
            let fut = async {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| e.to_string())?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
                    .header(hyper::header::HOST, authority.as_str())
                    .header(hyper::header::USER_AGENT, "sidekey-agent")
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                Ok(resp.status().as_u16())
            };
            tokio::time::timeout(Duration::from_secs(5), fut).await.map_err(|_| "timed out".to_owned())?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_that_mount_the_secrets_are_selected() {
        let app = "1 0 0:1 / / ro - overlay overlay ro\n\
                   20 1 0:30 / /run/secrets/sidekey ro,relatime - tmpfs tmpfs ro,size=4096k\n";
        let other = "1 0 0:1 / / ro - overlay overlay ro\n\
                     21 1 0:31 / /run/secrets/sidekey-other ro - tmpfs tmpfs ro\n";
        assert!(has_mount_at(app, "/run/secrets/sidekey"));
        assert!(!has_mount_at(other, "/run/secrets/sidekey"));
        assert!(!has_mount_at("", "/run/secrets/sidekey"));
    }
}
