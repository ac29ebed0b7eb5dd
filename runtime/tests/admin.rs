//! The admin endpoint against strangers: connections that never finish
//! their headers are bounded in number and in time, and a scrape still
//! gets through once they are gone.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use sidekey_runtime::{ADMIN_CONNECTIONS, ADMIN_HEADER_TIMEOUT, Admin, serve_admin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Fixed;

impl Admin for Fixed {
    fn metrics(&self) -> String {
        "# EOF\n".into()
    }
    fn ready(&self) -> bool {
        true
    }
}

/// Whether the server closed `s` (a read ends) within `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(start_paused = true)]
async fn incomplete_requests_are_bounded_in_number_and_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_admin(listener, Arc::new(Fixed), rx));
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));

    // Each sends half a request and waits.
    let mut slow = Vec::new();
    for _ in 0..ADMIN_CONNECTIONS * 4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nx-slow: ").await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut open = 0;
    for s in &mut slow {
        if !closed(s, Duration::from_millis(10)).await {
            open += 1;
        }
    }
    assert_eq!(open, ADMIN_CONNECTIONS, "connections past the cap are closed at once");

    // The ones kept are closed when their headers are late; then a scrape gets through.
    tokio::time::sleep(ADMIN_HEADER_TIMEOUT + Duration::from_secs(1)).await;
    for s in &mut slow {
        assert!(closed(s, Duration::from_millis(10)).await, "a connection outlived the header deadline");
    }
    let answer = get(addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("# EOF\n"), "{answer}");
}
