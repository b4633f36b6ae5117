#!/usr/bin/env python3
"""Jitter buffer evaluation: quality and delay together.

For each network case (the shipped traces and impairment-model runs) and each speech file,
runs the real engine (`wav_pipeline`) and a reference receiver (a fixed playout buffer with
repeat-last-frame concealment) at the SAME mean playout delay as ours and at ours + 40 ms,
scores all with ITU-T P.862 PESQ (scripts/pesq_score.py), and prints a table.

Exits non-zero if, on any case, the engine scores below the reference at equal delay by more
than 0.05 (it must be at least as good at no more delay).

Usage: scripts/jb_eval.py   (needs `pip install pesq numpy scipy soundfile`; installs them if missing)
"""
import json, math, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = [os.path.join(ROOT, 'tests/data/audio', f) for f in ('speech1_8000.wav', 'speech2_8000.wav')]
CASES = [
    ('trace clean_lan', ['--trace', 'tests/data/traces/clean_lan.csv']),
    ('trace cellular_jittery', ['--trace', 'tests/data/traces/cellular_jittery.csv']),
    ('trace wifi_bursty', ['--trace', 'tests/data/traces/wifi_bursty.csv']),
    ('model 5% iid loss', ['--loss', '5']),
    ('model 20 ms jitter, 1% loss', ['--jitter-ms', '20', '--loss', '1']),
    ('model 40 ms jitter', ['--jitter-ms', '40']),
    ('model bursty 4% (mean 3)', ['--loss', '4', '--burst', '3']),
]


def ensure_deps():
    try:
        import pesq, numpy, scipy, soundfile  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet', '--user', 'pesq', 'numpy', 'scipy', 'soundfile'])


def run(args):
    out = subprocess.check_output(['cargo', 'run', '--quiet', '--release', '--example', 'wav_pipeline', '--'] + args, cwd=ROOT)
    return json.loads(out.decode().strip().splitlines()[-1])


def pesq(ref, deg):
    out = subprocess.check_output([sys.executable, os.path.join(ROOT, 'scripts/pesq_score.py'), ref, deg, 'nb'], cwd=ROOT)
    return float(out.decode().split()[-1])


def main():
    ensure_deps()
    tmp = tempfile.mkdtemp(prefix='jb_eval_')
    rows = []
    failed = False
    for name, extra in CASES:
        ours_s, ours_d, eq_s, more_s, eq_d = [], [], [], [], []
        for i, f in enumerate(FILES):
            o = os.path.join(tmp, f'ours_{i}.wav')
            js = run([f, o, '--seed', str(11 + i), '--json'] + extra)
            ours_s.append(pesq(f, o))
            ours_d.append(js['mean_playout_delay_ms'])
            d = math.ceil(js['mean_playout_delay_ms'] / 10.0) * 10
            for delay, acc in ((d, eq_s), (d + 40, more_s)):
                r = os.path.join(tmp, f'ref_{i}_{delay}.wav')
                run([f, r, '--seed', str(11 + i), '--json', '--reference-fixed', str(delay)] + extra)
                acc.append(pesq(f, r))
            eq_d.append(d)
        mean = lambda v: sum(v) / len(v)
        row = (name, mean(ours_s), mean(ours_d), mean(eq_s), mean(eq_d), mean(more_s))
        rows.append(row)
        if row[1] < row[3] - 0.05:
            failed = True
    print(f"{'case':32} {'ours PESQ':>9} {'ours delay':>10} | {'fixed@same':>10} {'delay':>6} | {'fixed@+40ms':>11}")
    for r in rows:
        print(f"{r[0]:32} {r[1]:9.3f} {r[2]:8.1f}ms | {r[3]:10.3f} {r[4]:4.0f}ms | {r[5]:11.3f}")
    if failed:
        print('FAIL: the engine scored below the fixed reference at equal delay on some case')
        sys.exit(1)


if __name__ == '__main__':
    main()
