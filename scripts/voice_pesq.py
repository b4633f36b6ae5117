#!/usr/bin/env python3
"""voice_pesq.py: PESQ (P.862) of the voice-processing chain on real speech, through the engine.

Noise suppression: speech + pink noise at 5 and 10 dB SNR (P.56-style active level from the
clean file's frames above -30 dB of its peak frame energy), run through
`wav_pipeline --codec pcmu` without and with `--ns` (8 kHz speech; PESQ NB) and with
`--codec opus --ns-rnn` / without for the RNN tier (48 kHz speech; PESQ WB after resampling
to 16 kHz). Reference: the clean speech. Echo canceller under double talk: near-end speech +
the echo of far-end speech (three taps, 20-32 ms), `wav_pipeline --aec FAR.wav`; PESQ of the
output against the clean near-end speech, with and without the canceller. DTX: speech after
1 s of background (pink noise, 20 dB SNR) through PCMU with the VAD, without and with
`--dtx` (SID frames through the silences, comfort noise at the far end); PESQ against the
audio sent.

Gate (exit 1): each processed score must beat its unprocessed counterpart; DTX may lose at
most DTX_PESQ_LOSS_MAX and must have sent SID frames instead of some audio frames.
Usage: python3 scripts/voice_pesq.py   (builds the example; ~1 minute)
"""
import json, os, subprocess, sys, tempfile

try:
    import numpy as np, soundfile as sf
    from pesq import pesq
    from scipy.signal import resample_poly
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "pesq", "numpy", "scipy", "soundfile"])
    import numpy as np, soundfile as sf
    from pesq import pesq
    from scipy.signal import resample_poly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIO = os.path.join(ROOT, "tests", "data", "audio")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EXE = os.path.join(TARGET, "release", "examples", "wav_pipeline")


# DTX may cost at most this much PESQ against sending every frame (measured 0.03-0.14).
DTX_PESQ_LOSS_MAX = 0.25


def build():
    env = dict(os.environ)
    if "CMAKE" not in env:
        env["CMAKE"] = subprocess.check_output([os.path.join(ROOT, "scripts", "ensure-cmake.sh")], text=True).strip()
    subprocess.check_call(["cargo", "build", "--quiet", "--release", "--example", "wav_pipeline"], cwd=ROOT, env=env)


