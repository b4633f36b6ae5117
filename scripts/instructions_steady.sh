#!/bin/bash
# Steady-state instructions per stream frame (one packet in, one frame out, one direction of
# one call), counted by valgrind's callgrind, with the functions that spend them.
#
#   scripts/instructions_steady.sh SCENARIO [CALLS] [WARMUP_SECONDS]
#
# Runs the sessions_per_core harness on the virtual clock twice, with 20 and with 60
# measured 20 ms iterations after the same warm-up (default 8 s of media: shorter ones count
# start-up work such as the jitter buffers' first time-scale decisions), collecting only
# inside MediaEngine::step, and divides the difference by 40 iterations x 2 streams x CALLS:
# the start-up and the warm-up cancel out. Deterministic (the same figure on a busy or an
# idle machine). Prints the total, then the functions above 5 instructions per stream frame
# (self cost; inlined code counts in its caller). Needs valgrind and a release build of the
# example (built here).
set -euo pipefail
SC=${1:?scenario, e.g. relay-pcmu}
N=${2:-1000}
W=${3:-8}
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release/examples/sessions_per_core
cargo build --release --example sessions_per_core >&2
DIR=$(mktemp -d /tmp/steady.XXXXXX)
for IT in 20 60; do
    valgrind --tool=callgrind --toggle-collect='*MediaEngine::step*' \
        --callgrind-out-file="$DIR/cg.$IT" "$BIN" --scenario "$SC" --mode virtual \
        --start "$N" --max "$N" --warmup "$W" --iterations "$IT" >/dev/null 2>&1 &
done
wait
python3 - "$DIR" "$SC" "$N" <<'PY'
import re, subprocess, sys
folder, scenario, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])

def profile(iterations):
    out = subprocess.run(
        ["callgrind_annotate", "--show-percs=no", "--inclusive=no", "--threshold=100",
         f"{folder}/cg.{iterations}"], capture_output=True, text=True).stdout
    total, per_function = 0, {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(?.*?PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+)\s+(\S.*)$", line)
        if m:
            name = re.sub(r"\s*\[.*\]$", "", m.group(2))
            per_function[name] = per_function.get(name, 0) + int(m.group(1).replace(",", ""))
    return total, per_function

(t20, f20), (t60, f60) = profile(20), profile(60)
frames = 40 * 2 * calls
print(f"{scenario}, {calls} calls: {(t60 - t20) / frames:.0f} instructions per stream frame")
rows = sorted(((f60.get(k, 0) - f20.get(k, 0)) / frames, k) for k in set(f20) | set(f60))
for cost, name in reversed(rows):
    if cost > 5:
        print(f"{cost:9.0f}  {name[:140]}")
PY
echo "profiles: $DIR" >&2
