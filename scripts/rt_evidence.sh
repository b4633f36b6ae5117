#!/usr/bin/env bash
# Real-time-safety evidence for the lane threads (issue #7):
#  1. strace: runs the soak (examples/soak.rs) for ~20 s and, during its steady state,
#     attaches `strace -c` to the lane threads only (threads named mc-lane*) for 10 s and
#     prints their system-call table. A lane thread in steady state should make no system
#     call but its absolute-deadline sleep (clock_nanosleep); clock_gettime goes through the
#     vDSO, which strace does not see.
#  2. RealtimeSanitizer: tests/rt_safety.rs built with RTSan armed (rtsan-standalone, the
#     runtime from Debian's libclang-rt-22-dev), every lane tick, push and pop of a
#     virtual-clock engine with every codec pair and the voice chain in a real-time scope.
#
# Usage: scripts/rt_evidence.sh [--soak-seconds S] [--strace-seconds T] [--skip-rtsan]
#                               [-- extra soak flags]
# Environment: CARGO_TARGET_DIR (default target), RTSAN_TARGET_DIR (default
# $CARGO_TARGET_DIR/rtsan: RTSAN_ENABLE changes how rtsan-standalone builds, so the armed
# build lives apart), RTSAN_LIB (path of libclang_rt.rtsan-x86_64.a; default: Debian's,
# unpacked under /opt/clangrt if missing). Needs root for apt-get when strace or the RTSan
# runtime is missing. Exit status: 0 if both parts gave clean evidence, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=20
STRACE_SECONDS=10
SKIP_RTSAN=0
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --soak-seconds) SOAK_SECONDS="$2"; shift 2 ;;
        --strace-seconds) STRACE_SECONDS="$2"; shift 2 ;;
        --skip-rtsan) SKIP_RTSAN=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-target}"
RT_TARGET="${RTSAN_TARGET_DIR:-$TARGET/rtsan}"
RTSAN_LIB="${RTSAN_LIB:-/opt/clangrt/usr/lib/llvm-22/lib/clang/22/lib/linux/libclang_rt.rtsan-x86_64.a}"
WORK="$(mktemp -d /tmp/rt_evidence.XXXXXX)"
STATUS=0

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------------------
step "1. strace of the lane threads during the soak's steady state"
if ! command -v strace >/dev/null 2>&1; then
    echo "strace missing: installing (apt-get)"
    apt-get install -y strace >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y strace >/dev/null 2>&1; }
fi
command -v strace >/dev/null 2>&1 || { echo "strace unavailable"; exit 1; }

CARGO_TARGET_DIR="$TARGET" cargo build --release --example soak 2>&1 | tail -n 2
BIN="$TARGET/release/examples/soak"
[ -x "$BIN" ] || { echo "soak binary missing at $BIN"; exit 1; }

"$BIN" --seconds "$SOAK_SECONDS" "${EXTRA[@]}" >"$WORK/soak.log" 2>&1 &
SOAK_PID=$!
# Wait for the steady state: setup done and the 2 s warm-up over.
for _ in $(seq 1 200); do
    grep -q "setup:" "$WORK/soak.log" 2>/dev/null && break
    sleep 0.1
done
sleep 3
TIDS=()
for t in /proc/"$SOAK_PID"/task/*; do
    comm="$(cat "$t/comm" 2>/dev/null || true)"
    case "$comm" in mc-lane*) TIDS+=("$(basename "$t")") ;; esac
done
if [ ${#TIDS[@]} -eq 0 ]; then
    echo "no mc-lane* thread found in process $SOAK_PID"; cat "$WORK/soak.log"; exit 1
fi
echo "soak pid $SOAK_PID; lane threads: $(for t in "${TIDS[@]}"; do printf '%s(%s) ' "$t" "$(cat /proc/"$SOAK_PID"/task/"$t"/comm)"; done)"
PARGS=()
for t in "${TIDS[@]}"; do PARGS+=(-p "$t"); done
# -c: count; SIGINT after the window detaches and writes the table.
timeout -s INT "$STRACE_SECONDS" strace -c -e trace=all -o "$WORK/strace.txt" "${PARGS[@]}" 2>"$WORK/strace.err"
wait "$SOAK_PID"
SOAK_RC=$?

echo "--- system calls of the lane threads over ${STRACE_SECONDS} s (strace -c -e trace=all) ---"
cat "$WORK/strace.txt"
# Syscall names from the table (rows between the dashed lines, last column), minus the
# expected sleep. restart_syscall is the kernel resuming the clock_nanosleep that strace's
# attach interrupted (one call per thread at attach), not a call the lane made.
OTHERS="$(awk '/^-+/{n++; next} n==1 && NF>=5 {print $NF}' "$WORK/strace.txt" \
    | grep -v -x -e clock_nanosleep -e restart_syscall || true)"
SLEEPS="$(awk '/^-+/{n++; next} n==1 && $NF=="clock_nanosleep" {print $4}' "$WORK/strace.txt")"
ATTACH="$(awk '/^-+/{n++; next} n==1 && $NF=="restart_syscall" {print $4}' "$WORK/strace.txt")"
if [ -z "$OTHERS" ] && [ -n "$SLEEPS" ]; then
    echo "EVIDENCE: in ${STRACE_SECONDS} s the lane thread(s) made ${SLEEPS} clock_nanosleep calls (~$((SLEEPS / STRACE_SECONDS)) per s = one per 10 ms tick per thread) and no other system call${ATTACH:+ (restart_syscall x$ATTACH: the sleep interrupted when strace attached)}"
else
    echo "NOT CLEAN: lane threads made other system calls: ${OTHERS:-none recorded}"
    [ -s "$WORK/strace.err" ] && cat "$WORK/strace.err"
    STATUS=1
fi
echo "--- soak result (exit $SOAK_RC; strace's ptrace stops may delay a tick while attached) ---"
sed -n '/--- soak result/,$p' "$WORK/soak.log"

# ---------------------------------------------------------------------------------------
if [ "$SKIP_RTSAN" = 1 ]; then
    step "2. RealtimeSanitizer: skipped (--skip-rtsan)"
    exit $STATUS
fi
step "2. RealtimeSanitizer run of tests/rt_safety.rs"
if [ ! -f "$RTSAN_LIB" ]; then
    echo "RTSan runtime missing: unpacking Debian's libclang-rt-22-dev into /opt/clangrt"
    (cd "$WORK" && apt-get download libclang-rt-22-dev >/dev/null 2>&1 \
        && dpkg -x libclang-rt-22-dev_*.deb /opt/clangrt) \
        || echo "could not fetch libclang-rt-22-dev"
fi
if [ ! -f "$RTSAN_LIB" ]; then
    echo "RTSan runtime not found at $RTSAN_LIB: part 2 not run"
    exit 1
fi
RTSAN_ENABLE=1 RTSAN_LIB_PATH="$RTSAN_LIB" CARGO_TARGET_DIR="$RT_TARGET" \
    cargo test --release --features rtsan --test rt_safety -- --test-threads=1 --nocapture \
    >"$WORK/rtsan.log" 2>&1
RT_RC=$?
grep -E "^test |rt_safety|test result|RealtimeSanitizer|SUMMARY|Intercepted|#[0-9]+ " "$WORK/rtsan.log" | head -n 60
if [ $RT_RC -eq 0 ]; then
    echo "RTSAN: clean (the canary proved the sanitizer armed: an allocation in scope aborted its child process)"
else
    echo "RTSAN: FAILED (exit $RT_RC); full log: $WORK/rtsan.log"
    STATUS=1
fi
exit $STATUS
