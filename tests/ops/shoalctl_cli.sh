#!/usr/bin/env bash
# shoalctl_cli.sh: shoalctl's exit codes without a coordinator: usage errors exit 2, an
# unreachable coordinator exits 1 within the timeout naming the endpoint, a bad spec exits 1
# with FILE:LINE:COLUMN before anything is sent. Usage: shoalctl_cli.sh BINDIR
set -u
bin="$1/shoalctl"
tmp=$(mktemp -d /tmp/shoal-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
err() { echo "FAIL: $*"; fail=1; }

# expect CODE ARGS...: runs shoalctl, checks the exit code; output in $tmp/out, $tmp/err
expect() {
    local want=$1; shift
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" -eq "$want" ] || err "shoalctl $* exited $got, expected $want: $(cat "$tmp/err")"
}

export SHOAL_CONTROL="ipc://$tmp/absent.sock"
expect 2
expect 2 bogus-verb
expect 2 status --bogus
expect 2 status a b
expect 2 submit
expect 2 submit a.yaml b.yaml
expect 2 drain
expect 2 undrain
expect 2 pause
expect 2 resume
expect 2 cancel
expect 2 events
expect 2 events r1 --limit 0
expect 2 events r1 --since -3
expect 2 verify
expect 2 plan
expect 2 --timeout
expect 2 --timeout 0 status
expect 2 status --timeout=abc
expect 2 up --workers 0
expect 2 up --workers 65
expect 2 up a.yaml b.yaml
grep -q "usage: shoalctl up" "$tmp/err" || err "usage error without the verb's usage"
expect 0 --help
grep -q "usage: shoalctl" "$tmp/out" || err "--help prints no usage"
expect 0 status --help
grep -q -- "--json" "$tmp/out" || err "status --help does not document --json"

# Unreachable: exit 1 within the timeout, naming the endpoint.
for verb in "status" "workers" "status --json" "drain w1" "undrain w1" "pause r1" "resume r1" \
            "cancel r1" "events r1" "verify r1" "plan r1"; do
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    expect 1 --timeout 0.4 $verb
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    [ "$ms" -lt 3000 ] || err "$verb took $ms ms against an absent coordinator"
    grep -q "unreachable at ipc://$tmp/absent.sock" "$tmp/err" || err "$verb: no clear message: $(cat "$tmp/err")"
    [ -s "$tmp/out" ] && err "$verb printed to stdout on failure"
done
# --control wins over $SHOAL_CONTROL; a TCP endpoint with nothing behind it times out too.
expect 1 --control tcp://127.0.0.1:9 --timeout 0.3 status
grep -q "tcp://127.0.0.1:9" "$tmp/err" || err "--control not used: $(cat "$tmp/err")"
expect 1 --control nonsense://x status
grep -q "nonsense://x" "$tmp/err" || err "bad endpoint not named: $(cat "$tmp/err")"

# A bad spec fails here, with its position, before any request.
printf 'name: bad\ntrain:\n  steps: many\n' >"$tmp/bad.yaml"
expect 1 --timeout 0.3 submit "$tmp/bad.yaml"
grep -q "$tmp/bad.yaml:3:10:" "$tmp/err" || err "no FILE:LINE:COLUMN: $(cat "$tmp/err")"
grep -q "unreachable" "$tmp/err" && err "contacted the coordinator with an invalid spec"
expect 1 submit "$tmp/missing.yaml"
grep -q "missing.yaml" "$tmp/err" || err "missing file not named"
expect 1 up "$tmp/bad.yaml"
grep -q "$tmp/bad.yaml:3:10:" "$tmp/err" || err "up: no FILE:LINE:COLUMN: $(cat "$tmp/err")"

[ $fail -eq 0 ] && echo "shoalctl_cli: all checks passed"
exit $fail
