#!/usr/bin/env bash
# SIPp load through the media-core SIP gateway: SIPp UAC -> gateway -> SIPp UAS, G.711 RTP.
#
#   scripts/sip_load.sh --calls N --rate R --seconds S [--lanes L] [--transcode] [--keep]
#
# N calls in all, R new calls per second, each call holding S seconds (rounded up to whole
# 8 s plays of SIPp's g711a.pcap, so RTP flows the whole call): about min(N, R*S) calls are up
# at once. The UAC (SIPp's uac_pcap, PCMA + RFC 4733) plays real PCMA RTP from pcap (needs root
# or CAP_NET_RAW); the UAS echoes RTP (-rtp_echo). By default the UAS answers PCMA, so the
# gateway relays (pass-through); --transcode makes it answer PCMU, so every call is decoded,
# transcoded PCMA<->PCMU and re-encoded. Reports SIPp's attempted/successful/failed calls and
# retransmissions, and the gateway's per-lane load (p99 tick / 10 ms budget), deadline
# overruns and drops. Exit 1 when a call failed. sip-tester missing and not installable: SKIP.
# Recipe: shared SIP-PEERS.md §4.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
CALLS=100; RATE=10; SECS=20; LANES=1; TRANSCODE=0; KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --calls) CALLS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --lanes) LANES=$2; shift 2 ;;
    --transcode) TRANSCODE=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) sed -n '4p' "$0"; exit 2 ;;
  esac
done
if ! command -v sipp >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sip-tester) >/dev/null 2>&1
  fi
  command -v sipp >/dev/null || { echo "SKIP: sipp (Debian package sip-tester) not installed and not installable"; exit 0; }
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GW=$TARGET/release/examples/sip_gateway
[ -n "${SIP_GATEWAY_NO_BUILD:-}" ] || cargo build --release --example sip_gateway -q
[ -x "$GW" ] || { echo "FAIL: $GW missing"; exit 1; }

W=$(mktemp -d /tmp/sip_load.XXXXXX)
GPID=""; UPID=""
cleanup() { for p in $GPID $UPID; do kill "$p" 2>/dev/null; done; [ "$KEEP" = 1 ] && echo "kept $W" || rm -rf "$W"; }
trap cleanup EXIT
cd "$W" && ln -sfn /usr/share/sip-tester pcap
PLAYS=$(( (SECS + 7) / 8 )); [ $PLAYS -ge 1 ] || PLAYS=1
# uac_pcap plays g711a.pcap (7.05 s) once then a DTMF pcap: repeat the audio PLAYS times.
sipp -sd uac_pcap | python3 -c "
import sys, re
s = sys.stdin.read()
block = re.search(r'(\s*<nop>\s*<action>\s*<exec play_pcap_audio=\"pcap/g711a.pcap\"/>\s*</action>\s*</nop>.*?<pause milliseconds=\"8000\"/>)', s, re.S).group(1)
sys.stdout.write(s.replace(block, block * $PLAYS, 1))" > uac.xml
if [ $TRANSCODE = 1 ]; then
  sipp -sd uas > uas.xml                      # answers PCMU: gateway transcodes PCMA<->PCMU
else
  sipp -sd uas | sed 's|RTP/AVP 0|RTP/AVP 8 101|; s|a=rtpmap:0 PCMU/8000|a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000|' > uas.xml
fi
HOLD=$((PLAYS * 8 + 1))
CONC=$(( CALLS < RATE * HOLD ? CALLS : RATE * HOLD ))
RUN_T=$(( CALLS / RATE + HOLD + 30 ))
MAXC=$(( CALLS + 16 ))
# RTP ports: 4 per call (RTP+RTCP per leg); --lanes spreads calls over lane threads.
"$GW" --listen 127.0.0.1:5080 --route service=127.0.0.1:5090 --media-ip 127.0.0.1 \
  --rtp-ports 20000-$((20000 + 4 * MAXC + 64)) --max-calls $MAXC --lanes "$LANES" \
  --stats-interval 2 >gw.out 2>gw.log & GPID=$!
timeout -k 2 $RUN_T sipp -sf uas.xml -i 127.0.0.1 -p 5090 -mi 127.0.0.1 -rtp_echo -mp 6000 -m "$CALLS" \
  -nostdin -timeout $((RUN_T - 5)) -trace_stat -trace_screen >uas.out 2>&1 & UPID=$!
