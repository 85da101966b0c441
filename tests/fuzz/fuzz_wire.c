/* fuzz_wire: one ZeroMQ payload through wire_decode (protobuf Envelope unpack, the bounds and
 * body/type checks of every message kind), as the coordinator, the workers and shoalctl receive
 * it; an accepted assignment then goes through the worker's decode path (sess_plan). Invariants:
 * an envelope wire_decode accepted packs again (wire_check agrees with itself) and the packed
 * bytes decode again. */
#include "fuzz_util.h"
#include "sess_plan.h"
#include "wire.h"

static void s_noop(const Shoal__Envelope *env, void *ctx)
{
    (void)env;
    (void)ctx;
}

static void s_on_envelope(const Shoal__Envelope *env, void *ctx)
{
    (void)ctx;
    uint8_t *buf = NULL;
    size_t len = 0;
    FUZZ_ASSERT(wire_pack(env, &buf, &len) == SHOAL_OK);
    if (len > 0 && wire_decode(buf, len, s_noop, NULL) != SHOAL_OK) {
        fprintf(stderr, "repacked envelope refused: %s; its %zu bytes:", shoal_errmsg(), len);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", buf[i]);
        fprintf(stderr, "\n");
        FUZZ_ASSERT(!"an accepted envelope, packed again, is accepted again");
    }
    free(buf);
    if (env->body_case == SHOAL__ENVELOPE__BODY_ASSIGNMENT) {
        sess_plan_t *plan = NULL;
        const char *why = NULL;
        if (sess_plan_from_assignment(env, "w1", &plan, &why) == SHOAL_OK)
            FUZZ_ASSERT(plan != NULL && why == NULL);
        else
            FUZZ_ASSERT(plan == NULL && why != NULL);
        sess_plan_destroy(&plan);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)wire_decode(data, size, s_on_envelope, NULL);
    return 0;
}
