#!/usr/bin/env bash
# slurm_handover.sh: workers as Slurm jobs on a real Slurm on this machine (Debian's slurm-wlm and
# munge): a munge key generated into the temp dir and munged on its own socket, a generated
# slurm.conf (proctrack/linuxproc, task/none, select/cons_tres, unique ports), slurmctld and
# slurmd in the foreground (-D) with their state in the temp dir. Two jobs of
# ops/slurm/shoal-worker.sbatch register with a local coordinator and a run (data_parallel 1: one
# cell, one spare) starts. Then, by MODE:
#   scancel  two worker jobs; `scancel --signal=TERM` to the job whose worker holds the cell
#   preempt  real preemption: the cell's worker is a job filling the node in partition `donated`
#            (PriorityTier 1, GraceTime 30), the spare a plain process; a job submitted to
#            partition `owner` (PriorityTier 10) preempts it (preempt/partition_prio, CANCEL):
#            Slurm sends SIGTERM, and the owner's job runs once the worker has left
# Either way the signalled worker hands its cell's state to the spare, leaves and exits 0 (its
# job ends COMPLETED), and the run finishes on the spare. Skips (77) with the reason where Slurm
# cannot start (not root, no slurm-wlm or munge, daemons that do not come up).
# Usage: slurm_handover.sh BINDIR [scancel|preempt]
set -u
. "$(dirname "$0")/ctl_lib.sh" "$1" "sl"
mode=${2:-scancel}
case $mode in scancel | preempt) ;; *) echo "unknown mode $mode"; exit 2 ;; esac
sbatch_script="$(cd "$(dirname "$0")/../../ops/slurm" && pwd)/shoal-worker.sbatch"
bindir=$(cd "$bindir" && pwd) # the jobs run in another directory
bin="$bindir/shoalctl"
for c in slurmctld slurmd munged mungekey sbatch scancel squeue sinfo scontrol; do
    command -v $c >/dev/null || { echo "$c not found (apt-get install slurm-wlm munge): skip"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "slurmd must run as root to start jobs: skip"; exit 77; }
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
export SHOAL_INSECURE=1 # plaintext TCP on loopback (CURVE is another test's business)
note() { echo "$(date +%T.%3N) $*"; } # progress, for reading a failure against the logs

sl="$tmp/slurm"
mkdir -p "$sl/munge" "$sl/state" "$sl/spool" "$sl/log"
chmod 700 "$sl/munge"
chmod 755 "$tmp" "$sl" # munged's socket dir must be reachable
slurm_pids=()
slurm_cleanup() {
    # jobs first (their steps are slurmd's children, not ours), then the daemons
    scancel --full --signal=KILL 2>/dev/null
    poll_until 15 bash -c '[ -z "$(squeue -h 2>/dev/null)" ]'
    for p in "${slurm_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${slurm_pids[@]}"; do wait "$p" 2>/dev/null; done
    cleanup
}
trap slurm_cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT

mungekey --create --keyfile="$sl/munge/munge.key" >"$sl/log/mungekey.log" 2>&1 ||
    { echo "mungekey failed: $(cat "$sl/log/mungekey.log"): skip"; exit 77; }
munged --foreground --force --socket="$sl/munge/sock" --key-file="$sl/munge/munge.key" \
    --pid-file="$sl/munge/pid" --log-file="$sl/log/munged.log" --seed-file="$sl/munge/seed" \
    >"$sl/log/munged.out" 2>&1 &
slurm_pids+=($!)
poll_until 10 test -S "$sl/munge/sock" || { echo "munged did not start: $(tail -3 "$sl/log/munged.out"): skip"; exit 77; }

