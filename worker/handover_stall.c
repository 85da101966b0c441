/* handover_stall.c: shoal-worker-attack only: a hand-over giver (or taker) that stalls after the
 * header, so that a test can kill it mid-transfer and check that the newer plan aborts the
 * taker's wait (tests/ops/handover_abort.sh), or abort the taker mid-transfer and check that the
 * giver stops waiting at once (tests/ops/handover_giver_abort.sh). */
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"
#include "handover_stall.h"
#include "numparse.h"

/* The value of `name` into *ms (0 when unset); -1 for a bad value (printed). */
static int s_stall_from_env(const char *name, int *ms)
{
    const char *v = getenv(name);
    *ms = 0;
    if (!v || !v[0])
        return 0;
    if (numparse_int(v, 1, 3600000, ms) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker-attack: %s must be 1..3600000\n", name);
        return -1;
    }
    fprintf(stderr, "shoal-worker-attack: %s: hand-overs stall %d ms after the header\n", name,
            *ms);
    return 0;
}

int handover_stall_install_from_env(void)
{
    int give_ms, take_ms;
    if (s_stall_from_env("SHOAL_HANDOVER_STALL_MS", &give_ms) != 0 ||
        s_stall_from_env("SHOAL_HANDOVER_TAKE_STALL_MS", &take_ms) != 0)
        return -1;
    daemon_set_handover_stall_ms(give_ms);
    daemon_set_handover_take_stall_ms(take_ms);
    return 0;
}
