#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60).
# Exits non-zero as soon as a target finds a crash (the input is left in
# fuzz/artifacts/<target>/). Needs cargo-fuzz (`cargo install cargo-fuzz`,
# which scripts/setup-test-deps.sh does); on a stable toolchain the
# sanitizer flags it passes need RUSTC_BOOTSTRAP=1, which this script sets.
#
# FUZZ_SANITIZER: address (the default, for `make fuzz`) or none (the
# bounded runs of `make test`: coverage-guided all the same, built and run
# faster; the targets' own assertions and Rust's checks still catch what
# the safe code under them gets wrong).
#
# Each target starts from its corpus in fuzz/corpus/<target> (kept between
# runs, not committed) plus the seeds committed in fuzz/seeds/<target> and,
# for the configuration parsers, the shipped policies and configurations.
set -euo pipefail

SECONDS_EACH="${1:-60}"
case "$SECONDS_EACH" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
SANITIZER="${FUZZ_SANITIZER:-address}"

cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz (or scripts/setup-test-deps.sh)" >&2
    exit 2
fi

targets=$(cargo fuzz list)
cargo fuzz build -s "$SANITIZER"
for t in $targets; do
    echo "== $t: ${SECONDS_EACH}s"
    mkdir -p "corpus/$t"
    if [ -d "seeds/$t" ]; then
        cp -n seeds/"$t"/* "corpus/$t/"
    fi
    if [ "$t" = policy_config ]; then
        cp -n ../policies/*.json "corpus/$t/"
    fi
    if [ "$t" = appliance_config ]; then
        cp -n ../examples/configs/*.json "corpus/$t/"
    fi
    # -timeout: one input running this long is a hang, reported as a crash;
    # -rss_limit_mb: an input that makes the target take this much memory
    # is one an attacker could use too.
    if ! cargo fuzz run -s "$SANITIZER" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "== $t: crash; see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "== all targets ran ${SECONDS_EACH}s without a crash"
