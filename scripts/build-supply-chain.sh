#!/usr/bin/env bash
# Builds the supply-chain test tools from the Go module proxy into the test
# cache: the CNCF distribution registry (with only the filesystem and
# in-memory storage drivers) and cosign.
# Usage: scripts/build-supply-chain.sh CACHE_DIR REGISTRY_VERSION COSIGN_VERSION
#   ->  CACHE_DIR/registry-<V>/registry, CACHE_DIR/cosign-<V>/cosign
set -euo pipefail
cache=$1 registry=$2 cosign=$3
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# build_tool NAME VERSION MODULE PACKAGE LDFLAGS [MAIN]: builds PACKAGE of
# MODULE@VERSION into $cache/NAME-VERSION/NAME, or, given MAIN (the text of
# a main.go), that main instead; nothing when it is there already.
build_tool() {
  local name=$1 version=$2 module=$3 package=$4 ldflags=$5 main=${6:-}
  local out="$cache/$name-$version"
  [[ -x $out/$name ]] && return 0
  command -v go >/dev/null || { echo "testenv: 'go' not found; install Go to build $name" >&2; exit 1; }
  echo "testenv: building $name $version from the Go module proxy (once)" >&2
  local work
  work=$(mktemp -d)
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    go mod init "sidekey.test/$name" >/dev/null 2>&1
    if [[ -n $main ]]; then
      printf '%s\n' "$main" >main.go
      package=.
    else
      printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >tools.go
    fi
    go get "$module@$version" >/dev/null
    go mod tidy >/dev/null
    mkdir -p "$out"
    go build -trimpath -ldflags="-s -w $ldflags" -o "$out/$name.tmp" "$package"
    mv "$out/$name.tmp" "$out/$name"
  )
}

# The upstream registry main links every cloud storage driver; the tests
# need only the filesystem.
build_tool registry "$registry" github.com/distribution/distribution/v3 . "" '// The distribution registry with the filesystem and in-memory drivers only.
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

func main() {
	_ = registry.RootCmd.Execute()
}'

build_tool cosign "$cosign" github.com/sigstore/cosign/v2 github.com/sigstore/cosign/v2/cmd/cosign \
  "-X sigs.k8s.io/release-utils/version.gitVersion=$cosign"
