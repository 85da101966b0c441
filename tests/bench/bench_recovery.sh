#!/usr/bin/env bash
# bench_recovery.sh BINDIR: how long a run takes to notice a SIGKILLed worker and to train again,
# on real processes (fault_bench_lib.sh: a coordinator with its default timings, workers on
# 127.0.0.1), in two cases:
#   peer: dp 2 x pp 1 on 2 workers + 1 spare: the killed cell's part is still held by its
#         data-parallel peer, which sends it to the spare; nothing rolls back;
#   ckpt: pp 2 x dp 1 on 2 workers + 1 spare: nobody else holds the killed stage, so the run
#         rolls back to its last committed checkpoint (every 10 steps) and every cell loads it.
# Each case kills a worker holding a cell BENCH_KILLS times (default 20), at a random point of a
# step, restarting it (it comes back as the spare) and letting the run train a few steps between
# two kills. For each kill, from the timestamp taken right before `kill -KILL`:
#   detect  = to the coordinator's ledger entry declaring the worker dead (its own clock);
#   recover = to training resumed: every cell of the new plan has finished its first step under
#             it (the time of that line in each cell's log; the step is committed when the last
#             cell reports it), whatever that plan's state came from.
# Printed per case: p50 / p99 / max of each (nearest rank: with 20 kills p99 is the maximum),
# the steps lost to rollbacks, and the ratios of the p50s to the same run's mean step time and
# of detection to dead_after (what the heartbeat timeout alone would take).
# Not a pass/fail test (label bench): targets are recover p99 < 2 s with a peer, detect p99 < 1 s.
set -u
. "$(dirname "$0")/fault_bench_lib.sh" "${1:?usage: bench_recovery.sh BINDIR}" recovery
KILLS=${BENCH_KILLS:-20}
DEAD_AFTER_MS=3000 # the coordinator's default
RANDOM=${BENCH_SEED:-1}

# dead_at RUN SEQ NAME: the ledger time (ms) of NAME's death after entry SEQ; fails until there.
dead_at() {
    ctl events "$1" --since "$2" --json 2>/dev/null | python3 -c '
import json, sys
d = [e["time_ms"] for e in json.load(sys.stdin)["events"] if e["kind"] == "worker_state"
     and e["detail"]["to"] == "dead" and e["detail"]["name"] == sys.argv[1]]
if not d:
    sys.exit(1)
print(d[0])' "$3"
}
last_seq() {
    ctl events "$1" --json 2>/dev/null | python3 -c '
import json, sys
print(max([e["seq"] for e in json.load(sys.stdin)["events"]], default=0))'
}

# resumed RUN SEQ KILL_MS NAME...: after ledger entry SEQ a plan came; every cell of it has
# logged its first step under it (or a later plan): prints "ms_after_kill generation source
# steps_lost"; fails until then.
resumed() {
    local run=$1 seq=$2 kill_ms=$3
    shift 3
    ctl events "$run" --since "$seq" --json > "$tmp/ev.json" 2>/dev/null || return 1
    python3 - "$tmp" "$tmp/ev.json" "$kill_ms" "$@" <<'EOF'
import datetime, json, re, sys
t, evf, kill_ms, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
ev = json.load(open(evf))["events"]
plans = [e["detail"] for e in ev if e["kind"] == "plan"]
if not plans:
    sys.exit(1)
plan = plans[0]
cells = plan["dp"] * plan["pp"] * plan.get("ep", 1)
lost = sum(e["detail"].get("steps_lost", 0) for e in ev if e["kind"] == "rollback")
line = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) .* step \d+/\d+ loss .*\(generation (\d+), rank")
day = datetime.datetime.fromtimestamp(kill_ms / 1000).replace(hour=0, minute=0, second=0, microsecond=0)
firsts = []
for n in names:
    try:
        lines = open(f"{t}/{n}.log").read().splitlines()
    except OSError:
        continue
    for l in lines:
        m = line.match(l)
        if not m or int(m.group(5)) < plan["generation"]:
            continue
        h, mi, s, ms = (int(m.group(i)) for i in range(1, 5))
        at = int((day + datetime.timedelta(hours=h, minutes=mi, seconds=s, milliseconds=ms)).timestamp() * 1000)
        if at < kill_ms - 43_200_000:  # the log crossed midnight
            at += 86_400_000
        if at >= kill_ms:
            firsts.append(at)
            break
if len(firsts) < cells:
    sys.exit(1)
print(max(firsts) - kill_ms, plan["generation"], plan["source"], lost)
EOF
}

