#!/usr/bin/env bash
# Builds the images from deploy/docker/*.Dockerfile with whichever of docker,
# podman or buildah is installed (BUILDER=… to choose), after the static
# binaries they pack (scripts/build-static.sh), and saves each as a
# docker-archive tarball in target/images/ (loadable with `docker load`,
# `podman load` or `ctr images import`).
#
#   scripts/build-images.sh           the agent, injector and example app
#   scripts/build-images.sh --test    also the test images (tests/node/images)
#   IMAGE_PREFIX=registry.example.com/platform scripts/build-images.sh
#   PUSH_TO=registry.example.com/platform scripts/build-images.sh
#       also pushes the agent, injector and example app there with skopeo
#       (PUSH_TLS_VERIFY=false for a plain-HTTP registry) and prints each
#       digest; sign and deploy those digests (docs/supply-chain.md)
#
# Tags: $IMAGE_PREFIX/sidekey-{agent,injector,example-app}:<version>, by
# default ghcr.io/sidekey/…, the names the Helm chart and the injector's
# built-in config use. To run them from your registry, push these tags (or
# retag them) and set the chart's image values; see docs/supply-chain.md.
set -euo pipefail
cd "$(dirname "$0")/.."
with_test=0
[[ ${1:-} == --test ]] && with_test=1
prefix=${IMAGE_PREFIX:-ghcr.io/sidekey}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
cache=${SIDEKEY_CACHE:-$HOME/.cache/sidekey}
out=target/images
ctx=$out/context
musl=target/x86_64-unknown-linux-musl

scripts/build-static.sh
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$musl/agent/sidekey-agent" "$musl/release/sidekey-injector" "$musl/release/sidekey-example-app" "$ctx/"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/" \
  || { echo "no CA bundle at /etc/ssl/certs/ca-certificates.crt: apt-get install ca-certificates" >&2; exit 1; }

builder=${BUILDER:-}
if [[ -z $builder ]]; then
  # A docker CLI without a reachable daemon does not count.
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker
  elif command -v podman >/dev/null; then builder=podman
  elif command -v buildah >/dev/null; then builder=buildah
  fi
fi
[[ -n $builder ]] || { echo "no image builder: install docker, podman or buildah (apt-get install buildah)" >&2; exit 1; }
echo "build-images: building with $builder" >&2
# buildah keeps its storage in the cache (vfs: no overlay mounts on the host).
buildah_opts=(--root "$cache/buildah/root" --runroot "$cache/buildah/run" --storage-driver vfs)

# build TAG DOCKERFILE CONTEXT [BUILD-ARG...]
build() {
  local tag=$1 file=$2 context=$3; shift 3
  local args=()
  for a in "$@"; do args+=(--build-arg "$a"); done
  case $builder in
    docker) docker build -q -f "$file" -t "$tag" "${args[@]}" "$context" >/dev/null ;;
    podman) podman build -q -f "$file" -t "$tag" "${args[@]}" "$context" >/dev/null ;;
    buildah) buildah "${buildah_opts[@]}" bud -q --layers=false --pull=never -f "$file" -t "$tag" "${args[@]}" "$context" >/dev/null ;;
    *) echo "BUILDER must be docker, podman or buildah" >&2; exit 1 ;;
  esac
  local tar
  tar="$out/$(basename "${tag%:*}").tar"
  rm -f "$tar"
  case $builder in
    docker) docker save -o "$tar" "$tag" ;;
    podman) podman save -q --format docker-archive -o "$tar" "$tag" ;;
    buildah) buildah "${buildah_opts[@]}" push -q "$tag" "docker-archive:$tar:$tag" ;;
  esac
  printf '%-55s %s (%s bytes)\n' "$tag" "$tar" "$(stat -c %s "$tar")"
}

build "$prefix/sidekey-agent:$version" deploy/docker/agent.Dockerfile "$ctx"
build "$prefix/sidekey-injector:$version" deploy/docker/injector.Dockerfile "$ctx"
build "$prefix/sidekey-example-app:$version" deploy/docker/example-app.Dockerfile "$ctx"

if [[ -n ${PUSH_TO:-} ]]; then
  command -v skopeo >/dev/null || { echo "PUSH_TO needs skopeo (apt-get install skopeo)" >&2; exit 1; }
  for name in sidekey-agent sidekey-injector sidekey-example-app; do
    digest_file=$(mktemp)
    skopeo copy --quiet --dest-tls-verify="${PUSH_TLS_VERIFY:-true}" --digestfile "$digest_file" \
      "docker-archive:$out/$name.tar" "docker://$PUSH_TO/$name:$version"
    printf '%-55s pushed as %s@%s\n' "$name" "$PUSH_TO/$name" "$(cat "$digest_file")"
    rm -f "$digest_file"
  done
fi

if [[ $with_test == 1 ]]; then
  # Test images: the node's sandbox (pause), OpenBao, a busybox, and the
  # example app with a busybox to look inside its container.
  tctx=$out/test-context
  rm -rf "$tctx"
  mkdir -p "$tctx"
  musl-gcc -static -Os -o "$tctx/pause" tests/node/images/pause.c
  strip "$tctx/pause"
  [[ -f $cache/env.sh ]] || { echo "run make testenv first (the OpenBao image packs its bao binary)" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$cache/env.sh"
  cp "$SIDEKEY_BAO" "$tctx/bao"
  strip "$tctx/bao"
  cp "$(command -v busybox)" "$tctx/busybox"
  build sidekey.test/pause:1 tests/node/images/pause.Dockerfile "$tctx"
  build sidekey.test/openbao:1 tests/node/images/openbao.Dockerfile "$tctx"
  build sidekey.test/testbox:1 tests/node/images/testbox.Dockerfile "$tctx"
  build sidekey.test/example-app-debug:1 tests/node/images/example-app-debug.Dockerfile "$tctx" \
    "BASE=$prefix/sidekey-example-app:$version"
fi
