#!/bin/sh
# Every performance goal measured in one sitting, for BENCHMARKS.md's goal
# table: the raw AEAD ceilings and the stage (criterion), the SAD at 1M SAs
# (criterion), allocations per packet, `bitsgw bench` (run to completion,
# workers, receive queues over 4 and 64 SAs) and `make bench-e2e`. About
# 20 minutes on two cores; run it on a quiet machine, as root (bench-e2e
# uses network namespaces). Results go to $OUT (default target/bench-goals),
# the table to standard output (scripts/bench_goals.py).
set -eu
OUT=${OUT:-target/bench-goals}
CARGO=${CARGO:-cargo}
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
load() { cut -d' ' -f1-3 /proc/loadavg; }
./scripts/setup-test-deps.sh --bench
echo "load before: $(load)" > "$OUT/load.txt"
$CARGO build --release --bin bitsgw
BITSGW="$CARGO_TARGET_DIR/release/bitsgw"
crit="--warm-up-time 1 --measurement-time 3"
# shellcheck disable=SC2086
$CARGO bench --bench esp -- $crit 'aead_raw/.*/(64|1400)$|esp_(encap|decap)/aes-gcm-128/(64|1400)$'
# shellcheck disable=SC2086
$CARGO bench --bench lookup -- $crit 'sad/by_spi(_active)?/'
$CARGO bench --bench alloc > "$OUT/alloc.txt"
gcm="--transforms aes-gcm-128 --modes tunnel --json"
# shellcheck disable=SC2086
"$BITSGW" bench $gcm --sizes 64,1400,imix --direction encrypt --workers rtc,1 > "$OUT/rtc.json"
for flows in 4 64; do
    # shellcheck disable=SC2086
    "$BITSGW" bench $gcm --sizes 64,1400 --direction encrypt,decrypt --workers 1,2,q1,q2 \
        --flows "$flows" > "$OUT/queues-$flows.json"
done
BITSGW_E2E_RUNS=${BITSGW_E2E_RUNS:-3} $CARGO test --release --test bench_e2e -- --ignored --nocapture --test-threads=1 \
    > "$OUT/e2e.txt"
echo "load after: $(load)" >> "$OUT/load.txt"
python3 "$(dirname "$0")/bench_goals.py" "$OUT" "$CARGO_TARGET_DIR/criterion"
