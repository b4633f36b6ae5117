#!/usr/bin/env python3
"""RFC 3389 comfort noise against an independent implementation: ffmpeg's `comfortnoise`
encoder and decoder, through examples/rtp_gateway over loopback UDP (run by interop.sh).

The input is speech, then 4 s of pink noise at a known level, then speech again, sent to
leg A as PCMU in real time.

1. *Our SID frames, ffmpeg's decoder.* The gateway runs with `--cn 13 --dtx --vad`: through
   the noise it sends leg B SID frames instead of audio. Their level field (RFC 3389 §3.1,
   -dBov) must give the noise's level within LEVEL_DB, as ffmpeg's encoder's does for the
   same noise; and replayed to ffmpeg's RFC 3389 decoder, they must play within PARITY_DB
   of what it makes of its own encoder's frames for that noise (ffmpeg's decoder plays
   about 6 dB below the level field, its own frames included: the comparison is parity
   with the independent implementation, not its absolute level).
2. *ffmpeg's SID frames, our comfort noise.* ffmpeg encodes the noise into SID frames; leg A
   gets the speech as PCMU with SID frames in place of the noise (one every 200 ms, no audio
   between, as a DTX sender sends them). Leg B is PCMA (the gateway transcodes, so its
   comfort noise is made from ffmpeg's frames): what it plays to leg B through the gap must
   be noise at the level ffmpeg's frames describe, within LEVEL_DB of the noise.
3. *ffmpeg's SID frames, relayed.* The same with leg B PCMU too (a relay, comfort noise
   negotiated both ways): leg B must get ffmpeg's SID frames as sent, in order, and no
   audio through the gap.

usage: cn_interop.py GATEWAY SPEECH_8K.wav WORKDIR BASEPORT
Prints one result line per direction; exits non-zero on any failure. Needs numpy,
soundfile, ffmpeg and ffprobe.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import soundfile as sf

RATE = 8000
FRAME = 160
NOISE_DBFS = -45.0
# Levels are whole dB in SID frames (RFC 3389 §3.1) and both ends estimate a noise's level
# over their own windows: 3 dB is the usual tolerance for comfort-noise level matching.
LEVEL_DB = 3.0
# Two encoders' frames for one noise, through one decoder.
PARITY_DB = 2.0
CN_PT = 13


def ulaw_encode(x):
    x = np.clip(x.astype(np.int32), -32635, 32635)
    sign = (x < 0).astype(np.int32)
    mag = np.abs(x) + 0x84
    exp = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    return (~((sign << 7) | (exp << 4) | mant) & 0xFF).astype(np.uint8)


def ulaw_decode(u):
    u = ~u.astype(np.int32) & 0xFF
    exp = (u >> 4) & 7
    x = (((u & 0x0F) << 3) + 0x84) << exp
    x = x - 0x84
    return np.where(u & 0x80, -x, x).astype(np.int16)


def alaw_decode(a):
    a = (a.astype(np.int32) ^ 0x55) & 0xFF
    exp = (a >> 4) & 7
    mant = a & 0x0F
    x = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, x, -x).astype(np.int16)


def dbfs(x):
    x = x.astype(np.float64)
    return 10 * np.log10(np.mean(x * x) / 32768.0**2 + 1e-20)


def pink(n, seed):
    """Pink noise (Paul Kellet's economy filter over white noise)."""
    w = np.random.default_rng(seed).normal(0, 1, n)
    b0 = b1 = b2 = 0.0
    out = np.empty(n)
    for i, v in enumerate(w):
        b0 = 0.99765 * b0 + v * 0.0990460
        b1 = 0.96300 * b1 + v * 0.2965164
        b2 = 0.57000 * b2 + v * 1.0526913
        out[i] = b0 + b1 + b2 + v * 0.1848
    return out


def rtp(pt, seq, ts, payload, marker=False, ssrc=0x5151):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


class Receiver(threading.Thread):
    """Collects every RTP packet arriving on a port: (arrival s, pt, ts, payload)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.packets = []
        self.stop = False
        self.t0 = None

    def run(self):
        while not self.stop:
            try:
                d, _ = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            if len(d) >= 12 and d[0] >> 6 == 2:
                pt, ts = d[1] & 0x7F, struct.unpack("!I", d[4:8])[0]
                self.packets.append((time.perf_counter() - self.t0, pt, ts, d[12:]))


def send_paced(sock, dst, items, t0):
    """Sends (time offset s, datagram) items at their times after t0."""
    for at, dgram in items:
        delay = t0 + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(dgram, dst)


def gateway(gw, port, extra, log, b_codec):
    return subprocess.Popen(
        [gw, "--a-listen", f"127.0.0.1:{port}", "--a-codec", "pcmu",
         "--b-listen", f"127.0.0.1:{port + 4}", "--b-peer", f"127.0.0.1:{port + 8}",
         "--b-codec", b_codec, "--cn", str(CN_PT), "--seconds", "60"] + extra,
        stdout=log, stderr=subprocess.STDOUT)


def run_call(gw, port, items, extra, log_path, tail_s=1.0, b_codec="pcmu"):
    """Runs the gateway, sends `items` to leg A, returns (what leg B received, exit code)."""
    with open(log_path, "w") as log:
        g = gateway(gw, port, extra, log, b_codec)
        rx = Receiver(port + 8)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", port + 12))
        time.sleep(0.5)
        t0 = time.perf_counter()
        rx.t0 = t0
        rx.start()
        send_paced(tx, ("127.0.0.1", port), items, t0)
        time.sleep(tail_s)
        rx.stop = True
        rx.join()
        g.send_signal(signal.SIGINT)
        rc = g.wait(timeout=20)
    return rx.packets, rc


def ffmpeg_sids(noise, work):
    """ffmpeg's RFC 3389 encoding of `noise`: the SID payloads, in order."""
    wav = os.path.join(work, "cn_noise.wav")
    nut = os.path.join(work, "cn_noise.nut")
    sf.write(wav, noise, RATE, subtype="PCM_16")
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", wav,
                    "-c:a", "comfortnoise", "-f", "nut", "-y", nut], check=True)
    dump = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-show_data", nut],
                          check=True, capture_output=True, text=True).stdout
    sids, cur, in_data = [], bytearray(), False
    for line in dump.splitlines():
        if line == "data=":
            in_data, cur = True, bytearray()
        elif in_data and line[:9].endswith(":") and len(line) > 10:
            cur += bytes.fromhex("".join(line[10:50].split()))
        elif in_data:
            in_data = False
            sids.append(bytes(cur))
    return sids


