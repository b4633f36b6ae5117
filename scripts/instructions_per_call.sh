#!/bin/bash
# Instructions the engine spends per bridged call per 20 ms, counted by valgrind's callgrind
# (deterministic: the same figure on a busy or an idle machine, unlike timings).
#
#   scripts/instructions_per_call.sh SCENARIO [CALLS] [ITERATIONS]
#   CACHE=1 scripts/instructions_per_call.sh ...   # also cache lines from memory
#
# Runs the sessions_per_core harness on the virtual clock for a fixed amount of work
# (0.4 s warm-up = 20 iterations, then ITERATIONS x 20 ms) and divides the inclusive
# instructions of MediaEngine::step by (ITERATIONS + 20) x CALLS. Call setup and the
# traffic generator are outside step. Needs valgrind and a release build of the example.
#
# With CACHE=1 callgrind also simulates a cache the size of one core's L2 here (2 MiB,
# 16-way, 64-byte lines) as its last level and reports the lines step reads and writes
# from beyond it per call per 20 ms: the memory traffic that makes a lane with thousands
# of sessions slower per call than one whose sessions fit in cache. Deterministic too.
set -euo pipefail
SC=${1:?scenario, e.g. relay-pcmu}
N=${2:-1000}
IT=${3:-60}
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release/examples/sessions_per_core
cargo build --release --example sessions_per_core >&2
OUT=$(mktemp /tmp/callgrind.XXXXXX)
SIM=()
if [ "${CACHE:-0}" = 1 ]; then SIM=(--cache-sim=yes --LL=2097152,16,64); fi
valgrind --tool=callgrind "${SIM[@]}" --callgrind-out-file="$OUT" "$BIN" --scenario "$SC" --mode virtual \
    --start "$N" --max "$N" --warmup 0.4 --iterations "$IT" >/dev/null 2>&1
STEP=$(callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | grep "MediaEngine::step " | head -1 \
    | awk '{gsub(",","",$1); print $1}')
python3 -c "print('$SC, $N calls: %d instructions in step, %.0f per call per 20 ms' % ($STEP, $STEP / ($IT + 20) / $N))"
if [ "${CACHE:-0}" = 1 ]; then
    MISS=$(callgrind_annotate --inclusive=yes --show=DLmr,DLmw "$OUT" 2>/dev/null \
        | grep "MediaEngine::step " | head -1 | awk '{gsub(",","",$1); gsub(",","",$3); print $1, $3}')
    python3 -c "r, w = map(int, '$MISS'.split()); d = ($IT + 20) * $N; print('$SC, $N calls: lines from beyond a 2 MiB L2 per call per 20 ms: %.1f read + %.1f written = %.1f' % (r / d, w / d, (r + w) / d))"
fi
echo "profile: $OUT (callgrind_annotate $OUT)" >&2
