#!/usr/bin/env bash
# systemd_verify.sh: the unit files pass `systemd-analyze verify` without a single message about
# them (ExecStart pointed at the built binaries, copies in a temp dir), and keep the settings
# operators rely on (notify + watchdog, state dirs, hardening). Skips (77) without
# systemd-analyze. Usage: systemd_verify.sh SYSTEMD_SRC_DIR BINDIR
set -u
src="$1"
bindir="$2"
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze not found: skip"; exit 77; }
tmp=$(mktemp -d /tmp/shoal-sdv-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
err() { echo "FAIL: $*"; fail=1; }

for unit in shoal-coordinator.service shoal-worker@.service shoal-relay.service; do
    [ -f "$src/$unit" ] || { err "$src/$unit missing"; continue; }
    sed "s|/usr/local/bin/|$bindir/|g" "$src/$unit" >"$tmp/$unit"
done
# The template is verified as instances (a CPU and a CUDA one) and as itself.
cp "$tmp/shoal-worker@.service" "$tmp/shoal-worker@cpu0.service"
cp "$tmp/shoal-worker@.service" "$tmp/shoal-worker@cuda0.service"
for u in shoal-coordinator.service shoal-worker@.service shoal-worker@cpu0.service \
         shoal-worker@cuda0.service shoal-relay.service; do
    out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "./$u" 2>&1)
    rc=$?
    about=$(printf '%s\n' "$out" | grep -i "shoal" || true)
    [ $rc -eq 0 ] || err "systemd-analyze verify $u exited $rc: $out"
    [ -z "$about" ] || err "systemd-analyze verify $u: $about"
done

# The sysusers.d entry parses and creates user and group shoal (dry run: nothing is written).
if command -v systemd-sysusers >/dev/null 2>&1; then
    out=$(systemd-sysusers --dry-run "$(cd "$src" && pwd)/shoal.sysusers" 2>&1)
    rc=$?
    [ $rc -eq 0 ] || err "systemd-sysusers --dry-run shoal.sysusers exited $rc: $out"
    printf '%s\n' "$out" | grep -qi "not found\|unknown\|invalid" && err "sysusers: $out"
fi

# Settings the runbook and the daemons rely on.
need() { grep -Eq "^$2\$" "$src/$1" || err "$1 lacks '$2'"; }
for unit in shoal-coordinator.service shoal-worker@.service; do
    for line in 'Type=notify' 'WatchdogSec=[0-9]+s?' 'KillSignal=SIGTERM' 'Restart=on-failure' \
                'ProtectSystem=strict' 'ProtectHome=yes' 'NoNewPrivileges=yes' 'PrivateTmp=yes' \
                'ProtectKernelTunables=yes' 'ProtectControlGroups=yes' 'LockPersonality=yes' \
                'MemoryDenyWriteExecute=yes' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6.*' \
                'User=shoal' 'EnvironmentFile=-/etc/shoal/.*' 'ExecStart=/usr/local/bin/shoal-.*'; do
        need "$unit" "$line"
    done
done
need shoal-coordinator.service 'StateDirectory=shoal/coordinator'
# The relay: no notify (it has no start-up to wait for), restarted always (its workers wait on it).
for line in 'KillSignal=SIGTERM' 'Restart=always' 'ProtectSystem=strict' 'NoNewPrivileges=yes' \
            'User=shoal' 'RuntimeDirectory=shoal' 'EnvironmentFile=-/etc/shoal/relay.env' \
            'ExecStart=/usr/local/bin/shoal-worker relay .*--listen ipc:///run/shoal/relay.sock.*'; do
    need shoal-relay.service "$line"
done
need shoal-worker@.service 'StateDirectory=shoal/worker-%i'
# The stop timeout must exceed the worker's SIGTERM grace period (shoal-worker --help).
grace=$(timeout 5 "$bindir/shoal-worker" --coordinator tcp://127.0.0.1:1 --help 2>&1 | sed -n 's/.*--grace-seconds.*(\([0-9]*\)).*/\1/p' | head -1)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s*$/\1/p' "$src/shoal-worker@.service")
[ -n "$stop" ] || err "shoal-worker@.service: no TimeoutStopSec in seconds"
if [ -n "$grace" ] && [ -n "$stop" ] && [ "$stop" -le "$grace" ]; then
    err "TimeoutStopSec=$stop is not above the worker's grace period ($grace s)"
fi

[ $fail -eq 0 ] && echo "systemd units: verify clean, settings present (worker grace ${grace:-?} s < stop ${stop:-?} s)"
exit $fail
