#!/bin/sh
# Generate the G.722 reference vectors for tests/g722_vectors.rs, or time
# spandsp's G.722 for comparison with `cargo bench --bench codecs -- g722`.
#
#     scripts/gen_g722_vectors.sh                 # spandsp files in tests/data/g722/
#     scripts/gen_g722_vectors.sh --stl STL_DIR   # ... and the STL files
#     scripts/gen_g722_vectors.sh --check [--stl STL_DIR]
#                                                 # regenerate in a temp dir, compare
#     scripts/gen_g722_vectors.sh --bench [SECONDS]
#                                                 # spandsp µs per 20 ms frame here
#
# spandsp: needs a C compiler and spandsp's headers and library, on Debian/Ubuntu
# the package libspandsp-dev, which this script installs with apt-get if missing
# (as root, or through sudo). The speech input is the first 4 s of
# $G722_SPEECH_WAV (default /work/shared/audio/speech1_16000.wav, 16 kHz mono);
# --check and --bench use the committed tests/data/g722/speech.wav, so they need
# nothing outside the repository.
#
# STL: STL_DIR is a checkout of https://github.com/openitu/STL (the ITU-T G.191
# Software Tool Library; the files were made at commit
# 139db49783b5096abf40d4f271d74fda9d591d20). From it come square.stl.g722 and
# stl_overrides.txt, the cases where spandsp 0.0.6 and the ITU reference differ
# (see tests/data/g722/README.txt). Without --stl those two files are left as
# they are (and --check skips them).
#
# See scripts/gen_g722_spandsp.c for the signals and the outputs.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
out="$root/tests/data/g722"
mode=generate
seconds=10
stl=
while [ $# -gt 0 ]; do
    case "$1" in
        --check) mode=check ;;
        --bench)
            mode=bench
            case "${2:-}" in [0-9]*) seconds=$2; shift ;; esac ;;
        --stl)
            [ $# -ge 2 ] || { echo "--stl needs a directory" >&2; exit 2; }
            stl=$(CDPATH= cd -- "$2" && pwd)
            shift ;;
        *) echo "usage: $0 [--check] [--stl STL_DIR] | --bench [SECONDS]" >&2; exit 2 ;;
    esac
    shift
done

if ! dpkg-query -W -f='${Status}' libspandsp-dev 2>/dev/null | grep -q 'install ok installed'; then
    if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
    echo "installing libspandsp-dev" >&2
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y libspandsp-dev
fi

cc=${CC:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

$cc -O2 -Wall -Wextra -o "$work/gen_g722_spandsp" "$root/scripts/gen_g722_spandsp.c" -lspandsp -lm

if [ "$mode" = bench ]; then
    "$work/gen_g722_spandsp" bench "$out/speech.wav" "$seconds"
    echo "spandsp $(dpkg-query -W -f='${Version}' libspandsp-dev 2>/dev/null || echo '(version unknown)'), $($cc --version | head -n 1)"
    exit 0
fi

inputs="speech sweep noise square silence"
spandsp_files="speech.wav sweep.pcm noise.pcm square.pcm silence.pcm random.g722"
for name in $inputs; do
    spandsp_files="$spandsp_files $name.g722"
done
for name in $inputs random; do
    spandsp_files="$spandsp_files $name.dec64.pcm $name.dec56.pcm $name.dec48.pcm"
done
stl_files="square.stl.g722 stl_overrides.txt"

# Writes the STL files into $1, from the spandsp files in $2.
stl_vectors() {
    dest=$1
    src=$2
    s="$stl/src"
    $cc -O2 -w -DG722_STL -I"$s/basop" -I"$s/g722" -o "$work/gen_g722_stl" \
        "$root/scripts/gen_g722_spandsp.c" "$s/g722/funcg722.c" "$s/g722/g722.c" \
        "$s/basop/basop32.c" "$s/basop/control.c" "$s/basop/count.c" "$s/basop/enh1632.c" -lm
    mkdir -p "$work/stl"
    # The encoders: the STL's octets must equal spandsp's except for the
    # full-scale square wave, where the STL's 15-bit QMF limit acts.
    for name in $inputs; do
        in="$src/$name.pcm"
        [ "$name" = speech ] && in="$src/speech.wav"
        "$work/gen_g722_stl" encode "$in" "$work/stl/$name.g722"
        if [ "$name" = square ]; then
            cp "$work/stl/square.g722" "$dest/square.stl.g722"
        elif ! cmp -s "$work/stl/$name.g722" "$src/$name.g722"; then
            echo "STL and spandsp encodings of $name differ: not expected" >&2
            return 1
        fi
    done
    # The decoders, on spandsp's octets: list every sample where they differ.
    {
        echo "# Samples where the ITU-T G.191 STL G.722 decoder (openitu/STL"
        echo "# 139db49783b5096abf40d4f271d74fda9d591d20) differs from spandsp 0.0.6"
        echo "# on the same octets: FILE INDEX STL_VALUE SPANDSP_VALUE."
        echo "# Made by scripts/gen_g722_vectors.sh --stl."
        for name in $inputs random; do
            for rate in 64 56 48; do
                "$work/gen_g722_stl" decode "$rate" "$src/$name.g722" "$work/stl/$name.dec$rate.pcm"
                "$work/gen_g722_stl" diff "$name.dec$rate.pcm" "$src/$name.dec$rate.pcm" \
                    "$work/stl/$name.dec$rate.pcm"
            done
        done
    } >"$dest/stl_overrides.txt"
}

status=0
case $mode in
    generate)
        mkdir -p "$out"
        "$work/gen_g722_spandsp" vectors "${G722_SPEECH_WAV:-/work/shared/audio/speech1_16000.wav}" "$out"
        files=$spandsp_files
        if [ -n "$stl" ]; then
            stl_vectors "$out" "$out"
            files="$files $stl_files"
        else
            echo "no --stl: $stl_files left as they are" >&2
        fi
        # shellcheck disable=SC2086
        (cd "$out" && sha256sum $files)
        ;;
    check)
        mkdir "$work/out"
        "$work/gen_g722_spandsp" vectors "$out/speech.wav" "$work/out" >/dev/null
        files=$spandsp_files
        if [ -n "$stl" ]; then
            stl_vectors "$work/out" "$work/out"
            files="$files $stl_files"
        else
            echo "skip $stl_files (no --stl)"
        fi
        for f in $files; do
            if cmp -s "$work/out/$f" "$out/$f"; then
                echo "ok   $f"
            else
                echo "DIFF $f"
                status=1
            fi
        done
        ;;
esac
echo "spandsp $(dpkg-query -W -f='${Version}' libspandsp-dev 2>/dev/null || echo '(version unknown)'), $($cc --version | head -n 1)"
exit $status
