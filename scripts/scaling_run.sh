#!/usr/bin/env bash
# Density measurements for PERF.md on a quiet many-core machine, from prebuilt binaries:
#   scripts/scaling_run.sh BIN_DIR OUT_DIR
# BIN_DIR holds release builds of examples/sessions_per_core and examples/tick_profile
# (`cargo build --release --example sessions_per_core --example tick_profile`). Writes
# OUT_DIR/log.txt (human output) and OUT_DIR/results.jsonl (one JSON object per run).
# Lanes on cores 2.., the traffic generator on core 1, core 0 left to the system.
set -u
B=${1:?binary dir}; OUT=${2:?out dir}
LOG=$OUT/log.txt; J=$OUT/results.jsonl
: > "$LOG"; : > "$J"
say() { echo "=== $*" | tee -a "$LOG"; }
spc() { # label, args...
  local label=$1; shift
  say "$label: sessions_per_core $*"
  local t0=$SECONDS
  "$B/sessions_per_core" "$@" --json 2>>"$LOG" | python3 -c "import json,sys; d=json.load(sys.stdin); d['label']='$label'; print(json.dumps(d))" >> "$J"
  echo "($((SECONDS - t0)) s)" >> "$LOG"
}
say "machine"; { nproc; lscpu | grep -E "Model name|^CPU\(s\)|MHz|L1d|L2|L3"; uname -r; } >> "$LOG" 2>&1
say "tick_profile (virtual clock, one pinned core)"
for s in relay-pcmu pcmu-pcma; do taskset -c 2 "$B/tick_profile" 5000 $s 200 >> "$LOG" 2>&1; done
# Virtual: lane cost per scenario (one count each, sized to a few ms of lane time).
spc v-relay    --mode virtual --scenario relay-pcmu --start 5000 --max 5000 --seconds 3 --cores 2
spc v-pcmu-pcma --mode virtual --scenario pcmu-pcma --start 5000 --max 5000 --seconds 3 --cores 2
spc v-relay-split --mode virtual --topology split --scenario relay-pcmu --start 5000 --max 5000 --seconds 3 --cores 2
spc v-g722     --mode virtual --scenario g722-pcmu --start 500 --max 500 --seconds 3 --cores 2
spc v-opus-pcmu --mode virtual --scenario opus-pcmu --start 100 --max 100 --seconds 3 --cores 2
spc v-opus-opus --mode virtual --scenario opus-opus --start 5000 --max 5000 --seconds 3 --cores 2
spc v-voice    --mode virtual --scenario voice-pcmu --start 1000 --max 1000 --seconds 3 --cores 2
spc v-aec      --mode virtual --scenario aec-pcmu --start 200 --max 200 --seconds 3 --cores 2
# Paced ramps (real-time lanes, SCHED_FIFO, generator on its own core).
spc p-relay-1  --mode paced --fifo --scenario relay-pcmu --start 2000 --seconds 3 --confirm 0 --cores 2 --gen-core 1
spc p-pcma-1   --mode paced --fifo --scenario pcmu-pcma --start 2000 --seconds 3 --confirm 0 --cores 2 --gen-core 1
spc p-relay-2  --mode paced --fifo --lanes 2 --scenario relay-pcmu --start 4000 --seconds 3 --confirm 0 --cores 2,3 --gen-core 1
spc p-relay-split --mode paced --fifo --topology split --scenario relay-pcmu --start 1000 --seconds 3 --confirm 0 --cores 2-5 --gen-core 1
# 60 s confirmation at 90% of what each 1-lane ramp found.
for pair in "p-relay-1 relay-pcmu" "p-pcma-1 pcmu-pcma"; do
  set -- $pair
  n=$(python3 -c "import json; r=[json.loads(l) for l in open('$J') if json.loads(l).get('label')=='$1']; print(int(r[0]['calls']*0.9) if r and r[0].get('calls') else 0)")
  [ "$n" -gt 0 ] && spc "c60-$2" --mode paced --fifo --scenario $2 --start $n --max $n --seconds 60 --confirm 0 --cores 2 --gen-core 1
done
say "done"