read -r ctld_port slurmd_port cport < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export SLURM_CONF="$sl/slurm.conf"
cat >"$SLURM_CONF" <<CONF
ClusterName=shoaltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sl/munge/sock
CredType=cred/munge
StateSaveLocation=$sl/state
SlurmdSpoolDir=$sl/spool
SlurmctldPidFile=$sl/slurmctld.pid
SlurmdPidFile=$sl/slurmd.pid
SlurmctldLogFile=$sl/log/slurmctld.log
SlurmdLogFile=$sl/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=30
NodeName=shoalnode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=4 RealMemory=1000 State=UNKNOWN
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
PartitionName=donated Nodes=shoalnode Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=owner Nodes=shoalnode MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF
slurmctld -D -i -f "$SLURM_CONF" >"$sl/log/slurmctld.out" 2>&1 &
slurm_pids+=($!)
slurmd -D -N shoalnode -f "$SLURM_CONF" >"$sl/log/slurmd.out" 2>&1 &
slurm_pids+=($!)
node_idle() { sinfo -h -n shoalnode -o %t 2>/dev/null | grep -q idle; }
poll_until 30 node_idle || {
    echo "Slurm did not come up: $(tail -3 "$sl/log/slurmctld.out" "$sl/log/slurmd.out"): skip"
    exit 77
}

"$bindir/shoal-coordinator" --state-dir "$tmp/coord" --listen "tcp://127.0.0.1:$cport" \
    --control "$SHOAL_CONTROL" >"$tmp/coord.log" 2>&1 &
pids+=($!)

# submit NAME CPUS: one worker job in partition donated; prints its job id
submit() {
    SHOAL_COORDINATOR="tcp://127.0.0.1:$cport" SHOAL_WORKER="$bindir/shoal-worker" \
        SHOAL_WORKER_NAME="$1" SHOAL_STATE_BASE="$tmp" SHOAL_GRACE_SECONDS=10 \
        SHOAL_WORKER_ARGS="--device cpu --threads 1" \
        sbatch --parsable --partition=donated --cpus-per-task="$2" --output="$tmp/$1.out" \
        --chdir="$tmp" "$sbatch_script"
}
workers_json() { "$bin" workers --json 2>/dev/null; }
n_registered() {
    workers_json | python3 -c \
        "import json,sys; w=json.load(sys.stdin)['workers']; sys.exit(0 if len(w) >= $1 else 1)"
}
n_running() { [ "$(squeue -h -t RUNNING -o %i | wc -l)" -eq "$1" ]; }
declare -A job
if [ $mode = scancel ]; then
    job[sl1]=$(submit sl1 1) || err "sbatch sl1 failed"
    job[sl2]=$(submit sl2 1) || err "sbatch sl2 failed"
    poll_until 30 n_running 2 || err "the two jobs did not start: $(squeue 2>&1)"
    poll_until 30 n_registered 2 || err "the 2 Slurm workers did not register: $(cat "$tmp"/sl*.out)"
else
    # the cell's worker fills the node (4 CPUs), so that any owner job must preempt it
    job[sl1]=$(submit sl1 4) || err "sbatch sl1 failed"
    poll_until 30 n_running 1 || err "the job did not start: $(squeue 2>&1)"
    poll_until 30 n_registered 1 || err "the Slurm worker did not register: $(cat "$tmp"/sl1.out)"
fi

cat >"$tmp/run.yaml" <<YAML
name: sl
model:
  preset: tiny
data:
  files: [/usr/share/games/fortunes]
train:
  steps: 200
  global_batch: 2
  seq_len: 16
  lr: 1e-3
checkpoint:
  every_steps: 1000
parallel:
  data_parallel: 1
YAML
expect 0 submit "$tmp/run.yaml"
note "run submitted"
if [ $mode = preempt ]; then
    # the spare, outside Slurm, registers once sl1 holds the cell
    holds_cell() { workers_json | grep -q '"cell"'; }
    poll_until 60 holds_cell || err "sl1 holds no cell"
    "$bindir/shoal-worker" --coordinator "tcp://127.0.0.1:$cport" --name sl2 \
        --state-dir "$tmp/shoal-worker-sl2" --device cpu --threads 1 >"$tmp/sl2.out" 2>&1 &
    pids+=($!)
    poll_until 30 n_registered 2 || err "the spare did not register: $(cat "$tmp/sl2.out")"
