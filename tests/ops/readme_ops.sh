#!/usr/bin/env bash
# readme_ops.sh: the README's operations section ("## Running a cluster: coordinator, workers,
# shoalctl" and its subsections) run as a new user would: every ```sh block, in order, in one
# shell in a scratch dir, on 127.0.0.1. Blocks: `shoalctl up` (three runs), the CURVE keys and
# coord.yaml, the coordinator + a worker + shoalctl with an operator key over TCP, a second
# institution's worker admitted by a reloaded allow-list, and history / plot / release / replay.
# Substitutions, and nothing else (md_sh_blocks.py, shared with runbooks.sh):
# - `build/bin/` -> the binaries' directory, which is also put on the PATH;
# - `examples/` -> copies of examples/tiny-fortunes.yaml and tiny-pipeline-experts.yaml cut to
#   6 steps of 32 tokens (short runs; same names); the embedded default of
#   `up --workers 3` gets the short tiny-fortunes copy (the embedded run is that file);
# - host coord.example -> 127.0.0.1, ports 7400 / 7401 -> free ports, /var/lib/shoal/ -> the
#   scratch dir;
# - the daemons' lines get `>NAME.log 2>&1 & echo $! >NAME.pid` (the text runs each in its own
#   terminal); `shoalctl submit` first waits until the coordinator answers, and the
#   `shoalctl workers` after gpu4's start until gpu4 has registered (about a second);
# - `pidof shoal-coordinator` is the test's own coordinator (other coordinators may run here);
# - before the publishing block, a wait until the run is done (the text says "once ... done").
# Not run: the systemd units (tests `systemd_units_verify`), a coordinator on another host.
# Checks what the text says each does: up ends three runs and copies their models; key secrets
# are 0600; status shows the run, workers --json lists gpu3, verify passes, experts answers;
# the reload reads gpu4's key and gpu4 registers under uni-b; history lists the
# steps; plot writes a PNG with both curves (png_colours.py); release writes the weights, config
# and model card; replay reproduces the bytes; the release plots too.
# Usage: readme_ops.sh BINDIR README.md
set -u
bindir=$(cd "$1" && pwd)
readme=$2
src=$(cd "$(dirname "$readme")" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
"$bindir/shoal-worker" --help 2>&1 | grep -q -- "--coordinator" || { echo "no daemon mode: skip"; exit 77; }
[ -r /usr/share/games/fortunes ] || { echo "no /usr/share/games/fortunes: skip"; exit 77; }
tmp=$(mktemp -d /tmp/shoal-readme-XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
cport=$(free_port)
mkdir -p "$tmp/examples"
for f in tiny-fortunes tiny-pipeline-experts; do
    sed -E 's/^  steps: 300/  steps: 6/; s/^  seq_len: 128.*/  seq_len: 32/; s/^  warmup_steps: 30/  warmup_steps: 2/; s/every_steps: 100/every_steps: 3/' \
        "$src/examples/$f.yaml" >"$tmp/examples/$f.yaml"
    grep -q '^  steps: 6' "$tmp/examples/$f.yaml" || { echo "FAIL: examples/$f.yaml not cut short"; exit 1; }
done
cat >"$tmp/script.sh" <<EOF
. "$here/../integration/poll.sh"
export PATH=$bindir:\$PATH
pidof() { cat $tmp/coord.pid; }
trap 'echo "COMMAND FAILED (\$?): \$BASH_COMMAND"' ERR
before_block() {    # 5: the publishing block, once the run is done
    [ "\$1" = 5 ] && poll_until 300 sh -c 'shoalctl status tiny-fortunes | grep -q " done "'
    return 0
}
EOF
daemon() { echo "$1 >$2.log 2>&1 & echo \$! >$2.pid"; }
python3 "$here/md_sh_blocks.py" "$readme" --section "Running a cluster: coordinator, workers, shoalctl" \
    --hook before_block \
    "build/bin/" "$bindir/" \
    "up --workers 3  " "up --workers 3 examples/tiny-fortunes.yaml  " \
    "examples/" "$tmp/examples/" \
    "coord.example" "127.0.0.1" ":7400" ":$port" ":7401" ":$cport" \
    "/var/lib/shoal/" "$tmp/var/" \
    "--config coord.yaml" "$(daemon "--config coord.yaml" coord)" \
    "--keys keys/gpu3" "$(daemon "--keys keys/gpu3" gpu3)" \
    "--keys keys/gpu4" "$(daemon "--keys keys/gpu4" gpu4)" \
    "shoalctl submit" "poll_until 60 shoalctl status >/dev/null; shoalctl submit" \
    "shoalctl workers   " "poll_until 30 sh -c 'shoalctl workers | grep -q gpu4'; shoalctl workers   " \
    >>"$tmp/script.sh"
[ "$(grep -c '^echo "=== block' "$tmp/script.sh")" = 5 ] || { echo "FAIL: expected 5 sh blocks"; cat "$tmp/script.sh"; exit 1; }
(cd "$tmp" && timeout 900 bash "$tmp/script.sh") >"$tmp/out" 2>&1
(cd "$tmp" && kill $(cat ./*.pid) 2>/dev/null)
sleep 2
fail=0
err() { echo "FAIL: $*"; fail=1; }
has() { grep -Eq "$1" "$tmp/out" || err "$2"; }
grep "COMMAND FAILED" "$tmp/out" && err "a command of the README failed"
# up
sed -n '/^=== block 1 ===/,/^=== block 2 ===/p' "$tmp/out" >"$tmp/up.out"
[ "$(grep -c '^shoal up: run tiny-fortunes done' "$tmp/up.out")" = 2 ] || err "up: tiny-fortunes did not end twice"
grep -q "^shoal up: run tiny-pipeline-experts done" "$tmp/up.out" || err "up: the pipeline run did not end"
for r in tiny-fortunes tiny-pipeline-experts; do
    [ -s "$tmp/shoal-out/$r/model.safetensors" ] || err "up: no model in shoal-out/$r"
done
# keys
for k in coord gpu3 alice gpu4; do
    [ "$(stat -c %a "$tmp/keys/$k/key.secret" 2>/dev/null)" = 600 ] || err "keys/$k/key.secret is not 0600"
done
# services
has "^submitted run r[0-9]+ \(tiny-fortunes\)" "services: the run was not submitted"
has "^r[0-9]+ +tiny-fortunes +(pending|running|done)" "services: status does not show the run"
has '"name": ?"gpu3"' "services: workers --json does not list gpu3"
has "^run tiny-fortunes: ledger intact" "services: verify did not pass"
has "expert" "services: experts said nothing about experts"
# the reloaded allow-list
grep -q "allow-list allow_list: 2 worker key(s), 1 operator key(s)" "$tmp/coord.log" ||
    err "CURVE: the allow-list was not re-read with gpu4's key"
grep -q "registered .*name gpu4, .*uni-b" "$tmp/coord.log" || err "CURVE: gpu4 not registered under uni-b"
has "^w[0-9]+ +gpu4 " "CURVE: workers does not list gpu4"
# publishing
has "^ *6 " "history: no row for step 6"
has "^plotted [0-9]+ step\(s\) .* to run.png" "plot: no run.png"
python3 "$here/png_colours.py" "$tmp/run.png" 1f77b4 ff7f0e >"$tmp/colours" &&
    awk '{ n[$1] = $2 } END { exit !(n["1f77b4"] > 200 && n["ff7f0e"] > 200) }' "$tmp/colours" ||
    err "run.png lacks a curve: $(cat "$tmp/colours" 2>&1)"
for f in model.safetensors config.json README.md spec.yaml; do
    [ -s "$tmp/release/$f" ] || err "release: no $f"
done
has "identical" "replay: the weights were not reproduced byte for byte"
[ -s "$tmp/release.png" ] || err "plot of the release: no release.png"
[ $fail -eq 0 ] && { echo "readme_ops: the README's operations section works as written"; rm -rf "$tmp"; }
[ $fail -eq 0 ] || { cat "$tmp/out"; echo "(kept $tmp)"; }
exit $fail
