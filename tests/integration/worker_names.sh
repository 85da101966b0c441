#!/usr/bin/env bash
# worker_names.sh: worker ids are w1, w2, ... in registration order, and shoalctl's WORKER
# argument is an id or a name; so no worker may be NAMED like an id (w<digits>), or
# `shoalctl drain w1` could hit the worker named w1 while meaning id w1 (it did: the worker
# NAMED w2). A worker started with --name w7 is refused: it exits non-zero with the reason
# naming the rule, and the coordinator lists no such worker. Then drain by id and drain by name
# each hit the intended worker, also where one worker's id is a prefix of another's name.
TEST_NAME=worker_names
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/chaos_lib.sh"

start_coord
start_worker w7
P=${WPID[w7]}
wait_until 20 "worker w7 exits" bash -c "! kill -0 $P"
wait "$P"
RC=$?
unset "WPID[w7]"
note "worker --name w7 exited with $RC: $(grep -i refused "$T/w7.log" | head -1)"
[ "$RC" != 0 ] || fail "worker --name w7 exited 0"
grep -qi "refused" "$T/w7.log" || fail "w7's log does not say the registration was refused"
# The reason names the rule: the id form w<digits> (however it is spelled) or "worker id".
grep -Eqi 'w<|w\[0-9\]|worker id|an id|id form' "$T/w7.log" ||
    fail "w7's log does not name the rule against id-like names: $(grep -i refused "$T/w7.log")"
[ "$(ctl workers --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["workers"]))')" = 0 ] ||
    fail "the coordinator lists a worker after refusing w7: $(ctl workers)"

# Registration order b, w1x, a: ids w1, w2, w3 (id w1 is a prefix of the name w1x).
for w in b w1x a; do
    start_worker $w
    wait_until 10 "worker $w active" worker_state_is $w active
done
ids=$(ctl workers --json | python3 -c '
import json, sys
print(" ".join(w["name"] + "=" + w["id"] for w in json.load(sys.stdin)["workers"]))')
note "workers: $ids"
declare -A ID
for kv in $ids; do ID[${kv%%=*}]=${kv#*=}; done

# states_are A B W1X: the states of a, b and w1x.
states_are() { [ "$(worker_state a) $(worker_state b) $(worker_state w1x)" = "$*" ]; }

# By id: the worker with id ID[a] (w3 here), and nobody else.
ctl drain "${ID[a]}" > "$T/drain.out" || fail "drain ${ID[a]}: $(cat "$T/drain.out")"
wait_until 10 "a drained by its id ${ID[a]}" states_are drained active active
ctl undrain a > /dev/null || fail "undrain a"
wait_until 10 "a active again" states_are active active active
# By id w1 (= b): not w1x.
ctl drain "${ID[b]}" > /dev/null || fail "drain ${ID[b]}"
wait_until 10 "b drained by its id ${ID[b]}" states_are active drained active
ctl undrain "${ID[b]}" > /dev/null || fail "undrain ${ID[b]}"
wait_until 10 "b active again" states_are active active active
# By name: w1x, not the worker with id w1.
ctl drain w1x > /dev/null || fail "drain w1x"
wait_until 10 "w1x drained by its name" states_are active active drained
ctl undrain w1x > /dev/null || fail "undrain w1x"
wait_until 10 "w1x active again" states_are active active active
# The refused name is nobody: drain w7 finds no worker (exit 1) and drains nothing.
ctl drain w7 > "$T/drain7.out" 2>&1 && fail "drain w7 succeeded: $(cat "$T/drain7.out")"
states_are active active active || fail "drain w7 changed a worker: $(ctl workers)"
finish
