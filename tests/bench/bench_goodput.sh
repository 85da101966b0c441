#!/usr/bin/env bash
# bench_goodput.sh BINDIR: goodput under churn. One run, dp 2 on 2 worker daemons (no spare),
# trained through alternating 30 s windows (BENCH_WINDOW_S): a quiet window, then a churn window
# that starts by SIGKILLing one of the two workers (each in turn) and restarting it at once, so
# one worker is killed and restarted every 60 s of the whole and every 30 s of the churned time.
# BENCH_GOODPUT_S (default 180) seconds of each kind, interleaved so that the load of a shared
# machine weighs on both alike. Tokens/s of a window = committed steps gained (the coordinator's
# committed step: a step trained and then lost counts for nothing) x tokens per step / seconds.
# Prints both figures and their ratio (target >= 0.9; TorchFT-style HSDP reports 0.80 at scale).
# Not a pass/fail test (label bench).
set -u
. "$(dirname "$0")/fault_bench_lib.sh" "${1:?usage: bench_goodput.sh BINDIR}" goodput
TOTAL_S=${BENCH_GOODPUT_S:-180}
WINDOW_S=${BENCH_WINDOW_S:-30}
PAIRS=$(((TOTAL_S + WINDOW_S - 1) / WINDOW_S))

start_coord gp
for w in gp1 gp2; do start_worker $w; done
poll_until 60 n_live_is 2 || die "2 workers did not register"
bench_spec "$tmp/gp.yaml" gp 1000000 1 2
ctl submit "$tmp/gp.yaml" > /dev/null || die "submit"
poll_until 180 run_step_ge gp 12 || die "no step 12"

# window KIND VICTIM: one window; appends "ms steps" to $tmp/KIND.
window() {
    local kind=$1 victim=$2 t0 t1 s0 s1 st
    st=$(run_now gp) || die "status"
    t0=$(now_ms)
    s0=$(echo "$st" | cut -d' ' -f2)
    if [ "$kind" = churn ]; then
        kill -KILL "${WPID[$victim]}"
        wait "${WPID[$victim]}" 2>/dev/null
        start_worker "$victim"
    fi
    sleep "$WINDOW_S"
    st=$(run_now gp) || die "status"
    t1=$(now_ms)
    s1=$(echo "$st" | cut -d' ' -f2)
    echo "$((t1 - t0)) $((s1 - s0))" >> "$tmp/$kind"
    printf '  %-5s window: %3d steps in %6d ms%s\n' "$kind" $((s1 - s0)) $((t1 - t0)) \
        "$([ "$kind" = churn ] && echo " ($victim killed and restarted at its start)")"
}

echo "bench_goodput: $PAIRS quiet and $PAIRS churn windows of $WINDOW_S s, dp 2 on 2 workers; load $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$tmp/quiet"
: > "$tmp/churn"
for ((i = 1; i <= PAIRS; i++)); do
    window quiet -
    victim=gp$((1 + (i - 1) % 2))
    window churn "$victim"
done
poll_until 60 n_live_is 2 || die "a restarted worker did not come back"
events=$(ctl events gp --json | python3 -c '
import json, sys
ev = json.load(sys.stdin)["events"]
print(sum(e["kind"] == "plan" for e in ev), "plans,", sum(e["kind"] == "rollback" for e in ev), "rollbacks")')

echo
echo "bench_goodput: tokens/s of committed steps ($TOKENS_PER_STEP tokens a step), load $(cut -d' ' -f1-3 /proc/loadavg); $events"
printf '%-40s %8s %8s %8s %10s\n' windows seconds steps tokens/s "vs quiet"
python3 - "$tmp/quiet" "$tmp/churn" "$TOKENS_PER_STEP" <<'EOF'
import sys
tok = int(sys.argv[3])
rates = {}
for name, label in ((sys.argv[1], "quiet (no fault)"), (sys.argv[2], "churn (a worker killed + restarted)")):
    rows = [tuple(map(int, l.split())) for l in open(name) if l.strip()]
    ms, steps = sum(r[0] for r in rows), sum(r[1] for r in rows)
    rates[label] = steps * tok / (ms / 1000)
    base = rates["quiet (no fault)"]
    print(f"{label:40s} {ms / 1000:8.1f} {steps:8d} {rates[label]:8.1f} {rates[label] / base:10.2f}")
q, c = rates.values()
print(f"goodput under churn: {c / q:.2f} of the quiet tokens/s (target >= 0.90; TorchFT HSDP reports 0.80 at scale)")
EOF
