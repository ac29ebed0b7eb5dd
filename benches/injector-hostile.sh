#!/usr/bin/env bash
# The injector under hostile requests (issue 14): the release binary gets,
# one after another, AdmissionReviews built to cost it memory or time, and
# then 20 clients that stall mid-body while normal reviews go on. For each:
# the answer, the time it took, and the injector's peak RSS so far (VmHWM).
#
#   benches/injector-hostile.sh
#
# Needs openssl, curl and python3; builds the release injector. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p sidekey-injector
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SIDEKEY_LOG=warn target/release/sidekey-injector --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --body-timeout 5s >"$work/injector.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.05; done
python3 - "$port" "$pid" <<'PY'
import json, socket, ssl, sys, threading, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def hwm():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM"):
            return int(l.split()[1]) // 1024

def review(pod):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "b1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "namespace": "bench", "object": pod}}, separators=(",", ":")).encode()

def post(body):
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
cases = [
    ("typical pod (corpus 01)", review(typical)),
    ("1,400,000 tiny values (2.8 MB), opted in", review(pod(opted, args=[0] * 1_400_000))),
    ("1,400,000 tiny values (2.8 MB), not opted in", review(pod({}, args=[0] * 1_400_000))),
    ("120,000 unknown sidekey.dev annotations", review(pod(dict(opted, **{f"sidekey.dev/x{i}": "1" for i in range(120_000)})))),
    ("5,000 env vars, half references (349 KB)", review(pod(opted, env=[
        {"name": f"S{i}", "value": f"vault:secret/data/app/s{i % 50}#k{i}"} if i % 2 == 0 else
        {"name": f"P{i}", "value": f"x-$(P{i - 2})-padding-padding-padding"} for i in range(5000)]))),
    ("one 2.9 MB annotation value", review(pod(dict(opted, big="x" * 2_900_000)))),
]
print(f"{'request':48} {'body':>9} {'answer':>10} {'ms':>8} {'answer B':>9} {'peak RSS':>9}")
for name, body in cases:
    verdict, ms, n = post(body)
    print(f"{name:48} {len(body)/1e6:8.2f}M {verdict:>10} {ms:8.1f} {n:9d} {hwm():7d}Mi")

# 20 clients stall mid-body (each promised 2.9 MB, sent 1 MB) while normal
# reviews go on; the body deadline (5 s here) frees them.
stalled = []
def stall():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2900000\r\n\r\n" + b" " * 1_000_000)
    stalled.append(s)
threads = [threading.Thread(target=stall) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
times = sorted(post(review(typical))[1] for _ in range(200))
print(f"with 20 stalled bodies: 200 typical reviews p50 {times[100]:.1f} ms, p99 {times[197]:.1f} ms; peak RSS {hwm()} Mi")
time.sleep(6)
cut = 0
for s in stalled:
    s.settimeout(2)
    try:
        if s.recv(64).startswith(b"HTTP/1.1 408"): cut += 1
    except Exception:
        pass
print(f"after the body deadline: {cut}/20 stalled clients answered 408")
PY