fi
run_holds() {
    "$bin" status sl --json >"$tmp/poll" 2>/dev/null &&
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if ($1) else 1)" \
            "$tmp/poll"
}
holder() {
    workers_json | python3 -c '
import json, sys
print(next(x["name"] for x in json.load(sys.stdin)["workers"] if x.get("cell")))'
}
has_holder() { [ -n "$(holder)" ]; }
poll_until 60 has_holder || err "no worker holds the cell"
victim=$(holder)
[ -n "$victim" ] || { echo "--- coordinator"; tail -15 "$tmp/coord.log"; exit 1; }
case $victim in sl1) other=sl2 ;; *) other=sl1 ;; esac
poll_until 120 run_holds 'r["step"] >= 3' || err "the run did not reach step 3: $(cat "$tmp/poll")"
note "step 3 reached; $victim holds the cell"

if [ $mode = scancel ]; then
    # what Slurm does at preemption or the time limit, as the operator's command
    scancel --signal=TERM "${job[$victim]}" || err "scancel --signal=TERM ${job[$victim]} failed"
else
    [ "$victim" = sl1 ] || err "the cell is on $victim, not on the Slurm job's worker"
    owner=$(sbatch --parsable --partition=owner --cpus-per-task=1 --output="$tmp/owner.out" \
        --chdir="$tmp" --wrap "echo owner job ran") || err "sbatch to partition owner failed"
    owner_ran() { grep -q "owner job ran" "$tmp/owner.out" 2>/dev/null; }
fi
note "signalled"
job_gone() { [ -z "$(squeue -h -j "${job[$victim]}" 2>/dev/null)" ]; }
poll_until 30 job_gone || err "the signalled job ${job[$victim]} did not end: $(squeue 2>&1)"
grep -q "handed the state after step" "$tmp/$victim.out" ||
    err "the signalled worker did not hand its cell over: $(tail -5 "$tmp/$victim.out")"
grep -q "left .* after the stop request" "$tmp/$victim.out" ||
    err "the signalled worker did not leave cleanly: $(tail -5 "$tmp/$victim.out")"
# the worker left within the grace with exit 0, so even a preempted job ends COMPLETED
scontrol show job "${job[$victim]}" >"$tmp/job.txt" 2>&1
grep -q "JobState=COMPLETED" "$tmp/job.txt" && grep -q "ExitCode=0:0" "$tmp/job.txt" ||
    err "job ${job[$victim]} did not end COMPLETED with exit 0: $(grep -E 'JobState|ExitCode' "$tmp/job.txt")"
note "$victim's job ended"
poll_until 240 run_holds 'r["state"] == "done"' || err "run not done: $(cat "$tmp/poll")"
state_of() {
    workers_json | python3 -c '
import json, sys
print(next(x["state"] for x in json.load(sys.stdin)["workers"] if x["name"] == sys.argv[1]))' "$1"
}
[ "$(state_of "$victim")" = left ] || err "$victim is $(state_of "$victim"), expected left"
grep -q "step 200/200" "$tmp/$other.out" || err "$other did not train the last step: $(tail -3 "$tmp/$other.out")"
if [ $mode = scancel ]; then
    [ "$(squeue -h -j "${job[$other]}" -o %T 2>/dev/null)" = RUNNING ] ||
        err "the other job ${job[$other]} is not running any more"
else
    poll_until 30 owner_ran || err "the owner's job did not run: $(squeue 2>&1)"
fi
[ $fail -eq 0 ] || { echo "--- coordinator"; tail -15 "$tmp/coord.log"; echo "--- $victim"; tail -15 "$tmp/$victim.out"; }
exit $fail
