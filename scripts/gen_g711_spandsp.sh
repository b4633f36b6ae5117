#!/bin/sh
# Generate the spandsp G.711 reference tables for tests/g711_bitexact.rs.
#
#     scripts/gen_g711_spandsp.sh            # writes tests/data/g711/spandsp_*.bin
#     scripts/gen_g711_spandsp.sh --check    # regenerates into a temp dir and compares
#
# Needs a C compiler and spandsp's headers and library: on Debian/Ubuntu the
# package libspandsp-dev, which this script installs with apt-get if missing
# (as root, or through sudo). See scripts/gen_g711_spandsp.c for the outputs.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
out="$root/tests/data/g711"
check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! dpkg-query -W -f='${Status}' libspandsp-dev 2>/dev/null | grep -q 'install ok installed'; then
    if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
    echo "installing libspandsp-dev" >&2
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y libspandsp-dev
fi

cc=${CC:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

$cc -O2 -Wall -Wextra -o "$work/gen_g711_spandsp" "$root/scripts/gen_g711_spandsp.c" -lspandsp

if [ "$check" -eq 1 ]; then
    mkdir "$work/out"
    "$work/gen_g711_spandsp" "$work/out" >/dev/null
    status=0
    for f in spandsp_ulaw_encode.bin spandsp_alaw_encode.bin spandsp_ulaw_decode.bin spandsp_alaw_decode.bin; do
        if cmp -s "$work/out/$f" "$out/$f"; then
            echo "ok   $f"
        else
            echo "DIFF $f"
            status=1
        fi
    done
else
    mkdir -p "$out"
    "$work/gen_g711_spandsp" "$out"
    (cd "$out" && sha256sum spandsp_ulaw_encode.bin spandsp_alaw_encode.bin spandsp_ulaw_decode.bin spandsp_alaw_decode.bin)
    status=0
fi
echo "spandsp $(dpkg-query -W -f='${Version}' libspandsp-dev 2>/dev/null || echo '(version unknown)'), $($cc --version | head -n 1)"
exit $status
