//! A loopback TCP proxy that can cut its target off: for outage tests that
//! must keep the server's state (an OpenBao dev server forgets everything
//! when restarted).

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Forwards `127.0.0.1:<port>` to a target while up; refuses (closes at
/// once) while down.
pub struct TcpProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<std::collections::HashMap<usize, [TcpStream; 2]>>>,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

/// Connections through the proxy: open now, the most open at once, and
/// all so far (a connection counts as open until its client closes it).
#[derive(Debug, Default)]
pub struct Counts {
    open: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub fn start(target: &str) -> TcpProxy {
        Self::start_in(target, None)
    }

    /// Starts forwarding from `127.0.0.1` on the host to `target` inside the
    /// network namespace `netns` (a `/proc/PID/ns/net` path): the listening
    /// socket is made here, the thread that connects enters the namespace
    /// first, and sockets keep the namespace they were made in.
    pub fn start_in(target: &str, netns: Option<&std::path::Path>) -> TcpProxy {
        Self::start_with(vec![target.to_owned()], netns)
    }

    /// Forwards each new connection to the next of `targets` in turn (a
    /// Service in front of several replicas).
    pub fn round_robin(targets: &[String]) -> TcpProxy {
        Self::start_with(targets.to_vec(), None)
    }

    fn start_with(targets: Vec<String>, netns: Option<&std::path::Path>) -> TcpProxy {
        let netns = netns.map(|p| std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<std::collections::HashMap<usize, [TcpStream; 2]>>> = Arc::default();
        let counts: Arc<Counts> = Arc::default();
        let (up2, stop2, conns2) = (up.clone(), stop.clone(), conns.clone());
        let counts2 = counts.clone();
        thread::spawn(move || {
            if let Some(ns) = netns {
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns into the node's network namespace");
            }
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let target = &targets[counts2.total.load(Ordering::SeqCst) % targets.len().max(1)];
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                // Small writes go out at once (no Nagle delay on top of the
                // peers' own).
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let id = counts2.total.fetch_add(1, Ordering::SeqCst);
                conns2.lock().unwrap().insert(id, [client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let open = counts2.open.fetch_add(1, Ordering::SeqCst) + 1;
                counts2.peak.fetch_max(open, Ordering::SeqCst);
                let (closed, forget) = (counts2.clone(), conns2.clone());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), move || {
                    closed.open.fetch_sub(1, Ordering::SeqCst);
                    forget.lock().unwrap().remove(&id);
                });
                pipe(server, client, || {});
            }
        });
        TcpProxy { addr, up, conns, stop, counts }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn peak_connections(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Every connection so far.
    pub fn total_connections(&self) -> usize {
        self.counts.total.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain().flat_map(|(_, pair)| pair) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Forwards again.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.down();
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copies `from` to `to` until `from` ends, then runs `done`.
fn pipe(mut from: TcpStream, mut to: TcpStream, done: impl FnOnce() + Send + 'static) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
        done();
    });
}