def ffmpeg_decode_sids(sids, work, port):
    """ffmpeg's decoding of SID payloads sent to it as RTP (PT 13), as int16 samples."""
    sdp = os.path.join(work, "cn_rx.sdp")
    raw = os.path.join(work, "cn_rx.raw")
    with open(sdp, "w") as f:
        f.write("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=cn\nc=IN IP4 127.0.0.1\nt=0 0\n"
                f"m=audio {port} RTP/AVP {CN_PT}\na=rtpmap:{CN_PT} CN/8000\n")
    # The RTP demuxer knows no codec for CN: name ffmpeg's RFC 3389 decoder for it.
    ff = subprocess.Popen(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                           "-protocol_whitelist", "file,udp,rtp", "-c:a", "comfortnoise",
                           "-i", sdp, "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-y", raw],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    send_paced(tx, ("127.0.0.1", port),
               [(0.02 * k, rtp(CN_PT, k, FRAME * k, p)) for k, p in enumerate(sids)], t0)
    time.sleep(1.0)
    ff.send_signal(signal.SIGINT)
    ff.wait(timeout=20)
    return np.fromfile(raw, dtype="<i2") if os.path.exists(raw) else np.zeros(0, np.int16)


def main():
    gw, speech_wav, work, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    speech, r = sf.read(speech_wav, dtype="int16")
    assert r == RATE, "an 8 kHz speech file"
    noise = pink(4 * RATE, 3)
    noise = np.round(noise * 32768 * 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(noise**2)))
    noise = noise.astype(np.int16)
    noise_db = dbfs(noise)
    lead, tail = speech[: 2 * RATE], speech[2 * RATE: 4 * RATE]
    fail = False
    lines = []

    # 1. Speech, noise, speech as PCMU; the gateway sends SIDs through the noise.
    signal_ = np.concatenate([lead, noise, tail])
    codes = ulaw_encode(signal_)
    items = [(0.02 * k, rtp(0, k, FRAME * k, codes[k * FRAME:(k + 1) * FRAME].tobytes(),
                            marker=k == 0))
             for k in range(len(codes) // FRAME)]
    got, rc = run_call(gw, port, items, ["--vad", "--dtx"], os.path.join(work, "cn_dtx.gw.log"))
    # The noise is on the wire from 2.0 s to 6.0 s (plus the engine's ~50 ms); DTX starts
    # 400 ms into a silence the detector needs a few frames to call.
    window = [p for p in got if 2.9 <= p[0] <= 6.0]
    sids = [p[3] for p in window if p[1] == CN_PT and p[3]]
    audio = sum(1 for p in window if p[1] == 0)
    ff_sids = ffmpeg_sids(noise, work)

    def decoded_db(frames, p):
        # Each frame twice, so the decoder's output is long enough to measure.
        dec = ffmpeg_decode_sids(frames * 2, work, p)
        return dbfs(dec[RATE // 10:]) if len(dec) > RATE // 5 else float("nan")

    ours_db = decoded_db(sids, port + 16) if sids else float("nan")
    theirs_db = decoded_db(ff_sids, port + 20)
    level = -float(np.median([s[0] for s in sids])) if sids else float("nan")
    ff_level = -float(np.median([s[0] for s in ff_sids if s]))
    # At most half of the window's 155 frame periods carry audio (DTX holds the rest).
    ok = (rc == 0 and len(sids) >= 2 and audio <= int((6.0 - 2.9) / 0.02) // 2
          and abs(level - noise_db) <= LEVEL_DB and abs(ours_db - theirs_db) <= PARITY_DB)
    fail |= not ok
    lines.append(f"cn-dtx-out     noise {noise_db:.1f} dBFS: the gateway sent {len(sids)} SID frames "
                 f"(median level {level:.0f} dBov; ffmpeg's encoder {ff_level:.0f}) and {audio} "
                 f"audio packets in 2.9-6.0 s; ffmpeg's decoder plays ours at {ours_db:.1f} dBFS, "
                 f"its own at {theirs_db:.1f} (exit {rc})  " + ("PASS" if ok else "FAIL"))

    # 2. ffmpeg's SIDs in place of the noise, one every 200 ms, then speech again.
    lead_codes, tail_codes = ulaw_encode(lead), ulaw_encode(tail)
    items = []
    k = 0
    for i in range(len(lead_codes) // FRAME):
        items.append((0.02 * k, rtp(0, k, FRAME * k, lead_codes[i * FRAME:(i + 1) * FRAME]
                                    .tobytes(), marker=k == 0)))
        k += 1
    seq = k
    gap_frames = len(noise) // FRAME
    for j in range(0, gap_frames, 10):
        p = ff_sids[min(j * len(ff_sids) // gap_frames, len(ff_sids) - 1)]
        items.append((0.02 * (k + j), rtp(CN_PT, seq, FRAME * (k + j), p)))
        seq += 1
    k += gap_frames
    for i in range(len(tail_codes) // FRAME):
        items.append((0.02 * k, rtp(0, seq, FRAME * k, tail_codes[i * FRAME:(i + 1) * FRAME]
                                    .tobytes(), marker=i == 0)))
        k += 1
        seq += 1
    got, rc = run_call(gw, port + 32, items, [], os.path.join(work, "cn_in.gw.log"),
                       b_codec="pcma")
    # What leg B heard, in the order it was sent (the gateway's own timestamps).
    audio = sorted((p[2], p[3]) for p in got if p[1] == 8)
    pcm = np.concatenate([alaw_decode(np.frombuffer(a, np.uint8)) for _, a in audio]) \
        if audio else np.zeros(0, np.int16)
    # The gap lies 2.0-6.0 s into the call; judge 2.5-5.5 s (the jitter buffer and the
    # concealment's fade into comfort noise take the first part).
    gap = pcm[int(2.5 * RATE): int(5.5 * RATE)]
    gap_db = dbfs(gap) if len(gap) else float("nan")
    ff_levels = sorted({s[0] for s in ff_sids if s})
    silent = int(np.sum(np.abs(gap.astype(np.int32)) <= 1)) if len(gap) else 0
    ok = (rc == 0 and len(gap) == 3 * RATE and abs(gap_db - noise_db) <= LEVEL_DB
          and silent < len(gap) // 10)
    fail |= not ok
    lines.append(f"cn-ffmpeg-in   ffmpeg encoded the {noise_db:.1f} dBFS noise as {len(ff_sids)} "
                 f"SID frames (levels -{ff_levels[:6]} dBov); leg B heard the gap at "
                 f"{gap_db:.1f} dBFS, {len(pcm) / RATE:.2f} s in all (within {LEVEL_DB:.0f} dB; "
                 f"exit {rc})  " + ("PASS" if ok else "FAIL"))

    # 3. The same SIDs through a relay (leg B PCMU): forwarded as sent, no audio between.
    got, rc = run_call(gw, port + 48, items, [], os.path.join(work, "cn_relay.gw.log"))
    sent = [i[1][12:] for i in items if i[1][1] & 0x7F == CN_PT]
    fwd = [p[3] for p in sorted(got, key=lambda p: p[2]) if p[1] == CN_PT]
    # Arrival 2.5-5.5 s: inside the gap, past the jitter buffer's last frames of speech.
    between = sum(1 for p in got if p[1] == 0 and 2.5 <= p[0] <= 5.5)
    ok = rc == 0 and fwd == sent and between == 0
    fail |= not ok
    lines.append(f"cn-relay       leg B got {len(fwd)} of the {len(sent)} SID frames ffmpeg made, "
                 f"{'as sent' if fwd == sent else 'NOT as sent'}, and {between} audio packets "
                 f"in 2.5-5.5 s (exit {rc})  " + ("PASS" if ok else "FAIL"))
    for line in lines:
        print(line)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
