#!/usr/bin/env bash
# Prints the path of a cmake binary, installing one without root if none is on PATH.
# The `opus` crate builds libopus from source through the `cmake` crate, which takes its
# binary from $CMAKE. A fresh machine of ours has no cmake; pip ships a static one.
# Also links it at .tools/bin/cmake, which .cargo/config.toml points CMAKE at, so plain
# cargo commands work once this has run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
link="$root/.tools/bin/cmake"
if [ -x "$link" ] && "$link" --version >/dev/null 2>&1; then
    echo "$link"
    exit 0
fi
mkdir -p "$root/.tools/bin"
if command -v cmake >/dev/null 2>&1; then
    ln -sf "$(command -v cmake)" "$link"
else
    if [ ! -x "$root/.tools/cmake/cmake/data/bin/cmake" ]; then
        python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools/cmake" "cmake==4.4.5" >&2 \
            || python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools/cmake" cmake >&2
    fi
    # The ELF binary, not the Python shim in .tools/cmake/bin.
    ln -sf "$root/.tools/cmake/cmake/data/bin/cmake" "$link"
fi
"$link" --version >/dev/null
echo "$link"
