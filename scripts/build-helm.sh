#!/usr/bin/env bash
# Builds helm from the Go module proxy into the test cache.
# Usage: scripts/build-helm.sh CACHE_DIR HELM_VERSION  ->  CACHE_DIR/helm-<V>/helm
set -euo pipefail
cache=$1 version=$2
out="$cache/helm-$version"
[[ -x $out/helm ]] && exit 0
command -v go >/dev/null || { echo "testenv: 'go' not found; install Go to build helm" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
cd "$work"
go mod init sidekey.test/helm >/dev/null 2>&1
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
go get "helm.sh/helm/v3@$version" >/dev/null
go mod tidy >/dev/null
mkdir -p "$out"
go build -trimpath -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version" -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$out/helm.tmp" "$out/helm"
