#!/usr/bin/env bash
# runbooks.sh: ops/RUNBOOKS.md's rehearsals run as written: the setup block and every block after
# a "Rehearsal" line, in order, in one shell (a coordinator and workers started by hand), with
# only the binaries' directory, the scratch dir and the port substituted. Checks what each
# runbook says to look for: a second institution's worker takes a cell; a host's drained workers
# leave the plan while the run steps on; after a SIGKILL the coordinator restarts from its state
# dir, the run continues and the ledger verifies; new workers take the cells of drained old
# ones and write the next checkpoint; the plot of the moved run holds pixels of both curves'
# colours and of the join and drain markers (png_colours.py). CURVE throughout: keys
# made with shoalctl keys new, an allow-list reloaded with SIGHUP.
# Usage: runbooks.sh BINDIR RUNBOOKS.md
set -u
bindir=$(cd "$1" && pwd)
book=$2
"$bindir/shoal-worker" --help 2>&1 | grep -q -- "--coordinator" || { echo "no daemon mode: skip"; exit 77; }
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
tmp=$(mktemp -d /tmp/shoal-rb-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$(dirname "$0")/md_sh_blocks.py" "$book" --after Rehearsal \
    'export PATH=$PWD/build/bin:$PATH' "export PATH=$bindir:\$PATH" \
    /tmp/rehearsal "$tmp/r" 127.0.0.1:7471 "127.0.0.1:$port" >"$tmp/script.sh"
grep -q "export PATH=$bindir" "$tmp/script.sh" || { echo "FAIL: no setup block in $book"; exit 1; }
(cd "$tmp" && timeout 300 bash "$tmp/script.sh") >"$tmp/out" 2>&1
(cd "$tmp/r" 2>/dev/null && kill $(cat *.pid) 2>/dev/null)
sleep 2
fail=0
err() { echo "FAIL: $*"; fail=1; }
has() { grep -Eq "$1" "$tmp/out" || err "$2"; }
has "^submitted run r1 \(rehearsal\)" "setup: the run was not submitted"
has "^w[0-9]+ +uni-x-cpu0 +active +r1 +r[0-9]/s0/e0" "institution: uni-x-cpu0 holds no cell"
has "^ +[0-9]+ .* plan .*w3 joins" "institution: no plan took w3 in"
has "registered as joining \\(name uni-x-cpu0, host [^,]+, uni-x[,)]" "institution: not registered under uni-x"
has "^w[0-9]+ +old-cpu1 +drained" "drain: old-cpu1 not drained"
has "undrained: worker w[0-9]+ is active" "drain: undrain refused"
has "coordinator unreachable" "coordinator loss: status did not report the coordinator gone"
has "^run rehearsal: ledger intact" "coordinator loss: the ledger does not verify"
has "^w[0-9]+ +new-cpu1 +active +r1 +r[0-9]/s0/e0" "move: new-cpu1 holds no cell"
has "cell r[0-9]/s0/e0 written by w[45]," "move: no checkpoint written by the new workers"
has "^plotted [0-9]+ step\(s\) and [1-9][0-9]* plan change\(s\) to move.png" "move: no plot"
[ -s "$tmp/r/move.png" ] || err "move.png missing"
# the plot of the moved run: both curves, the joins (green) and the drains (purple) drawn
python3 "$(dirname "$0")/png_colours.py" "$tmp/r/move.png" 1f77b4 ff7f0e 2ca02c 9467bd >"$tmp/colours" &&
    awk '{ n[$1] = $2 } END { exit !(n["1f77b4"] > 500 && n["ff7f0e"] > 500 && n["2ca02c"] > 100 && n["9467bd"] > 100) }' \
        "$tmp/colours" || err "move.png lacks a curve or a marker: $(cat "$tmp/colours" 2>&1)"
# the status after the restart is running again at a later step than before the kill
python3 - "$tmp/out" <<'PY' || err "coordinator loss: the run did not go on after the restart"
import re, sys
steps = [int(m.group(1)) for m in re.finditer(r"^r1 +rehearsal +running +(\d+)/400", open(sys.argv[1]).read(), re.M)]
assert len(steps) >= 3 and steps[-1] > steps[-2], steps
PY
[ $fail -eq 0 ] && { echo "runbooks: all rehearsals passed"; rm -rf "$tmp"; }
[ $fail -eq 0 ] || { cat "$tmp/out"; echo "(kept $tmp)"; }
exit $fail
