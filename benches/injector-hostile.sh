#!/usr/bin/env bash
# The injector under hostile requests (issue 14): AdmissionReviews built to
# cost it memory or time, each sent to a fresh release injector (its answer,
# the time it took and the process's peak RSS, VmHWM); then all of them in
# sequence on one injector (what the chart's memory limit must hold); then
# the p50/p99 of typical reviews alone and while 200 clients stall mid-body.
#
#   benches/injector-hostile.sh
#
# Needs openssl, curl and python3; builds the release injector. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p sidekey-injector
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
python3 - "$work" <<'PY'
import json, os, socket, ssl, subprocess, sys, threading, time
work = sys.argv[1]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Injector:
    """A fresh release injector, so each figure is that request's own peak."""
    def __init__(self):
        self.port, admin = free_port(), free_port()
        # As the image and the chart run it.
        env = dict(os.environ, SIDEKEY_LOG="warn", MIMALLOC_PURGE_DELAY="0")
        self.proc = subprocess.Popen(["target/release/sidekey-injector", "--listen", f"127.0.0.1:{self.port}",
            "--admin-listen", f"127.0.0.1:{admin}", "--tls-cert", f"{work}/cert.pem", "--tls-key", f"{work}/key.pem",
            "--body-timeout", "5s"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/injector.log", "a"))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close(); break
            except OSError:
                time.sleep(0.02)
        self.idle = self.hwm()
    def hwm(self):
        for l in open(f"/proc/{self.proc.pid}/status"):
            if l.startswith("VmHWM"):
                return int(l.split()[1]) / 1024
    def stop(self):
        self.proc.kill(); self.proc.wait()

def review(pod):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "b1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "namespace": "bench", "object": pod}}, separators=(",", ":")).encode()

def post(port, body):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    t = time.perf_counter()
    s.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    ms = (time.perf_counter() - t) * 1000
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    try:
        resp = json.loads(payload)["response"]
        verdict = "injected" if "patch" in resp else ("allowed" if resp["allowed"] else "denied")
    except Exception:
        verdict = head.split(b"\r\n")[0].decode()
    return verdict, ms, len(payload)

typical = json.load(open("benches/typical-pod.json"))
def pod(annotations, env=(), args=()):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"sidekey.dev/inject": "true"},
            "annotations": annotations}, "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 1000},
            "containers": [{"name": "app", "image": "x", "env": list(env), "args": list(args)}]}}
opted = {"sidekey.dev/inject": "true"}
def refs(n, pad):
    return [{"name": f"S{i}", "value": f"vault:secret/data/{'p' * pad}/s{i}#k"} for i in range(n)]
cases = [
    ("typical pod (corpus 01)", review(typical)),
    ("1,400,000 tiny values (2.8 MB), opted in", review(pod(opted, args=[0] * 1_400_000))),
    ("1,400,000 tiny values (2.8 MB), not opted in", review(pod({}, args=[0] * 1_400_000))),
    ("120,000 unknown sidekey.dev annotations", review(pod(dict(opted, **{f"sidekey.dev/x{i}": "1" for i in range(120_000)})))),
    ("45,000 unknown sidekey.dev annotations", review(pod(dict(opted, **{f"sidekey.dev/x{i}": "1" for i in range(45_000)})))),
    ("49,950 plain annotations (under the value bound)", review(pod(dict(opted, **{f"a{i}": "" for i in range(49_950)})))),
    ("1,000 references, 2 KB paths (the most moved)", review(pod(opted, env=refs(1000, 2000)))),
    ("19,000 references (over the most moved)", review(pod(opted, env=refs(19_000, 100)))),
    ("one 2.9 MB annotation value", review(pod(dict(opted, big="x" * 2_900_000)))),
    ("2.9 MB of plain env values, opted in", review(pod(opted, env=[{"name": f"E{i}", "value": "v" * 280} for i in range(10_000)]))),
]
print(f"{'request (fresh injector each)':48} {'body':>9} {'answer':>10} {'ms':>8} {'answer B':>9} {'peak RSS':>9}")
worst = 0
for name, body in cases:
    inj = Injector()
    verdict, ms, n = post(inj.port, body)
    peak = inj.hwm(); worst = max(worst, peak)
    print(f"{name:48} {len(body)/1e6:8.2f}M {verdict:>10} {ms:8.1f} {n:9d} {peak:7.1f}Mi  (idle {inj.idle:.1f})")
    inj.stop()
print(f"worst single request: {worst:.1f} MiB")

# Then all of them, one after another, on one injector: what the limit must hold.
inj = Injector()
for name, body in cases:
    post(inj.port, body)
print(f"the whole sequence on one injector: peak RSS {inj.hwm():.1f} MiB")

# 200 typical reviews, then again while 200 clients stall mid-body (each
# promised 2.9 MB and sent 64 KB); the body deadline (5 s here) frees them.
def typical_times(port):
    times = sorted(post(port, review(typical))[1] for _ in range(400))
    return times[200], times[396]
p50, p99 = typical_times(inj.port)
print(f"400 typical reviews: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
stalled = []
def stall():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", inj.port)), server_hostname="localhost")
    s.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2900000\r\n\r\n" + b" " * 65536)
    stalled.append(s)
threads = [threading.Thread(target=stall) for _ in range(200)]
for t in threads: t.start()
for t in threads: t.join()
p50, p99 = typical_times(inj.port)
print(f"with 200 stalled bodies: 400 typical reviews p50 {p50:.1f} ms, p99 {p99:.1f} ms; peak RSS {inj.hwm():.1f} MiB")
time.sleep(6)
cut = 0
for s in stalled:
    s.settimeout(2)
    try:
        if s.recv(64).startswith(b"HTTP/1.1 408"): cut += 1
    except Exception:
        pass
print(f"after the body deadline: {cut}/200 stalled clients answered 408")
inj.stop()
PY
