#!/usr/bin/env bash
# CycloneDX SBOMs for the two shipped binaries (cargo-cyclonedx from
# crates.io, installed into the cache on first use).
#   scripts/sbom.sh  -> target/sbom/sidekey-agent.cdx.json, sidekey-injector.cdx.json
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${SIDEKEY_CACHE:-$HOME/.cache/sidekey}
version=0.5.7
tool="$cache/cargo-cyclonedx-$version/bin/cargo-cyclonedx"
if [[ ! -x $tool ]]; then
  cargo install --locked --quiet --version "$version" --root "$cache/cargo-cyclonedx-$version" cargo-cyclonedx
fi
mkdir -p target/sbom
# cargo-cyclonedx writes <package>.cdx.json beside every workspace member's
# manifest: keep the two shipped binaries' SBOMs, remove the rest.
"$tool" cyclonedx --manifest-path Cargo.toml --format json --spec-version 1.5 >/dev/null
mv sidecar/sidekey-agent.cdx.json injector/sidekey-injector.cdx.json target/sbom/
find . -name '*.cdx.json' -not -path './target/*' -delete
ls target/sbom/*.cdx.json
