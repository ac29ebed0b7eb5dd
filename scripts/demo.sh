#!/usr/bin/env bash
# `make demo`: what sidekey does to a workload that carries secrets in env vars.
# (The agent and the webhook join this demo as they land.)
set -euo pipefail
cd "$(dirname "$0")/.."

bold=$(tput bold 2>/dev/null || true); off=$(tput sgr0 2>/dev/null || true)
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }

step "Building the sidekey CLI"
cargo build --quiet --locked --bin sidekey
sidekey=target/debug/sidekey
input=examples/workloads/orders-env-secrets.yaml
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

step "The workload today: secrets in env vars ($input)"
grep -nE 'DB_PASSWORD|API_KEY|secretKeyRef|vault:|sidekey.dev' "$input"

step "sidekey inject -f $input"
"$sidekey" inject -f "$input" >"$out/injected.yaml"
echo "wrote $(wc -l <"$out/injected.yaml") lines; what changed in the app container:"
awk '/^ *containers:/{p=1} p' "$out/injected.yaml" | sed -n '1,40p'

step "The env vars now point at files; the values never enter the spec"
grep -nE '_FILE|value: /run/secrets' "$out/injected.yaml"

step "The agent added as a native sidecar (Pod Security restricted, small requests)"
grep -nE 'name: sidekey-agent|restartPolicy: Always|runAsNonRoot|readOnlyRootFilesystem|cpu:|memory:' "$out/injected.yaml" | head -20

step "Injecting again changes nothing (idempotent)"
"$sidekey" inject -f "$out/injected.yaml" >"$out/again.yaml"
cmp "$out/injected.yaml" "$out/again.yaml" && echo "identical"

step "Bad input is refused, naming the annotation, and nothing is written"
sed 's|sidekey.dev/secret-tls-key|sidekey.dev/secret-../../etc/tls-key|' "$input" >"$out/bad.yaml"
rc=0
"$sidekey" inject -f "$out/bad.yaml" >"$out/bad-out.yaml" || rc=$?
[[ $rc -ne 0 ]] || { echo "unexpected: accepted" >&2; exit 1; }
echo "(exit status $rc, $(wc -c <"$out/bad-out.yaml") bytes on stdout)"

step "Done"
