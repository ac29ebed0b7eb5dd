#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (libfuzzer-sys,
# built with the C++ compiler) and LLVM's SanitizerCoverage, switched on
# with stable rustc codegen flags. See docs/testing.md#fuzzing.
#
#   scripts/fuzz.sh build                 build every target
#   scripts/fuzz.sh run TARGET SECONDS    fuzz TARGET, growing target/fuzz/corpus/TARGET
#   scripts/fuzz.sh merge TARGET [BYTES]  minimize into the committed fuzz/corpus/TARGET,
#                                         from inputs of at most BYTES (default 65536)
#   scripts/fuzz.sh list                  the targets
#
# Targets: admission annotations reference yaml agent_config migrate gotemplate vault_k8s.
# A crash, a hang (-timeout) or an input that makes the Rust heap pass
# 64 MiB (fuzz/src/alloc.rs) is written to target/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(admission annotations reference yaml agent_config migrate gotemplate vault_k8s)
HOST=$(rustc -vV | sed -n 's/^host: //p')
OUT=target/fuzz
BIN="$OUT/$HOST/fuzz"

build() {
    # --target keeps RUSTFLAGS off build scripts and proc macros.
    RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cforce-frame-pointers=yes" \
        cargo build --locked --profile fuzz --target "$HOST" --target-dir "$OUT" \
        -p sidekey-fuzz --features libfuzzer --bins
}

known() {
    local t
    for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && return 0; done
    echo "fuzz.sh: unknown target $1 (targets: ${TARGETS[*]})" >&2
    exit 2
}

case "${1:-}" in
build) build ;;
list) printf '%s\n' "${TARGETS[@]}" ;;
run)
    [[ $# -eq 3 ]] || { echo "usage: scripts/fuzz.sh run TARGET SECONDS" >&2; exit 2; }
    known "$2"
    mkdir -p "$OUT/corpus/$2" "$OUT/artifacts/$2"
    exec "$BIN/$2" "$OUT/corpus/$2" "fuzz/corpus/$2" -dict="fuzz/dict/$2.dict" \
        -max_len=65536 -len_control=200 -timeout=10 -rss_limit_mb=2048 \
        -max_total_time="$3" -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$2/"
    ;;
merge)
    [[ $# -eq 2 || $# -eq 3 ]] || { echo "usage: scripts/fuzz.sh merge TARGET [BYTES]" >&2; exit 2; }
    known "$2"
    # The admission corpus is merged from inputs up to 8 KB (scripts/fuzz.sh
    # merge admission 8192): the full one is 22 MB, too much to commit.
    max=${3:-65536}
    tmp=$(mktemp -d) pool=$(mktemp -d)
    mkdir -p "$OUT/corpus/$2"
    # Inputs are named by their hash: the same name is the same input.
    for from in "fuzz/corpus/$2" "$OUT/corpus/$2"; do
        find "$from" -type f -size -"$((max + 1))"c -exec cp -f -t "$pool" {} +
    done
    "$BIN/$2" -merge=1 -max_len="$max" -timeout=10 "$tmp" "$pool"
    rm -rf "fuzz/corpus/$2" "$pool" && mv "$tmp" "fuzz/corpus/$2" && chmod 755 "fuzz/corpus/$2"
    echo "fuzz/corpus/$2: $(find "fuzz/corpus/$2" -type f | wc -l) inputs, $(cat "fuzz/corpus/$2"/* | wc -c) bytes"
    ;;
*)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