def pink(n, seed):
    """1/f noise by shaping white noise's spectrum (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    f[0] = 1
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return x / np.sqrt(np.mean(x ** 2))


def active_rms(x, fs):
    frames = x[: len(x) // (fs // 50) * (fs // 50)].reshape(-1, fs // 50)
    e = np.mean(frames ** 2, axis=1)
    return np.sqrt(np.mean(e[e > e.max() * 1e-3]))


def run(inp, out, fs, *flags):
    subprocess.check_call([EXE, inp, out, *flags], stdout=subprocess.DEVNULL)
    y, r = sf.read(out, dtype="float64")
    return y


def score(ref, deg, fs):
    n = min(len(ref), len(deg))
    if fs == 48000:
        ref, deg = resample_poly(ref[:n], 1, 3), resample_poly(deg[:n], 1, 3)
        return pesq(16000, ref, deg, "wb")
    return pesq(fs, ref[:n], deg[:n], "nb")


def write(path, x, fs):
    sf.write(path, np.clip(x, -1, 1 - 2 ** -15), fs, subtype="PCM_16")


def main():
    build()
    tmp = tempfile.mkdtemp(prefix="voice_pesq_")
    rows, ok = [], True
    cases = [
        ("NS (spectral), PCMU", "speech1_8000.wav", 8000, ["--codec", "pcmu"], ["--ns"]),
        ("NS (spectral), PCMU", "speech2_8000.wav", 8000, ["--codec", "pcmu"], ["--ns"]),
        ("NS (RNN), Opus 48k", "speech1_48000.wav", 48000, ["--codec", "opus", "--to-codec", "opus"], ["--ns-rnn"]),
    ]
    for name, f, fs, base, proc in cases:
        clean, _ = sf.read(os.path.join(AUDIO, f), dtype="float64")
        lvl = active_rms(clean, fs)
        for snr in (10, 5):
            noisy = clean + pink(len(clean), 7) * lvl * 10 ** (-snr / 20)
            inp = os.path.join(tmp, f"noisy_{snr}_{f}")
            write(inp, noisy, fs)
            off = run(inp, os.path.join(tmp, "off.wav"), fs, *base)
            on = run(inp, os.path.join(tmp, "on.wav"), fs, *base, *proc)
            a, b = score(clean, off, fs), score(clean, on, fs)
            ok &= b > a
            rows.append((f"{name}, {f}, {snr} dB SNR", a, b))
    # Echo canceller under double talk: near-end speech1 plus the echo of far-end speech2.
    near, _ = sf.read(os.path.join(AUDIO, "speech1_8000.wav"), dtype="float64")
    far, _ = sf.read(os.path.join(AUDIO, "speech2_8000.wav"), dtype="float64")
    n = min(len(near), len(far))
    near, far = near[:n], far[:n]
    echo = np.zeros(n)
    for d, g in ((160, 0.4), (200, -0.2), (260, 0.1)):
        echo[d:] += g * far[: n - d]
    mic = near + echo
    inp, farp = os.path.join(tmp, "mic.wav"), os.path.join(tmp, "far.wav")
    write(inp, mic, 8000)
    write(farp, far, 8000)
    off = run(inp, os.path.join(tmp, "off.wav"), 8000, "--codec", "pcmu")
    on = run(inp, os.path.join(tmp, "on.wav"), 8000, "--codec", "pcmu", "--aec", farp)
    a, b = score(near, off, 8000), score(near, on, 8000)
    ok &= b > a
    rows.append(("AEC, double talk (near speech1 + echo of speech2), PCMU", a, b))
    # DTX (RFC 3389): speech after 1 s of background, pink noise at 20 dB SNR, PCMU, the VAD
    # on the received leg; the far leg sends SID frames through the silences and the far end
    # plays comfort noise. Reference: what was sent (DTX should not change it much).
    dtx_rows, dtx_ok = [], True
    for f in ("speech1_8000.wav", "speech2_8000.wav"):
        clean, _ = sf.read(os.path.join(AUDIO, f), dtype="float64")
        x = np.concatenate([np.zeros(8000), clean])
        x = x + pink(len(x), 7) * active_rms(clean, 8000) * 10 ** (-20 / 20)
        inp = os.path.join(tmp, f"dtx_{f}")
        write(inp, x, 8000)
        sent, _ = sf.read(inp, dtype="float64")
        off = run(inp, os.path.join(tmp, "off.wav"), 8000, "--codec", "pcmu", "--vad")
        on_path = os.path.join(tmp, "on.wav")
        summary = json.loads(subprocess.check_output(
            [EXE, inp, on_path, "--codec", "pcmu", "--vad", "--dtx", "--json"]))
        on, _ = sf.read(on_path, dtype="float64")
        a, b = score(sent, off, 8000), score(sent, on, 8000)
        skipped = summary["far_frames_skipped"]
        dtx_ok &= b >= a - DTX_PESQ_LOSS_MAX and skipped > 0 and summary["far_sids"] > 0
        dtx_rows.append((f"DTX, {f}, 20 dB SNR pink", a, b, skipped, summary["far_sids"],
                         summary["far_packets"]))
    print(f"{'case':<62} {'without':>8} {'with':>8}")
    for name, a, b in rows:
        print(f"{name:<62} {a:8.3f} {b:8.3f}")
    for name, a, b, skipped, sids, packets in dtx_rows:
        print(f"{name:<62} {a:8.3f} {b:8.3f}   ({packets} packets, {sids} SID, {skipped} frames not sent)")
    if not ok:
        print("FAIL: a processed score did not beat the unprocessed one")
    if not dtx_ok:
        print(f"FAIL: DTX lost more than {DTX_PESQ_LOSS_MAX} PESQ, or sent no SID / skipped no frame")
    if ok and dtx_ok:
        print("PASS")
    return 0 if ok and dtx_ok else 1


if __name__ == "__main__":
    sys.exit(main())
