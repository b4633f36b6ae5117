#!/usr/bin/env bash
# Fuzzing media-core with cargo fuzz (libFuzzer); the targets are in fuzz/ (see fuzz/src/).
#
#   scripts/fuzz.sh smoke               every target for 20 s (CI smoke test)
#   scripts/fuzz.sh long SECONDS        every target for SECONDS
#   scripts/fuzz.sh long SECONDS T...   only targets T...
#
# Prints, per target, the executions (libFuzzer's stat::number_of_executed_units) and
# whether anything was found (the crashing input lands in fuzz/artifacts/TARGET/); exits
# non-zero if anything was. Corpora grow in fuzz/corpus/TARGET (git-ignored), seeded from
# fuzz/seeds/TARGET. FUZZ_SKIP_BUILD=1 reuses the last build. Installs cargo-fuzz
# (`cargo install cargo-fuzz --locked`, about 4 minutes) if it is missing. Stable Rust is
# enough: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its sanitizer flags. Targets build
# optimised with AddressSanitizer; FUZZ_DEBUG_ASSERTIONS=1 adds debug assertions and
# integer overflow checks (what the debug test suite runs with; a separate full rebuild).
# Run long sessions under `nice -n 19` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

usage() {
    echo "usage: $0 smoke | long SECONDS [TARGET...]" >&2
    exit 2
}

mode="${1:-}"
case "$mode" in
smoke)
    seconds=20
    shift
    ;;
long)
    [ $# -ge 2 ] || usage
    seconds="$2"
    shift 2
    ;;
*) usage ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || usage

ALL_TARGETS=(ingress jitter negotiation rfc4733 g722_decode opus_decode)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi

# libopus (through the `opus` crate) builds with cmake.
CMAKE="${CMAKE:-$(scripts/ensure-cmake.sh)}"
export CMAKE
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

flags=(--release)
if [ "${FUZZ_DEBUG_ASSERTIONS:-0}" = 1 ]; then
    flags+=(--debug-assertions)
fi

cd "$root/fuzz"
# The fuzz crate's own target directory (sanitizer builds never mix with normal ones), also
# when the caller sets CARGO_TARGET_DIR for the main workspace: the binaries are run from it.
export CARGO_TARGET_DIR="$root/fuzz/target"
# One build, then the binaries run directly: `cargo fuzz run` would rebuild before every
# target whenever src/ changed meanwhile (minutes each, and targets would test different
# code). Equivalent by hand: cargo fuzz run --release TARGET -- -max_total_time=S ...
if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
    echo "==> building fuzz targets"
    cargo fuzz build "${flags[@]}"
fi
bindir="$root/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

logdir="$root/fuzz/target/logs"
mkdir -p "$logdir"
found=0
summary=()
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    mkdir -p "$corpus" "$root/fuzz/artifacts/$t"
    dirs=("$corpus")
    [ -d "$root/fuzz/seeds/$t" ] && dirs+=("$root/fuzz/seeds/$t")
    extra=()
    [ -f "$root/fuzz/$t.dict" ] && extra+=("-dict=$root/fuzz/$t.dict")
    log="$logdir/$t.log"
    echo "==> $t for ${seconds}s (log: $log)"
    rc=0
    # -timeout: an input running 10 s is a hang, reported like a crash.
    "$bindir/$t" "${dirs[@]}" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
        -artifact_prefix="$root/fuzz/artifacts/$t/" "${extra[@]}" >"$log" 2>&1 || rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
    # crash-, timeout-, oom- and leak- units are findings; slow-unit- ones (over 10 s, often
    # just a loaded machine) are not.
    artifact="$(grep -o "Test unit written to [^ ]*" "$log" | sed 's/Test unit written to //' \
        | grep -v '/slow-unit-' | tail -1 || true)"
    if [ "$rc" -ne 0 ] || [ -n "$artifact" ]; then
        found=1
        what="$(grep -m1 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|deadly signal" "$log" || true)"
        line="$(printf '%-12s execs=%-10s FOUND (rc=%s) %s %s' "$t" "${execs:-?}" "$rc" "${artifact:-}" "$what")"
    else
        line="$(printf '%-12s execs=%-10s nothing found' "$t" "${execs:-?}")"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "==> summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$found" -ne 0 ]; then
    echo "findings: reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET ARTIFACT"
    exit 1
fi
