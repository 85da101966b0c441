#!/usr/bin/env bash
# handover_abort.sh: a newer plan aborts a hand-over in progress. Real processes on 127.0.0.1: a
# worker A (shoal-worker-attack with SHOAL_HANDOVER_STALL_MS: as a hand-over giver it stalls
# after the header) trains a dp 1 x pp 1 run, a spare B (comm timeout 120 s) waits; `shoalctl
# drain A` makes A hand its cell to B at the boundary; B logs that it is taking the state over
# and waits for the rest; A is SIGKILLed there. The coordinator's next plan must abort B's wait
# at once (B logs the abort of that step's collective) and B trains under that plan, well before
# B's comm timeout, with no timeout in B's log. Before the hand-over comm was tracked, B waited
# the whole 120 s: this test then fails at its 60 s bound.
# Usage: handover_abort.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" hoabort
. "$(dirname "$0")/handover_lib.sh" hoabort
SHOAL_HANDOVER_STALL_MS=600000 "$bindir/shoal-worker-attack" --coordinator \
    "tcp://127.0.0.1:$cluster_port" --name hoa --state-dir "$tmp/a" >"$tmp/a.log" 2>&1 &
pids+=($!)
a_pid=$!
a_trains 3
"$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$cluster_port" --name hob \
    --state-dir "$tmp/b" --comm-timeout-ms 120000 >"$tmp/w.log" 2>&1 &
pids+=($!)
poll_until 60 n_live 2 || { err "B did not register"; exit 1; }
"$bin" drain hoa >/dev/null || err "drain hoa"
taking() { grep -q "taking the state after step" "$tmp/w.log"; }
stalled() { grep -q "stalling" "$tmp/a.log"; }
poll_until 120 taking || { err "B never took A's cell over"; tail -20 "$tmp/w.log"; exit 1; }
poll_until 60 stalled || { err "A never stalled in its hand-over"; tail -20 "$tmp/a.log"; exit 1; }
take_gen=$(grep -o "plan: run [^ ]* generation [0-9]*" "$tmp/w.log" | tail -1 | awk '{print $NF}')
kill -KILL "$a_pid"
echo "A killed mid-hand-over (B takes under generation $take_gen)"
aborted() { grep -q "session: aborting the collective" "$tmp/w.log"; }
poll_until 60 aborted || err "B's hand-over wait was not aborted within 60 s of A's death"
# B trains under a plan newer than the hand-over's
newer_step() {
    grep -o "step [0-9]*/[0-9]* .*(generation [0-9]*" "$tmp/w.log" |
        awk -v g="$take_gen" '{ if ($NF + 0 > g + 0) found = 1 } END { exit !found }'
}
poll_until 60 newer_step || err "B did not train under a newer plan within 60 s"
grep -q -i "timed out\|timeout" "$tmp/w.log" && err "B's log has a timeout: $(grep -i -m1 'timed out\|timeout' "$tmp/w.log")"
[ "$fail" -eq 0 ] || { grep -v " step [0-9]*/" "$tmp/w.log" | tail -25; tail -15 "$tmp/coord.log"; }
[ "$fail" -eq 0 ] && echo "PASS: the newer plan aborted the hand-over; B trains under it"
exit "$fail"
