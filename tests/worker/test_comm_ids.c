/* test_comm_ids: the table of relayed NCCL unique ids (worker/comm_ids.h): put then wait, wait
 * then put from another thread, the timeout naming the group, malformed groups and sizes,
 * replacement, forgetting old generations (late ids dropped), cancel, and a full table keeping
 * the newest generations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "comm_ids.h"
#include "wire.h"

static void s_expect_msg(const char *want)
{
    if (!strstr(shoal_errmsg(), want))
        fail_msg("message '%s' lacks '%s'", shoal_errmsg(), want);
}

static void s_fill(uint8_t *id, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        id[i] = (uint8_t)(seed * 31 + i);
}

static void test_group_names(void **state)
{
    (void)state;
    char g[WIRE_COMM_GROUP_MAX];
    wire_comm_group_format(g, sizeof g, 18446744073709551615ull, 4294967295u);
    assert_string_equal(g, "18446744073709551615/4294967295");
    uint64_t gen = 0;
    uint32_t tag = 0;
    assert_int_equal(wire_comm_group_parse(g, &gen, &tag), SHOAL_OK);
    assert_true(gen == 18446744073709551615ull && tag == 4294967295u);
    assert_int_equal(wire_comm_group_parse("3/17", &gen, &tag), SHOAL_OK);
    assert_true(gen == 3 && tag == 17);
    const char *bad[] = {"", "3", "3/", "/17", "3/17/1", "3 /17", "3/-1", "-3/1", "3/4294967296",
                         "x/1", "3/0x1", "111111111111111111111111111111111/1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (wire_comm_group_parse(bad[i], &gen, &tag) != SHOAL_ERR_FORMAT)
            fail_msg("group '%s' accepted", bad[i]);
    assert_int_equal(wire_comm_group_parse(NULL, &gen, &tag), SHOAL_ERR_FORMAT);
}

static void test_put_wait(void **state)
{
    (void)state;
    comm_ids_t *t = NULL;
    assert_int_equal(comm_ids_new(&t), SHOAL_OK);
    uint8_t id[128], got[256];
    size_t len = 0;
    s_fill(id, sizeof id, 1);
    assert_int_equal(comm_ids_put(t, "3/17", id, sizeof id), SHOAL_OK);
    assert_int_equal(comm_ids_wait(t, 3, 17, 10, got, sizeof got, &len), SHOAL_OK);
    assert_int_equal(len, 128);
    assert_memory_equal(got, id, 128);
    /* the id stays for every waiter of the group; a new one replaces it */
    assert_int_equal(comm_ids_wait(t, 3, 17, 10, got, sizeof got, &len), SHOAL_OK);
    s_fill(id, sizeof id, 2);
    assert_int_equal(comm_ids_put(t, "3/17", id, 100), SHOAL_OK);
    assert_int_equal(comm_ids_wait(t, 3, 17, 10, got, sizeof got, &len), SHOAL_OK);
    assert_int_equal(len, 100);
    assert_memory_equal(got, id, 100);
    assert_int_equal(comm_ids_count(t), 1);
    /* another group or generation is not this one: a timeout that names it */
    int64_t t0 = clock_mono_ms();
    assert_int_equal(comm_ids_wait(t, 3, 18, 150, got, sizeof got, &len), SHOAL_ERR_TIMEOUT);
    assert_true(clock_mono_ms() - t0 >= 140);
    s_expect_msg("no CommId for group 3/18 within 150 ms");
    assert_int_equal(comm_ids_wait(t, 4, 17, 20, got, sizeof got, &len), SHOAL_ERR_TIMEOUT);
    /* room too small */
    assert_int_equal(comm_ids_wait(t, 3, 17, 10, got, 99, &len), SHOAL_ERR_INVALID);
    /* malformed input never lands */
    assert_int_equal(comm_ids_put(t, "3-17", id, 128), SHOAL_ERR_FORMAT);
    assert_int_equal(comm_ids_put(t, "3/19", id, 0), SHOAL_ERR_INVALID);
    assert_int_equal(comm_ids_put(t, "3/19", id, COMM_IDS_MAX_BYTES + 1), SHOAL_ERR_INVALID);
    assert_int_equal(comm_ids_put(t, "3/19", NULL, 5), SHOAL_ERR_INVALID);
    assert_int_equal(comm_ids_count(t), 1);
    comm_ids_destroy(&t);
    assert_null(t);
    comm_ids_destroy(&t);
}

