/* test_comm_nccl_args: what the NCCL backend (worker/comm_nccl.h) does without a GPU, so a CUDA
 * build on a GPU-less machine checks it too: bad configurations refused before any CUDA call,
 * unique ids made (NCCL needs no GPU for that), a creation on a missing device an error naming
 * it (never a hang), the library versions named, NULL handles harmless. With a GPU the creation
 * case is skipped (test_nccl_comm covers it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "comm_nccl.h"
#include "device.h"

static void s_expect_msg(const char *want)
{
    if (!strstr(shoal_errmsg(), want))
        fail_msg("message '%s' lacks '%s'", shoal_errmsg(), want);
}

static void test_bad_config(void **state)
{
    (void)state;
    uint8_t id[COMM_NCCL_ID_BYTES] = {0};
    const comm_nccl_config_t ok = {.rank = 0, .nranks = 2, .id = id, .device = 0,
                                   .generation = 1, .group = 2, .timeout_ms = 1000};
    comm_nccl_config_t bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = ok;
    bad[0].rank = 2;
    bad[1].rank = -1;
    bad[2].nranks = 0;
    bad[3].id = NULL;
    bad[4].device = -1;
    bad[5].timeout_ms = 0;
    for (int i = 0; i < 6; i++) {
        comm_nccl_t *c = (comm_nccl_t *)&ok; /* must stay untouched */
        assert_int_equal(comm_nccl_new(&bad[i], &c), SHOAL_ERR_INVALID);
        assert_ptr_equal(c, (comm_nccl_t *)&ok);
        s_expect_msg("nccl comm: bad config");
    }
    comm_nccl_t *c = NULL;
    assert_int_equal(comm_nccl_new(NULL, &c), SHOAL_ERR_INVALID);
    assert_int_equal(comm_nccl_allreduce_sum_f32(NULL, NULL, 4), SHOAL_ERR_INVALID);
    comm_nccl_destroy(&c); /* NULL: nothing */
    comm_nccl_destroy(NULL);
    comm_nccl_abort(NULL);
}

static void test_ids_and_versions(void **state)
{
    (void)state;
    uint8_t a[COMM_NCCL_ID_BYTES], b[COMM_NCCL_ID_BYTES], zero[COMM_NCCL_ID_BYTES] = {0};
    assert_int_equal(comm_nccl_id_new(a), SHOAL_OK);
    assert_int_equal(comm_nccl_id_new(b), SHOAL_OK);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a); /* each group of each generation its own */
    char v[96];
    comm_nccl_versions(v, sizeof v);
    assert_true(strncmp(v, "NCCL 2.", 7) == 0);
    assert_non_null(strstr(v, ", CUDA runtime "));
}

/* No GPU here: creation fails at once, naming the device. */
static void test_no_device(void **state)
{
    (void)state;
    if (device_cuda_count() > 0)
        skip();
    uint8_t id[COMM_NCCL_ID_BYTES];
    assert_int_equal(comm_nccl_id_new(id), SHOAL_OK);
    comm_nccl_config_t cfg = {.rank = 0, .nranks = 1, .id = id, .device = 0,
                              .generation = 3, .group = 4, .timeout_ms = 5000};
    comm_nccl_t *c = NULL;
    assert_int_equal(comm_nccl_new(&cfg, &c), SHOAL_ERR_CUDA);
    assert_null(c);
    s_expect_msg("nccl init on group 4 gen 3: device 0: ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_ids_and_versions),
        cmocka_unit_test(test_no_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
