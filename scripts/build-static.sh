#!/usr/bin/env bash
# Builds the static musl binaries the images ship (agent, injector, example
# app) and prints their stripped sizes.
#   scripts/build-static.sh        -> target/x86_64-unknown-linux-musl/{agent,release}/
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target" \
  || { echo "cannot add the $target target: rustup target add $target" >&2; exit 1; }
command -v musl-gcc >/dev/null || { echo "musl-gcc not found: apt-get install musl-tools" >&2; exit 1; }
cargo build --locked --profile agent --target "$target" -p sidekey-agent
cargo build --locked --release --target "$target" -p sidekey-injector -p sidekey-example-app
for b in "target/$target/agent/sidekey-agent" "target/$target/release/sidekey-injector" "target/$target/release/sidekey-example-app"; do
  file "$b" | grep -q "static" || { echo "$b is not statically linked" >&2; exit 1; }
  printf '%-50s %s bytes\n' "$b" "$(stat -c %s "$b")"
done
