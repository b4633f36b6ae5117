#!/usr/bin/env bash
# The whole media-core test suite: what `.ci/run` and the README's test command run.
# Needs only a Rust toolchain (cargo), gcc and python3; installs nothing system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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

step "all tests passed"
