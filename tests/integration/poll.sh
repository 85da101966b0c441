# poll.sh: waiting on conditions against deadlines, for the shell tests (sourced by lib.sh and
# by the ops and worker scripts). A test waits for what must happen, never for a fixed time: a
# slow machine makes a wait longer, never a correct program fail.

# poll_until SECONDS CMD...: runs CMD (stderr discarded) every 0.1 s until it succeeds
# (returns 0) or SECONDS have passed (returns 1).
poll_until() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    until "$@" 2>/dev/null; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

# poll_while SECONDS CMD...: CMD must succeed at every poll (every 0.1 s) for SECONDS; returns 1
# at the first poll where it does not. For "nothing more happens" checks.
poll_while() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        "$@" 2>/dev/null || return 1
        sleep 0.1
    done
}
