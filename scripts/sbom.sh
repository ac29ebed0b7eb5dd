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
for crate in sidecar injector; do
  "$tool" cyclonedx --manifest-path "$crate/Cargo.toml" --format json --spec-version 1.5 >/dev/null
  name=$(awk -F'"' '/^name = / {print $2; exit}' "$crate/Cargo.toml")
  mv "$crate/$name.cdx.json" "target/sbom/$name.cdx.json"
  echo "target/sbom/$name.cdx.json"
done