sleep 1
echo "load: $CALLS calls at $RATE/s, ${HOLD} s each (~$CONC concurrent), $( [ $TRANSCODE = 1 ] && echo 'PCMA<->PCMU transcoding' || echo 'PCMA pass-through'), $LANES lane(s)"
# Kernel UDP receive-buffer drops (/proc/net/udp "drops"), sampled every second per socket
# group: a socket that overflows is a reader that fell behind (SIPp's single echo socket, or
# the gateway's media I/O thread), which SIPp's counters and the gateway's cannot see.
python3 - "$((20000 + 4 * MAXC + 64))" >udp_drops.txt <<'EOP' & SPID=$!
import signal, sys, time
def stop(*_): raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
hi = int(sys.argv[1]); peak = {}
def sample():
    for f in ('/proc/net/udp', '/proc/net/udp6'):
        try: lines = open(f).read().splitlines()[1:]
        except OSError: continue
        for l in lines:
            c = l.split(); port = int(c[1].split(':')[1], 16); d = int(c[-1])
            g = ('sipp-uas-echo' if port == 6000 else 'gateway-rtp' if 20000 <= port <= hi
                 else 'sip' if port in (5080, 5090, 5091) else 'sipp-uac-rtp' if port >= 6000 and port < 20000 else None)
            if g: peak[(g, port)] = max(peak.get((g, port), 0), d)
try:
    while True:
        sample(); time.sleep(1)
except KeyboardInterrupt:
    pass
finally:
    tot = {}
    for (g, _), d in peak.items(): tot[g] = tot.get(g, 0) + d
    print("kernel UDP receive-buffer drops: " + (", ".join(f"{g} {d}" for g, d in sorted(tot.items())) or "none"))
EOP
START=$(date +%s)
timeout -k 2 $RUN_T sipp -sf uac.xml 127.0.0.1:5080 -i 127.0.0.1 -p 5091 -mi 127.0.0.1 -r "$RATE" -m "$CALLS" \
  -l $((CONC + 50)) -fd 1 -nostdin -timeout $((RUN_T - 5)) -timeout_error -trace_stat -trace_screen -trace_err >uac.out 2>&1
URC=$?
wait "$UPID"; UASRC=$?; UPID=""
kill -TERM "$GPID"; wait "$GPID"; GPID=""
kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null
echo "UAC rc=$URC UAS rc=$UASRC, $(( $(date +%s) - START )) s"
cat udp_drops.txt
python3 - <<'EOP'
import csv, glob
f = glob.glob('uac_*_.csv')
if not f:
    print("no SIPp statistics file"); raise SystemExit
r = list(csv.reader(open(f[0]), delimiter=';'))
h, l = r[0], r[-1]
g = lambda k: l[h.index(k)] if k in h else '?'
print(f"SIPp UAC: attempted {g('TotalCallCreated')} successful {g('SuccessfulCall(C)')} failed {g('FailedCall(C)')} "
      f"retransmissions {g('Retransmissions(C)')} max concurrent {max(int(x[h.index('CurrentCall')]) for x in r[1:])}")
EOP
# Peak lane load over the run, and the gateway's own totals.
grep "^STATS" gw.out | python3 -c "
import sys, re
peak = {}
active = 0
for line in sys.stdin:
    active = max(active, int(re.search(r'active (\d+)', line).group(1)))
    for lane, load, ov, dr in re.findall(r'lane (\d+): \d+ sessions, p99 tick [\d.]+ ms = load (\d+)%, overruns (\d+), drops (\d+)', line):
        p = peak.setdefault(lane, [0, 0, 0]); p[0] = max(p[0], int(load)); p[1] = int(ov); p[2] = int(dr)
print(f'gateway: peak active calls {active}; ' + '; '.join(f'lane {k}: peak p99 load {v[0]}%, overruns {v[1]}, drops {v[2]}' for k, v in sorted(peak.items())))"
grep -E "GATEWAY TOTALS" gw.out
grep -cE "WARN" gw.log | sed 's/^/gateway warnings: /'
grep -E "WARN" gw.log | grep -v "quality alert" | head -5
FAILED=$(python3 -c "
import csv, glob
r = list(csv.reader(open(glob.glob('uac_*_.csv')[0]), delimiter=';')); h, l = r[0], r[-1]
print(int(l[h.index('FailedCall(C)')]) + int(l[h.index('TotalCallCreated')]) - int(l[h.index('SuccessfulCall(C)')]))" 2>/dev/null || echo 1)
[ "$FAILED" = 0 ] && [ $URC = 0 ] && { echo "PASS: all $CALLS calls completed"; exit 0; }
echo "FAIL: $FAILED calls failed or unfinished (UAC rc $URC)"; tail -5 uac.out; exit 1
