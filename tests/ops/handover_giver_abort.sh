#!/usr/bin/env bash
# handover_giver_abort.sh: a hand-over the taker aborts is aborted at once on the giver too.
# Real processes on 127.0.0.1: a worker A (comm timeout 30 s) trains a dp 1 x pp 1 run; a spare
# B (shoal-worker-attack with SHOAL_HANDOVER_TAKE_STALL_MS: as a taker it stalls after the
# header, as a slow taker would) waits. `shoalctl drain A` makes A hand its cell to B at the
# boundary: A sends the header and the state and waits for B's answer while B stalls. The run is
# then cancelled: the stop aborts B's take (its session), and B gives the hand-over comm up. A's
# log must show its hand-over aborted by the taker within 5 s of B's abort, far below A's 30 s
# comm timeout, and no timeout. Before the give-up, A waited out its 30 s: this test then fails
# at its 20 s bound.
# Usage: handover_giver_abort.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" hogive
. "$(dirname "$0")/handover_lib.sh" hogive
"$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$cluster_port" --name hga \
    --state-dir "$tmp/a" --comm-timeout-ms 30000 >"$tmp/a.log" 2>&1 &
pids+=($!)
poll_until 60 n_live 1 || { err "A did not register"; exit 1; }
"$bin" submit "$tmp/run.yaml" >/dev/null || { err "submit"; exit 1; }
trained() { grep -q " step $1/.*generation" "$tmp/a.log"; }
poll_until 120 trained 3 || { err "A did not train step 3"; tail "$tmp/a.log"; exit 1; }
SHOAL_HANDOVER_TAKE_STALL_MS=600000 "$bindir/shoal-worker-attack" --coordinator \
    "tcp://127.0.0.1:$cluster_port" --name hgb --state-dir "$tmp/b" \
    --comm-timeout-ms 120000 >"$tmp/b.log" 2>&1 &
pids+=($!)
poll_until 60 n_live 2 || { err "B did not register"; exit 1; }
"$bin" drain hga >/dev/null || err "drain hga"
stalled() { grep -q "hand-over: stalling" "$tmp/b.log"; }
poll_until 120 stalled || { err "B never stalled in its take-over"; tail -20 "$tmp/b.log"; exit 1; }
"$bin" cancel hogive >/dev/null || err "cancel hogive"
echo "run cancelled while B stalls in the hand-over (A waits for B's answer)"
b_aborted() { grep -q "session: aborting the collective" "$tmp/b.log"; }
poll_until 20 b_aborted || err "the stop did not abort B's take within 20 s"
a_aborted() { grep -q "hand-over of the state after step .* aborted by the taker" "$tmp/a.log"; }
poll_until 20 a_aborted || err "A's hand-over was not aborted within 20 s of the cancel"
# the latency from B's abort to A's, from the two logs' clocks (HH:MM:SS.mmm, one host)
latency=$(python3 - "$tmp/b.log" "$tmp/a.log" <<'PY'
import re, sys
def at(path, pat):
    for line in open(path, errors="replace"):
        if re.search(pat, line):
            h, m, s = line.split()[0].split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None
b = at(sys.argv[1], "session: aborting the collective")
a = at(sys.argv[2], "aborted by the taker")
print("none" if a is None or b is None else "%.3f" % ((a - b) % 86400))
PY
)
echo "giver's abort latency after the taker's: $latency s (A's comm timeout: 30 s)"
[ "$latency" != none ] && python3 -c "import sys; sys.exit(0 if float('$latency') < 5 else 1)" ||
    err "A's hand-over abort came $latency s after B's (bound 5 s)"
grep -q -i "timed out\|no progress for" "$tmp/a.log" &&
    err "A's log has a timeout: $(grep -i -m1 'timed out\|no progress for' "$tmp/a.log")"
[ "$fail" -eq 0 ] || { tail -15 "$tmp/a.log"; grep -v " step [0-9]*/" "$tmp/b.log" | tail -15; }
[ "$fail" -eq 0 ] && echo "PASS: the taker's abort ended the giver's wait at once"
exit "$fail"
