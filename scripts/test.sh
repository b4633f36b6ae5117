#!/usr/bin/env bash
# The whole media-core test suite: what `.ci/run` and the README's test command run.
# Needs only a Rust toolchain (cargo), gcc and python3; installs nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Disk: a fresh run writes about 3.6 GB (debug and release builds 2.6, loom 0.25, fuzz 0.8;
# measured at 099988e). Incremental compilation adds gigabytes of its own state (3.3 GB in a
# long-used target here) and buys nothing on a fresh checkout, so it is off unless the
# caller sets CARGO_INCREMENTAL. A run that fails with "No space left on device" is the
# machine's disk, not the code: the free space is printed first to tell the two apart.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step "disk"
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "free: $((free_kb / 1024)) MiB where the build goes ($(pwd))"
if [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
    echo "WARNING: under 6 GiB free; the build may run out of disk" >&2
fi

# libopus (through the `opus` crate) builds with cmake; install one without root if missing.
step "cmake for libopus"
CMAKE="${CMAKE:-$(scripts/ensure-cmake.sh)}"
export CMAKE
echo "using $CMAKE"

if cargo fmt --version >/dev/null 2>&1; then
    step "format check"
    cargo fmt --all -- --check
else
    echo "rustfmt not installed; skipping format check"
fi

if cargo clippy --version >/dev/null 2>&1; then
    step "clippy (warnings are errors; locks banned in real-time code by clippy.toml)"
    cargo clippy --workspace --all-targets -- -D warnings
else
    echo "clippy not installed; skipping lint"
fi

step "unit, integration and doc tests (debug)"
cargo test --workspace

step "zero-allocation proof and engine tests (release)"
cargo test --release --test zero_alloc --test engine

step "loom models of the atomic protocols (bounded preemptions)"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
    cargo test -p loom-tests --release --target-dir target/loom

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p media-core

# Smoke versions of the long-running checks (issue 7). Each installs what it needs (cargo-fuzz
# from crates.io, ffmpeg from Debian when root, pesq from PyPI) or says SKIP and why;
# SKIP_SMOKE=1 leaves them all out (a quick local run).
if [ "${SKIP_SMOKE:-0}" != 1 ]; then
    step "soak, 90 s (70% load, churn, malformed packets, ring-full bursts, updates)"
    # A shared CI VM can wake a lane late through no fault of the engine (vCPU steal): up to
    # 3 such stalls pass here (each a late tick and the ticks catching up after it, at most
    # 10 in a row), each reported; the 10-minute soak allows none. 90 s, not 60: resident
    # memory is judged over the second half, and with sessions' 120 ms decode buffers the
    # allocator settles in 20-50 s (RSS then flat through 120 s runs); on 60 s runs its
    # last steps fell inside the judged half (416-744 KiB/min against the 512 limit, which
    # a 192-byte leak per churned session would pass). The limit is unchanged.
    cargo run --quiet --release --example soak -- --seconds 90 --allow-stalls 3

    step "fuzz smoke: every target for 20 s"
    scripts/fuzz.sh smoke

    step "interop with ffmpeg over loopback (PCMU, PCMA, G.722, Opus; RFC 4733; garbage)"
    scripts/interop.sh

    step "voice processing PESQ through the engine"
    python3 scripts/voice_pesq.py

    step "SIP calls between two real phones (baresip) through examples/sip_gateway.rs"
    # opus<->pcmu and pcmu<->g722 with DTMF, and a re-INVITE codec change; each script run
    # installs baresip-core from Debian when root, else prints SKIP.
    cargo test --release --test sip_e2e -- --ignored --test-threads=1
fi

step "all tests passed"
