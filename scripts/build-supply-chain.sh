#!/usr/bin/env bash
# Builds the supply-chain test tools from the Go module proxy into the test
# cache: the CNCF distribution registry (with only the filesystem and
# in-memory storage drivers) and cosign.
# Usage: scripts/build-supply-chain.sh CACHE_DIR REGISTRY_VERSION COSIGN_VERSION
#   ->  CACHE_DIR/registry-<V>/registry, CACHE_DIR/cosign-<V>/cosign
set -euo pipefail
cache=$1 registry=$2 cosign=$3
here=$(cd "$(dirname "$0")" && pwd)
build_tool() { "$here/build-go-tool.sh" "$cache" "$@"; }

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