typedef struct {
    comm_ids_t *t;
    int delay_ms;
    int cancel; /* 1: cancel instead of put */
} s_later_t;

static void *s_later(void *arg)
{
    s_later_t *l = arg;
    struct timespec ts = {0, (long)l->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    if (l->cancel) {
        comm_ids_cancel(l->t);
    } else {
        uint8_t id[128];
        s_fill(id, sizeof id, 5);
        (void)comm_ids_put(l->t, "9/2", id, sizeof id);
    }
    return NULL;
}

/* The training thread waits first; the session thread's put wakes it long before the timeout. */
static void test_wait_then_put(void **state)
{
    (void)state;
    comm_ids_t *t = NULL;
    assert_int_equal(comm_ids_new(&t), SHOAL_OK);
    s_later_t l = {t, 100, 0};
    pthread_t th;
    pthread_create(&th, NULL, s_later, &l);
    uint8_t got[128], want[128];
    size_t len = 0;
    int64_t t0 = clock_mono_ms();
    assert_int_equal(comm_ids_wait(t, 9, 2, 10000, got, sizeof got, &len), SHOAL_OK);
    assert_true(clock_mono_ms() - t0 < 5000);
    pthread_join(th, NULL);
    s_fill(want, sizeof want, 5);
    assert_memory_equal(got, want, 128);
    /* a cancel ends a wait on a group nobody will send */
    l = (s_later_t){t, 100, 1};
    pthread_create(&th, NULL, s_later, &l);
    t0 = clock_mono_ms();
    assert_int_equal(comm_ids_wait(t, 9, 3, 10000, got, sizeof got, &len), SHOAL_ERR_ABORTED);
    assert_true(clock_mono_ms() - t0 < 5000);
    pthread_join(th, NULL);
    /* later waits are not cancelled */
    assert_int_equal(comm_ids_wait(t, 9, 2, 10, got, sizeof got, &len), SHOAL_OK);
    comm_ids_destroy(&t);
}

static void test_generations(void **state)
{
    (void)state;
    comm_ids_t *t = NULL;
    assert_int_equal(comm_ids_new(&t), SHOAL_OK);
    uint8_t id[128], got[128];
    size_t len;
    s_fill(id, sizeof id, 7);
    assert_int_equal(comm_ids_put(t, "1/0", id, 128), SHOAL_OK);
    assert_int_equal(comm_ids_put(t, "2/0", id, 128), SHOAL_OK);
    comm_ids_forget_before(t, 2);
    assert_int_equal(comm_ids_count(t), 1);
    assert_int_equal(comm_ids_wait(t, 1, 0, 10, got, sizeof got, &len), SHOAL_ERR_TIMEOUT);
    /* a late id of a forgotten generation is dropped, not an error */
    assert_int_equal(comm_ids_put(t, "1/1", id, 128), SHOAL_OK);
    assert_int_equal(comm_ids_count(t), 1);
    /* a full table keeps the newest generations */
    char g[WIRE_COMM_GROUP_MAX];
    for (uint32_t k = 0; k < COMM_IDS_MAX + 10; k++) {
        wire_comm_group_format(g, sizeof g, 10 + k / 4, k % 4);
        assert_int_equal(comm_ids_put(t, g, id, 128), SHOAL_OK);
    }
    assert_int_equal(comm_ids_count(t), COMM_IDS_MAX);
    const uint32_t last = COMM_IDS_MAX + 9;
    assert_int_equal(comm_ids_wait(t, 10 + last / 4, last % 4, 10, got, sizeof got, &len),
                     SHOAL_OK);
    assert_int_equal(comm_ids_wait(t, 2, 0, 10, got, sizeof got, &len), SHOAL_ERR_TIMEOUT);
    /* another run: generations start again, nothing of the old run is left */
    comm_ids_reset(t);
    assert_int_equal(comm_ids_count(t), 0);
    assert_int_equal(comm_ids_put(t, "1/1", id, 128), SHOAL_OK);
    assert_int_equal(comm_ids_wait(t, 1, 1, 10, got, sizeof got, &len), SHOAL_OK);
    comm_ids_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_names),
        cmocka_unit_test(test_put_wait),
        cmocka_unit_test(test_wait_then_put),
        cmocka_unit_test(test_generations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
