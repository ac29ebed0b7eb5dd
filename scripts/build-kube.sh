#!/usr/bin/env bash
# Builds the Kubernetes test servers from the Go module proxy into the test
# cache: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3) and CoreDNS
# with the few plugins a test cluster needs.
# Usage: scripts/build-kube.sh CACHE_DIR KUBE_VERSION ETCD_VERSION COREDNS_VERSION
# The result is CACHE_DIR/kube-<KUBE>-etcd-<ETCD>/bin/ and
# CACHE_DIR/coredns-<COREDNS>/coredns; complete builds are reused.
set -euo pipefail
cache=$1 kube=$2 etcd=$3 coredns=$4
out="$cache/kube-$kube-etcd-$etcd"
dns_out="$cache/coredns-$coredns"
commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
missing=()
for c in "${commands[@]}"; do [[ -x $out/bin/$c ]] || missing+=("$c"); done
[[ -x $out/bin/etcd ]] || missing+=(etcd)
[[ -x $dns_out/coredns ]] || missing+=(coredns)
[[ ${#missing[@]} == 0 ]] && exit 0

command -v go >/dev/null || { echo "testenv: 'go' not found; install Go (https://go.dev/doc/install) to build ${missing[*]}" >&2; exit 1; }
echo "testenv: building ${missing[*]} from the Go module proxy (a cold build takes 20-30 min on 2 cores)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$out/bin"

# Kubernetes: require k8s.io/kubernetes and map each staging module (replaced
# by ./staging/src/k8s.io/X in its own go.mod) to its published v0.Y.Z. The
# version is stamped as the release build does, so the node reports it.
if [[ ! -x $out/bin/kubelet || ! -x $out/bin/kube-apiserver || ! -x $out/bin/kube-proxy \
   || ! -x $out/bin/kube-scheduler || ! -x $out/bin/kube-controller-manager ]]; then
  staging=v0.${kube#v1.}
  minor=${kube#v1.}; minor=${minor%%.*}
  mkdir -p "$work/kube"
  cd "$work/kube"
  go mod init sidekey.test/kube >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$kube" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f $gomod ]] || { echo "testenv: could not download k8s.io/kubernetes@$kube from the Go module proxy" >&2; exit 1; }
  {
    echo "require k8s.io/kubernetes $kube"
    echo "replace ("
    grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >>go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${commands[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >tools.go
  go mod tidy >/dev/null
  v=k8s.io/component-base/version
  ldflags="-s -w -X $v.gitVersion=$kube -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  for c in "${commands[@]}"; do
    [[ -x $out/bin/$c ]] && continue
    go build -trimpath -ldflags="$ldflags" -o "$out/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$out/bin/$c.tmp" "$out/bin/$c"
  done
fi

# etcd: a two-line main around etcdmain, as the etcd repository's own main.go.
if [[ ! -x $out/bin/etcd ]]; then
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  go mod init sidekey.test/etcd >/dev/null 2>&1
  cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$etcd" >/dev/null
  go mod tidy >/dev/null
  go build -trimpath -ldflags='-s -w' -o "$out/bin/etcd.tmp" .
  mv "$out/bin/etcd.tmp" "$out/bin/etcd"
fi

# CoreDNS with only the plugins cluster DNS needs (the upstream main imports
# all ~60, among them every cloud SDK): the documented way to trim it is a
# main of one's own that sets the directive order and imports the plugins.
if [[ ! -x $dns_out/coredns ]]; then
  mkdir -p "$work/coredns" "$dns_out"
  cd "$work/coredns"
  go mod init sidekey.test/coredns >/dev/null 2>&1
  cat >main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@$coredns" >/dev/null
  go mod tidy >/dev/null
  go build -trimpath -ldflags='-s -w' -o "$dns_out/coredns.tmp" .
  mv "$dns_out/coredns.tmp" "$dns_out/coredns"
fi
