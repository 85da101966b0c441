#!/usr/bin/env bash
# shoalctl_bf16_cpu.sh: a train.precision bf16 run on CPU workers (issue 10). Workers whose CPU
# computes in bf16 (oneDNN with AVX512_BF16 or AMX) register as "cpu bf16"; the planner places
# bf16 runs on them; the run finishes with every worker training in bf16 (their logs say so) and
# finite losses. Skips where this CPU or build has no bf16, after checking the refusal says why.
# Usage: shoalctl_bf16_cpu.sh BINDIR
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" bf16cpu
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
start_cluster 2 bw
poll_until 30 workers_all_active 2 || err "the two workers did not register"
# the coordinator logs each registration's declared device
devices=$(sed -n 's/.*registered as joining (name bw[12], .*, device \(.*\))$/\1/p' "$tmp/coord.log" |
    sort | paste -sd,)
cat >"$tmp/run.yaml" <<YAML
name: b16
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 6
  global_batch: 4
  seq_len: 16
  micro_batch: 2
  lr: 1e-3
  precision: bf16
YAML
expect 0 submit "$tmp/run.yaml"
run_holds() {
    "$bin" status b16 --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}
if [ "$devices" != "cpu bf16,cpu bf16" ]; then
    [ "$devices" = "cpu,cpu" ] || err "devices '$devices': expected cpu or cpu bf16 twice"
    # no bf16 here: the run waits, and says what it needs
    poll_until 30 run_holds '"cpu bf16" in r["reason"]' ||
        err "a bf16 run on fp32-only CPUs does not say why it waits: $(cat "$tmp/poll")"
    [ "$fail" -eq 0 ] || exit 1
    echo "this CPU or build has no bf16 (devices: $devices): skip"
    exit 77
fi
poll_until 120 run_holds 'r["state"] == "done" and r["step"] == 6' ||
    err "the bf16 run did not finish: $(cat "$tmp/poll")"
python3 -c "import json,math,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if math.isfinite(r['loss']) else 1)" \
    "$tmp/poll" || err "loss not finite: $(cat "$tmp/poll")"
expect 0 plan b16 --json
python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['plan']['topology']; sys.exit(0 if t['dp'] == 2 else 1)" \
    "$tmp/out" || err "expected both workers in the plan (dp 2): $(cat "$tmp/out")"
for i in 1 2; do
    grep -q "the CPU computes in bf16" "$tmp/w$i.log" || err "bw$i did not train in bf16"
done
[ "$fail" -eq 0 ] && echo "PASS: a bf16 run on two 'cpu bf16' workers"
exit "$fail"
