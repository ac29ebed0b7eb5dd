#!/usr/bin/env bash
# Load benchmark of the injector: wrk (HTTP/1.1 keep-alive over TLS) posts a
# typical pod's AdmissionReview to the release binary at a given concurrency
# and reports throughput, latency percentiles and the injector's peak RSS.
#
#   benches/injector-load.sh [CONCURRENCY] [SECONDS]     (defaults: 64, 20)
#
# By default both float over all cores (wrk with one thread, which keeps up
# and leaves more CPU to the injector than two). PIN=1 pins the injector to
# CPU 0 and wrk to CPU 1: the generator cannot steal the injector's core, but
# the injector gets one core instead of a share of two (slower here).
#
# Needs wrk (Debian package `wrk`), openssl and taskset (util-linux); builds
# the release injector. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
conc=${1:-64}
secs=${2:-20}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -q -p sidekey-injector
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
python3 - "$work/review.json" <<'PY'
import json, sys
pod = json.load(open("benches/typical-pod.json"))
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "4b1a7c1e-1f4e-4b8e-9f57-4f2f4a3a9d10",
                      "kind": {"group": "", "version": "v1", "kind": "Pod"},
                      "resource": {"group": "", "version": "v1", "resource": "pods"},
                      "operation": "CREATE", "namespace": "payments", "object": pod}}
json.dump(review, open(sys.argv[1], "w"))
PY
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/review.json", "r")
wrk.body = f:read("*a")
f:close()
LUA
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pin=${PIN:-0}
if [ "$pin" = 1 ]; then
  command -v taskset >/dev/null || { echo "taskset not found: apt-get install util-linux (or PIN=0)" >&2; exit 1; }
  server=(taskset -c 0) client=(taskset -c 1 wrk -t1)
else
  server=() client=(wrk -t1)
fi
SIDEKEY_LOG=warn "${server[@]}" target/release/sidekey-injector --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$work/injector.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.05; done
# Sanity: the response is an injection.
curl -sk -X POST -H 'Content-Type: application/json' --data-binary @"$work/review.json" "https://127.0.0.1:$port/mutate" | grep -q '"patchType":"JSONPatch"'
"${client[@]}" -c"$conc" -d5s -s "$work/post.lua" "https://127.0.0.1:$port/mutate" >/dev/null   # warm up
echo "PIN=$pin: ${server[*]:-(no pinning)} injector; ${client[*]} load"
"${client[@]}" -c"$conc" -d"${secs}s" --latency -s "$work/post.lua" "https://127.0.0.1:$port/mutate" | tee "$work/wrk.txt"
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
echo
echo "injector peak RSS: $((rss / 1024)) MiB"
echo "requests counted by the injector: $(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^sidekey_injector_injections_total/ {print $2}')"
