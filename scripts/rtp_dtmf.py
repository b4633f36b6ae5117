#!/usr/bin/env python3
"""rtp_dtmf.py: small RTP tools for scripts/interop.sh (stdlib only).

  rtp_dtmf.py send   HOST:PORT DIGITS [--pt 101] [--local PORT]
      Sends a PCMU stream (20 ms packets of silence) that carries RFC 4733 telephone
      events for DIGITS: per digit 100 ms of event packets (marker on the first, duration
      growing every 20 ms), the end packet three times (RFC 4733 2.5.1.4), then 100 ms of
      audio before the next digit. Ends with 300 ms of audio.
  rtp_dtmf.py listen PORT SECONDS [--pt 101]
      Receives RTP on PORT for SECONDS and prints the digits whose RFC 4733 end packet
      (E bit) arrived, once per event (deduplicated by RTP timestamp), e.g. "159#".
  rtp_dtmf.py garbage HOST:PORT[,HOST:PORT...] SECONDS [--rate N]
      Sends random datagrams (random bytes, RTP-shaped and RTCP-shaped junk, empty and
      oversized datagrams) to every address at N datagrams/s each, for robustness runs.
"""
import random
import socket
import struct
import sys
import time

EVENTS = "0123456789*#ABCD"


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def opt(args, name, default):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i : i + 2]
        return type(default)(v)
    return default


def rtp(pt, seq, ts, ssrc, payload, marker=False):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def send(args):
    pt = opt(args, "--pt", 101)
    local = opt(args, "--local", 0)
    dest, digits = addr(args[0]), args[1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", local))
    ssrc = random.getrandbits(32)
    seq = random.getrandbits(16)
    ts = random.getrandbits(32)
    silence = b"\xff" * 160  # PCMU silence
    t0 = time.monotonic()
    n = 0

    def emit(pkt):
        nonlocal n
        # Real-time pacing: packet n leaves at t0 + 20 ms * n.
        delay = t0 + 0.02 * n - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.sendto(pkt, dest)
        n += 1

    def audio(frames, first=False):
        nonlocal seq, ts
        for i in range(frames):
            emit(rtp(0, seq, ts, ssrc, silence, marker=first and i == 0))
            seq += 1
            ts += 160

    audio(10, first=True)
    for d in digits:
        code = EVENTS.index(d.upper())
        # RFC 4733 2.5.1: one timestamp (the event start) for all packets of the event,
        # duration in timestamp units growing every packet, volume 10 (-10 dBm0).
        for k in range(1, 6):
            dur = 160 * k
            emit(rtp(pt, seq, ts, ssrc, struct.pack("!BBH", code, 10, dur), marker=(k == 1)))
            seq += 1
        for _ in range(3):  # 2.5.1.4: the end packet three times, same sequence rule
            pkt = rtp(pt, seq, ts, ssrc, struct.pack("!BBH", code, 0x80 | 10, 800))
            s.sendto(pkt, dest)
            seq += 1
        ts += 800
        audio(5)
    audio(15)


def listen(args):
    pt = opt(args, "--pt", 101)
    port, seconds = int(args[0]), float(args[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.1)
    end = time.monotonic() + seconds
    seen = set()
    digits = ""
    audio = 0
    while time.monotonic() < end:
        try:
            d, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        if len(d) < 12 or d[0] >> 6 != 2:
            continue
        cc = d[0] & 0x0F
        off = 12 + 4 * cc
        if d[0] & 0x10 and len(d) >= off + 4:  # header extension
            off += 4 + 4 * struct.unpack("!H", d[off + 2 : off + 4])[0]
        ptype = d[1] & 0x7F
        ts = struct.unpack("!I", d[4:8])[0]
        if ptype != pt:
            audio += 1
            continue
        if len(d) < off + 4:
            continue
        code, flags = d[off], d[off + 1]
        if flags & 0x80 and (ts, code) not in seen and code < len(EVENTS):
            seen.add((ts, code))
            digits += EVENTS[code]
    print(digits if digits else "-")
    print(f"audio packets: {audio}", file=sys.stderr)


def garbage(args):
    rate = opt(args, "--rate", 1000)
    dests = [addr(a) for a in args[0].split(",")]
    seconds = float(args[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rnd = random.Random(4733)
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        for dest in dests:
            kind = rnd.randrange(6)
            n = rnd.randrange(0, 1400)
            body = bytes(rnd.getrandbits(8) for _ in range(n))
            if kind == 0:
                pkt = body
            elif kind == 1:  # RTP-shaped: version 2, random payload type, CSRC count, flags
                pkt = bytes([0x80 | rnd.getrandbits(6), rnd.getrandbits(8)]) + body
            elif kind == 2:  # RTCP-shaped: version 2, type 192..223, random length
                pkt = bytes([0x80 | rnd.getrandbits(5), rnd.randrange(192, 224)]) + body
            elif kind == 3:  # valid-looking RTCP header with a lying length
                pkt = struct.pack("!BBH", 0x81, rnd.choice([200, 201, 202, 203, 207]), rnd.getrandbits(16)) + body[:60]
            elif kind == 4:
                pkt = b""
            else:  # larger than any slot
                pkt = bytes(rnd.getrandbits(8) for _ in range(1400 + rnd.randrange(100)))
            try:
                s.sendto(pkt, dest)
                sent += 1
            except OSError:
                pass
        time.sleep(1.0 / rate)
    print(f"garbage datagrams sent: {sent}", file=sys.stderr)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("send", "listen", "garbage"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    {"send": send, "listen": listen, "garbage": garbage}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
