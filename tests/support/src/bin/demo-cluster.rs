//! `make demo-cluster`: the main job on a real single-node cluster, shown
//! step by step, then torn down. Needs root and what `make testenv` and
//! `scripts/build-images.sh --test` provide (`make demo-cluster` runs both).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods, missing_docs)]

use std::time::{Duration, Instant};

use sidekey_testenv::shop::{Shop, images};

fn say(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn show(shop: &Shop, args: &[&str]) {
    println!("$ kubectl {}", args.join(" "));
    let out = shop.cluster.api.kubectl(args);
    print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn main() {
    let t = Instant::now();
    say(
        "A single-node cluster: etcd, kube-apiserver, controller-manager, scheduler, kubelet + containerd, kube-proxy, CoreDNS",
    );
    let shop = Shop::start(&images());
    println!(
        "ready in {:.1}s; OpenBao runs in namespace vault behind TLS, PostgreSQL on the node",
        t.elapsed().as_secs_f64()
    );
    show(&shop, &["get", "nodes", "-o", "wide"]);

    say("helm install sidekey deploy/helm/sidekey (self-managed webhook TLS, the Vault CA in the injector config)");
    shop.helm_install();
    show(&shop, &["-n", "sidekey", "get", "pods"]);

    say("kubectl apply -f examples/workloads/orders-app.yaml (namespace shop enforces Pod Security restricted)");
    println!("(the app image carries a busybox here, so we can look inside its container)");
    let pod = shop.apply_orders_app("sidekey.test/example-app-debug:1", &[]);
    let show_pod = |output: &str| show(&shop, &["-n", "shop", "get", "pod", &pod, "-o", output]);
    show_pod(
        "custom-columns=INIT:.spec.initContainers[*].name,CONTAINERS:.spec.containers[*].name,STATUS:.status.phase",
    );
    show_pod("jsonpath={range .spec.containers[0].env[*]}{.name}={.value}{\"\\n\"}{end}");

    say("Inside the app container: a read-only tmpfs, files readable by the app's group only");
    let sh = |cmd: &str| {
        println!("$ {cmd}");
        let out = shop.cluster.exec("shop", &pod, "app", &["/bin/busybox", "sh", "-c", cmd]);
        print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    sh("grep /run/secrets/sidekey /proc/mounts");
    sh("ls -lL /run/secrets/sidekey");
    sh("echo planted > /run/secrets/sidekey/x");

    say("Rotation, live: database credentials with a 10 s TTL and a 30 s max TTL; the app reconnects, no restart");
    let mut seen = 0;
    let until = Instant::now() + Duration::from_secs(65);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
        let log = shop.cluster.api.kubectl_ok(&["-n", "shop", "logs", &pod, "-c", "app"]);
        for line in log.lines().skip(seen) {
            println!("[{:>4.1}s] app: {line}", t.elapsed().as_secs_f64());
        }
        seen = log.lines().count();
    }

    say("Tearing down (every host change restored)");
    drop(shop);
    println!("done in {:.1}s", t.elapsed().as_secs_f64());
}
