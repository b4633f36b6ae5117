#!/usr/bin/env python3
"""Generate independent G.711 reference tables for tests/g711_bitexact.rs.

The reference is CPython's `audioop` module (C code derived from Sun
Microsystems' public-domain g711.c), which shares no code with
src/codec/audio/g711.rs. `audioop` exists in Python <= 3.12 (it was removed in
3.13), so run this with Python 3.11 or 3.12:

    python3.11 scripts/gen_g711_reference.py            # writes tests/data/g711/
    python3.11 scripts/gen_g711_reference.py --check    # verifies committed files

Outputs (all little-endian, no header):
  ulaw_encode.bin  65536 bytes: audioop.lin2ulaw of every s16 input, -32768..=32767 in order
  alaw_encode.bin  65536 bytes: audioop.lin2alaw of every s16 input, -32768..=32767 in order
  ulaw_decode.bin  512 bytes:   audioop.ulaw2lin of codes 0x00..=0xFF, as s16le
  alaw_decode.bin  512 bytes:   audioop.alaw2lin of codes 0x00..=0xFF, as s16le

Known difference (kept in the data on purpose, explained in the Rust test):
Sun's/audioop's lin2ulaw takes the magnitude of a negative input as -(x >> 2)
(two's complement), while ITU-T G.191 STL ulaw_compress uses the one's
complement (~x) >> 2, as both implementations already do for A-law.
media-core follows the STL, so for some negative inputs the µ-law codes differ
by one quantisation step. Positive inputs, A-law and both decoders agree.
"""

import argparse
import hashlib
import pathlib
import struct
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # noqa: E402  (stdlib, deprecated in 3.11, removed in 3.13)

WIDTH = 2  # bytes per linear sample: s16


def tables():
    pcm = struct.pack("<65536h", *range(-32768, 32768))
    codes = bytes(range(256))
    return {
        "ulaw_encode.bin": audioop.lin2ulaw(pcm, WIDTH),
        "alaw_encode.bin": audioop.lin2alaw(pcm, WIDTH),
        "ulaw_decode.bin": audioop.ulaw2lin(codes, WIDTH),
        "alaw_decode.bin": audioop.alaw2lin(codes, WIDTH),
    }


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=root / "tests" / "data" / "g711")
    ap.add_argument("--check", action="store_true", help="compare with existing files, write nothing")
    args = ap.parse_args()

    if sys.byteorder != "little":
        # audioop works in native byte order; the files are defined as little-endian.
        sys.exit("run on a little-endian host")

    ok = True
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in tables().items():
        path = args.out / name
        digest = hashlib.sha256(data).hexdigest()
        if args.check:
            same = path.exists() and path.read_bytes() == data
            ok &= same
            print(f"{'ok  ' if same else 'DIFF'} {name} {len(data)} bytes sha256={digest}")
        else:
            path.write_bytes(data)
            print(f"wrote {name} {len(data)} bytes sha256={digest}")
    print(f"python {sys.version.split()[0]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
