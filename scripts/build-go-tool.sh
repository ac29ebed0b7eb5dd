#!/usr/bin/env bash
# Builds one Go tool from the Go module proxy into the test cache, once.
# Usage: scripts/build-go-tool.sh CACHE NAME VERSION MODULE PACKAGE LDFLAGS [MAIN]
#   ->  CACHE/NAME-VERSION/NAME: PACKAGE of MODULE@VERSION, or, given MAIN (the
#   text of a main.go), that main instead.
set -euo pipefail
cache=$1
shift
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

build_tool "$@"
