#!/usr/bin/env bash
# handover_giver_abort.sh: a hand-over aborted on one side is aborted at once on the other.
# Real processes on 127.0.0.1: a worker A trains a dp 1 x pp 1 run, a spare B waits; A leaves and
# hands its cell to B at the boundary; one side aborts mid-way and gives the hand-over comm up
# (comm_give_up); the other side's log must show its wait ended within 5 s of that abort, far
# below its comm timeout (A 30 s, B 120 s), and no timeout.
#   taker (default): B is shoal-worker-attack with SHOAL_HANDOVER_TAKE_STALL_MS (it stalls after
#     the header, as a slow taker); `shoalctl drain A`; A sends the header and the state and
#     waits for B's answer; the run is cancelled: the stop aborts B's take, B gives up, and A
#     logs its hand-over aborted by the taker. Before the give-up A waited out its 30 s (29.7 s):
#     the test then fails at its 20 s bound.
#   giver: A is shoal-worker-attack with SHOAL_HANDOVER_STALL_MS (it stalls after the header)
#     and a 6 s grace; SIGTERM to A makes it hand over; its grace's end aborts its hand-over (its
#     session tracks the giver's comm), A gives up, and B falls back at once, logging that the
#     leaving worker gave the hand-over up. Before, A's hand-over was not tracked: A stalled on
#     and B waited until its comm timeout or the coordinator's next plan.
# Usage: handover_giver_abort.sh BINDIR [taker|giver]
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" hogive
. "$(dirname "$0")/handover_lib.sh" hogive
mode=${2:-taker}
a_run=("$bindir/shoal-worker") b_run=(env SHOAL_HANDOVER_TAKE_STALL_MS=600000 "$bindir/shoal-worker-attack")
[ "$mode" = giver ] &&
    a_run=(env SHOAL_HANDOVER_STALL_MS=600000 "$bindir/shoal-worker-attack" --grace-seconds 6) \
    b_run=("$bindir/shoal-worker")
"${a_run[@]}" --coordinator "tcp://127.0.0.1:$cluster_port" --name hga \
    --state-dir "$tmp/a" --comm-timeout-ms 30000 >"$tmp/a.log" 2>&1 &
pids+=($!)
a_pid=$!
a_trains 3
"${b_run[@]}" --coordinator "tcp://127.0.0.1:$cluster_port" --name hgb --state-dir "$tmp/b" \
    --comm-timeout-ms 120000 >"$tmp/b.log" 2>&1 &
pids+=($!)
poll_until 60 n_live 2 || { err "B did not register"; exit 1; }
# the side that stalls (its log), the side that aborts, and the line the other side must log
if [ "$mode" = giver ]; then
    stall_log=$tmp/a.log abort_log=$tmp/a.log wait_log=$tmp/b.log
    ended="hand-over from .*gave the hand-over up"
    kill -TERM "$a_pid"
else
    stall_log=$tmp/b.log abort_log=$tmp/b.log wait_log=$tmp/a.log
    ended="hand-over of the state after step .* aborted by the taker"
    "$bin" drain hga >/dev/null || err "drain hga"
fi
stalled() { grep -q "hand-over: stalling" "$stall_log"; }
poll_until 120 stalled || { err "no stall in the hand-over"; tail -20 "$stall_log"; exit 1; }
if [ "$mode" = taker ]; then
    "$bin" cancel hogive >/dev/null || err "cancel hogive"
    echo "run cancelled while B stalls in the hand-over (A waits for B's answer)"
else
    echo "A stalls in the hand-over until its grace ends (B waits for the state)"
fi
aborted() { grep -q "session: aborting the collective" "$abort_log"; }
poll_until 20 aborted || err "the $mode's hand-over was not aborted within 20 s"
ended() { grep -q "$ended" "$wait_log"; }
poll_until 20 ended || err "the other side's wait did not end within 20 s of the $mode's abort"
# the latency from one side's abort to the other's, from the logs' clocks (HH:MM:SS.mmm)
latency=$(python3 - "$abort_log" "$wait_log" "$ended" <<'PY'
import re, sys
def at(path, pat):
    for line in open(path, errors="replace"):
        if re.search(pat, line):
            h, m, s = line.split()[0].split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None
b = at(sys.argv[1], "session: aborting the collective")
a = at(sys.argv[2], sys.argv[3])
print("none" if a is None or b is None else "%.3f" % ((a - b) % 86400))
PY
)
echo "$mode aborted: the other side's wait ended $latency s later (comm timeouts: A 30 s, B 120 s)"
[ "$latency" != none ] && python3 -c "import sys; sys.exit(0 if float('$latency') < 5 else 1)" ||
    err "the other side's wait ended $latency s after the $mode's abort (bound 5 s)"
grep -q -i "timed out\|no progress for" "$wait_log" &&
    err "a timeout: $(grep -i -m1 'timed out\|no progress for' "$wait_log")"
[ "$fail" -eq 0 ] || { tail -15 "$tmp/a.log"; grep -v " step [0-9]*/" "$tmp/b.log" | tail -15; }
[ "$fail" -eq 0 ] && echo "PASS: the $mode's abort ended the other side's wait at once"
exit "$fail"
