#!/bin/bash
# Instructions the engine spends per bridged call per 20 ms, counted by valgrind's callgrind
# (deterministic: the same figure on a busy or an idle machine, unlike timings).
#
#   scripts/instructions_per_call.sh SCENARIO [CALLS] [ITERATIONS]
#
# Runs the sessions_per_core harness on the virtual clock for a fixed amount of work
# (0.4 s warm-up = 20 iterations, then ITERATIONS x 20 ms) and divides the inclusive
# instructions of MediaEngine::step by (ITERATIONS + 20) x CALLS. Call setup and the
# traffic generator are outside step. Needs valgrind and a release build of the example.
set -euo pipefail
SC=${1:?scenario, e.g. relay-pcmu}
N=${2:-1000}
IT=${3:-60}
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release/examples/sessions_per_core
cargo build --release --example sessions_per_core >&2
OUT=$(mktemp /tmp/callgrind.XXXXXX)
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" --scenario "$SC" --mode virtual \
    --start "$N" --max "$N" --warmup 0.4 --iterations "$IT" >/dev/null 2>&1
STEP=$(callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | grep "MediaEngine::step " | head -1 \
    | awk '{gsub(",","",$1); print $1}')
python3 -c "print('$SC, $N calls: %d instructions in step, %.0f per call per 20 ms' % ($STEP, $STEP / ($IT + 20) / $N))"
echo "profile: $OUT (callgrind_annotate $OUT)" >&2
