#!/usr/bin/env python3
"""Speech quality of packet loss concealment for G.711 µ-law, scored with PESQ (P.862 NB).

    scripts/quality.py [--seeds N] [--jobs J] [--keep DIR]

Runs `examples/plc_eval.rs` over tests/data/audio/speech1_8000.wav and speech2_8000.wav at
1 %, 3 %, 5 % and 10 % i.i.d. loss and bursty loss (Gilbert model, mean burst 3 packets,
about 4 %), 20 ms packets, N seeded loss patterns each (default 8, as the anchors), scores
every degraded file against the original with scripts/pesq_score.py (the method behind the
figures in shared ANCHORS.md) and prints the mean over files and seeds per condition and
strategy, beside the anchors: zero-fill, repeat last frame, and spandsp's Appendix-I-style
PLC.

Exits non-zero if our PLC at 5 % i.i.d. loss scores below spandsp's 3.423, or less than
0.1 above repeat-last-frame on the same loss patterns.

Needs cargo and python3; installs the Python packages it needs (pesq numpy scipy
soundfile) into the user site with pip if they are missing.
"""
import argparse
import concurrent.futures as cf
import importlib
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCORER = ROOT / "scripts" / "pesq_score.py"
FILES = [ROOT / "tests/data/audio/speech1_8000.wav", ROOT / "tests/data/audio/speech2_8000.wav"]
# name, plc_eval arguments
CONDITIONS = [
    ("1%", ["--loss", "1"]),
    ("3%", ["--loss", "3"]),
    ("5%", ["--loss", "5"]),
    ("10%", ["--loss", "10"]),
    ("bursty", ["--loss", "4", "--burst", "3"]),
]
STRATEGIES = ["zero", "repeat", "plc", "plc_cn"]
# shared ANCHORS.md, PESQ NB, G.711 µ-law, 20 ms packets, mean of 8 seeds on both files:
# zero-fill, repeat last frame, spandsp Appendix-I-style PLC.
ANCHORS = {
    "1%": (4.022, 4.044, 4.149),
    "3%": (3.294, 3.491, 3.670),
    "5%": (2.891, 3.131, 3.423),
    "10%": (2.101, 2.508, 2.842),
    "bursty": (2.761, 3.269, 3.178),
}
ANCHOR_NOLOSS = 4.356
GATE_CONDITION = "5%"
GATE_MIN_GAIN_OVER_REPEAT = 0.1


def ensure_packages():
    missing = []
    for mod in ("pesq", "numpy", "scipy", "soundfile"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if not missing:
        return
    print(f"installing {' '.join(missing)} into the user site with pip", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--user", "--quiet", "pesq", "numpy", "scipy", "soundfile"],
        check=True,
    )
    importlib.invalidate_caches()
    site.addsitedir(site.getusersitepackages())
    for mod in missing:
        importlib.import_module(mod)  # fail here, clearly, if the install did not work


def build():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--example", "plc_eval"], cwd=ROOT, check=True
    )
    exe = ROOT / "target" / "release" / "examples" / "plc_eval"
    if not exe.exists():
        sys.exit(f"{exe} not built")
    return exe


def score(pairs):
    """Mean PESQ NB over (ref, deg) pairs, via the project's copy of the anchors' scorer."""
    args = [sys.executable, str(SCORER)]
    for ref, deg in pairs:
        args += [str(ref), str(deg)]
    args.append("nb")
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pesq_score.py failed: {out.stdout}{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", type=Path, help="write the degraded files here and keep them")
    args = ap.parse_args()

    ensure_packages()
    exe = build()
    with tempfile.TemporaryDirectory(prefix="plc_quality_") as tmp:
        work = args.keep or Path(tmp)
        # Degrade: one directory per file and condition.
        for f in FILES:
            for cond, extra in CONDITIONS:
                out = work / f.stem / cond
                subprocess.run(
                    [str(exe), str(f), str(out), "--seeds", str(args.seeds), *extra],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
        # Score: one job per (condition, strategy, file), averaged over seeds; files have the
        # same number of seeds, so the mean of the per-file means is the mean over all.
        jobs = {}
        with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            jobs[("noloss", "noloss")] = [
                pool.submit(score, [(f, work / f.stem / CONDITIONS[0][0] / "noloss.wav")]) for f in FILES
            ]
            for cond, _ in CONDITIONS:
                for strat in STRATEGIES:
                    jobs[(cond, strat)] = [
                        pool.submit(
                            score,
                            [(f, work / f.stem / cond / f"seed{s}_{strat}.wav") for s in range(args.seeds)],
                        )
                        for f in FILES
                    ]
            results = {k: sum(j.result() for j in v) / len(v) for k, v in jobs.items()}

    print(f"\nPESQ NB (P.862.1 MOS-LQO), G.711 µ-law, 20 ms packets, mean of {len(FILES)} files x "
          f"{args.seeds} seeds; anchors from ANCHORS.md (spandsp)")
    print(f"no-loss round trip: {results[('noloss', 'noloss')]:.3f}   (anchor {ANCHOR_NOLOSS:.3f})\n")
    head = f"{'condition':<9} | {'zero':>6} {'(anch)':>7} | {'repeat':>6} {'(anch)':>7} | " \
           f"{'plc':>6} {'plc_cn':>6} | {'spandsp':>7} | {'plc-rep':>7} {'plc-spd':>7}"
    print(head)
    print("-" * len(head))
    for cond, _ in CONDITIONS:
        z, r, p, c = (results[(cond, s)] for s in STRATEGIES)
        az, ar, asp = ANCHORS[cond]
        print(f"{cond:<9} | {z:6.3f} {az:7.3f} | {r:6.3f} {ar:7.3f} | {p:6.3f} {c:6.3f} | "
              f"{asp:7.3f} | {p - r:+7.3f} {p - asp:+7.3f}")

    plc5, rep5 = results[(GATE_CONDITION, "plc")], results[(GATE_CONDITION, "repeat")]
    spandsp5 = ANCHORS[GATE_CONDITION][2]
    failures = []
    if plc5 < spandsp5:
        failures.append(f"PLC at {GATE_CONDITION} loss scores {plc5:.3f} < spandsp {spandsp5:.3f}")
    if plc5 - rep5 < GATE_MIN_GAIN_OVER_REPEAT:
        failures.append(f"PLC at {GATE_CONDITION} loss is only {plc5 - rep5:+.3f} over repeat-last-frame "
                        f"(need >= +{GATE_MIN_GAIN_OVER_REPEAT})")
    if failures:
        print("\nFAIL: " + "; ".join(failures))
        sys.exit(1)
    print(f"\nOK: PLC at {GATE_CONDITION} loss {plc5:.3f} >= spandsp {spandsp5:.3f} "
          f"and {plc5 - rep5:+.3f} over repeat-last-frame")


if __name__ == "__main__":
    main()
