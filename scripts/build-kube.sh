#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into the test cache.
# Usage: scripts/build-kube.sh CACHE_DIR KUBE_VERSION ETCD_VERSION
# The result is CACHE_DIR/kube-<KUBE_VERSION>/bin/{kube-apiserver,etcd}; an
# existing complete build is reused.
set -euo pipefail
cache=$1 kube=$2 etcd=$3
out="$cache/kube-$kube-etcd-$etcd"
if [[ -x $out/bin/kube-apiserver && -x $out/bin/etcd ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "testenv: 'go' not found; install Go (https://go.dev/doc/install) to build kube-apiserver and etcd" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# kube-apiserver: require k8s.io/kubernetes and map each staging module
# (replaced by ./staging/src/k8s.io/X in its own go.mod) to its published v0.Y.Z.
staging=v0.${kube#v1.}
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
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
go mod tidy >/dev/null
mkdir -p "$out/bin"
go build -trimpath -ldflags='-s -w' -o "$out/bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver

# etcd: a two-line main around etcdmain, as the etcd repository's own main.go.
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
mv "$out/bin/kube-apiserver.tmp" "$out/bin/kube-apiserver"
