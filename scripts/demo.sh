#!/usr/bin/env bash
# The main demo: real lane threads, gateway calls PCMU <-> PCMA, a tone through the engine,
# counters printed. Installs cmake for libopus first if this machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE="${CMAKE:-$(scripts/ensure-cmake.sh)}"
exec cargo run --release --example basic_session -- "$@"
