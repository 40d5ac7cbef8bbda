#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60).
# Exits non-zero as soon as a target finds a crash (the input is left in
# fuzz/artifacts/<target>/). Needs cargo-fuzz (`cargo install cargo-fuzz`);
# on a stable toolchain the sanitizer flags it passes need RUSTC_BOOTSTRAP=1,
# which this script sets.
set -euo pipefail

SECONDS_EACH="${1:-60}"
case "$SECONDS_EACH" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi

targets=$(cargo fuzz list)
cargo fuzz build
for t in $targets; do
    echo "== $t: ${SECONDS_EACH}s"
    mkdir -p "corpus/$t"
    if [ "$t" = policy_config ] && [ -z "$(ls -A corpus/$t)" ]; then
        cp ../policies/*.json "corpus/$t/"
    fi
    if [ "$t" = appliance_config ] && [ -z "$(ls -A corpus/$t)" ]; then
        cp ../examples/configs/*.json "corpus/$t/"
    fi
    if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1; then
        echo "== $t: crash; see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "== all targets ran ${SECONDS_EACH}s without a crash"
