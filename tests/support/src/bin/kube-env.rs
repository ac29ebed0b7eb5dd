//! A kube-apiserver for benchmarks that need pod identities:
//! `kube-env DIR [N]` starts etcd + kube-apiserver, creates the service
//! account `fleet/app`, writes N (default 10) TokenRequest tokens for it
//! (audience `sidekey`, 1 h) as `DIR/token-<i>`, prints one JSON line
//! (`url`, `ca_pem`, `admin_token`, `sa_public_key`, `issuer`, `tokens`),
//! and keeps the apiserver running until its stdin closes.
//! `benches/fleet.py --auth kubernetes|jwt` runs it.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods, missing_docs)]

use std::io::Read;
use std::path::PathBuf;

use sidekey_testenv::KubeApi;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: kube-env DIR [N]"));
    let n: usize = args.next().map_or(10, |s| s.parse().expect("N: a number"));
    let kube = KubeApi::start();
    kube.create_namespace("fleet", &[]);
    kube.create_service_account("fleet", "app");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let path = dir.join(format!("token-{i}"));
            std::fs::write(&path, kube.token_request("fleet", "app", "sidekey")).unwrap();
            path.display().to_string()
        })
        .collect();
    let info = serde_json::json!({
        "url": kube.url, "ca_pem": kube.ca_pem, "admin_token": kube.admin_token,
        "sa_public_key": kube.service_account_public_key(), "issuer": KubeApi::ISSUER, "tokens": tokens,
    });
    println!("{info}");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