# bench_case NAME PP DP STAGE: the case's cluster (3 workers NAME1..3), KILLS kills of the worker
# holding a cell of STAGE; appends to $tmp/NAME.detect, NAME.recover, NAME.lost.
bench_case() {
    local name=$1 pp=$2 dp=$3 stage=$4 k i victim seq kill_ms d r
    : > "$tmp/$name.detect"
    : > "$tmp/$name.recover"
    : > "$tmp/$name.lost"
    start_coord "$name"
    for i in 1 2 3; do start_worker "$name$i"; done
    poll_until 60 n_live_is 3 || die "$name: 3 workers did not register"
    bench_spec "$tmp/$name.yaml" "$name" 1000000 "$pp" "$dp"
    ctl submit "$tmp/$name.yaml" > /dev/null || die "$name: submit"
    poll_until 180 run_step_ge "$name" 12 || die "$name: no step 12"
    for ((k = 1; k <= KILLS; k++)); do
        victim=$(cell_worker "$stage" $RANDOM) || die "$name: nobody holds stage $stage"
        seq=$(last_seq "$name")
        sleep "0.$((RANDOM % 10))" # a random point of the step
        kill_ms=$(now_ms)
        kill -KILL "${WPID[$victim]}"
        wait "${WPID[$victim]}" 2>/dev/null
        poll_until 30 dead_at "$name" "$seq" "$victim" > "$tmp/dead" ||
            die "$name kill $k: $victim never declared dead"
        d=$(($(cat "$tmp/dead") - kill_ms))
        poll_until 120 resumed "$name" "$seq" "$kill_ms" "$name"1 "$name"2 "$name"3 > "$tmp/res" ||
            die "$name kill $k: training never resumed after $victim's death"
        read -r r gen src lost < "$tmp/res"
        echo "$d" >> "$tmp/$name.detect"
        echo "$r" >> "$tmp/$name.recover"
        echo "$lost" >> "$tmp/$name.lost"
        printf '  %s kill %2d: %-8s dead after %5d ms, trained again after %5d ms (generation %s, state from %s, %s steps lost)\n' \
            "$name" "$k" "$victim" "$d" "$r" "$gen" "$src" "$lost"
        start_worker "$victim"
        poll_until 60 n_live_is 3 || die "$name kill $k: $victim did not come back"
        local s
        s=$(run_now "$name") || die "$name: status"
        set -- $s
        poll_until 120 run_step_ge "$name" $(($2 + 3)) || die "$name kill $k: the run stopped training"
    done
    # the same run's mean step time (ms), over every rank's steps
    cat "$tmp/$name"?.jsonl | python3 -c '
import json, sys
s = [json.loads(l)["step_seconds"] for l in sys.stdin if l.strip()]
print(round(1000 * sum(s) / len(s)))' > "$tmp/$name.step_ms"
    stop_cluster
}

echo "bench_recovery: $KILLS SIGKILLs per case; coordinator defaults (heartbeat 500 ms, dead_after $DEAD_AFTER_MS ms); load $(cut -d' ' -f1-3 /proc/loadavg)"
bench_case peer 1 2 0
bench_case ckpt 2 1 1

echo
echo "bench_recovery: from kill -KILL (ms; p99 nearest rank), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %5s %18s %18s %6s %8s %13s %15s\n' case kills "detect p50/p99/max" \
    "recover p50/p99/max" lost "step ms" "recover/step" "detect/dead_after"
for c in peer ckpt; do
    read -r d50 d99 dmax n < <(pct "$tmp/$c.detect")
    read -r r50 r99 rmax _ < <(pct "$tmp/$c.recover")
    lost=$(($(paste -sd+ "$tmp/$c.lost")))
    step=$(cat "$tmp/$c.step_ms")
    label="dp 2 + spare (state from the peer)"
    [ $c = ckpt ] && label="pp 2 + spare (checkpoint rollback)"
    printf '%-34s %5s %18s %18s %6s %8s %13s %15s\n' "$label" "$n" "$d50/$d99/$dmax" \
        "$r50/$r99/$rmax" "$lost" "$step" "$(python3 -c "print(f'{$r50/$step:.1f}')")" \
        "$(python3 -c "print(f'{$d50/$DEAD_AFTER_MS:.2f}')")"
done
cat "$tmp"/peer.detect "$tmp"/ckpt.detect > "$tmp/all.detect"
read -r d50 d99 dmax n < <(pct "$tmp/all.detect")
echo "detection over both cases: p50 $d50 ms, p99 $d99 ms, max $dmax ms of $n kills (target p99 < 1000 ms)"
read -r r50 r99 rmax _ < <(pct "$tmp/peer.recover")
echo "recovery with a peer: p50 $r50 ms, p99 $r99 ms (target < 2000 ms)"
