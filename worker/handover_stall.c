/* handover_stall.c: shoal-worker-attack only: a hand-over giver that stalls after the header,
 * so that a test can kill it mid-transfer and check that the newer plan aborts the taker's wait
 * (tests/ops/handover_abort.sh). */
#include <stdio.h>
#include <stdlib.h>

#include "daemon.h"
#include "handover_stall.h"
#include "numparse.h"

int handover_stall_install_from_env(void)
{
    const char *v = getenv("SHOAL_HANDOVER_STALL_MS");
    int ms;
    if (!v || !v[0])
        return 0;
    if (numparse_int(v, 1, 3600000, &ms) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker-attack: SHOAL_HANDOVER_STALL_MS must be 1..3600000\n");
        return -1;
    }
    fprintf(stderr, "shoal-worker-attack: hand-overs stall %d ms after the header\n", ms);
    daemon_set_handover_stall_ms(ms);
    return 0;
}
