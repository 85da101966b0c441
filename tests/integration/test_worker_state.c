/* test_worker_state: the trainer's packed state (worker daemon: peer broadcast and rollback):
 * round trip, rollback after a step, fresh init, rejection of foreign or damaged buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runspec.h"
#include "trainer.h"

static const char *s_data = "/usr/share/games/fortunes/fortunes";
/* the runs' checkpoint dir: a fresh one per process, so that concurrent runs of this test (two
 * build dirs, ctest -j) never share a path */
static char s_ckpt_dir[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_ckpt_dir, sizeof s_ckpt_dir, "/tmp/shoal-state-XXXXXX");
    return mkdtemp(s_ckpt_dir) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_ckpt_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static trainer_t *s_trainer(uint64_t data_seed)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: st\nmodel:\n  preset: tiny\ndata:\n  files:\n    - %s\n  seed: %llu\n"
             "train:\n  steps: 4\n  global_batch: 4\n  seq_len: 16\n  micro_batch: 2\n"
             "  lr: 3e-3\ncheckpoint:\n  dir: %s\n",
             s_data, (unsigned long long)data_seed, s_ckpt_dir);
    static runspec_t spec;
    assert_int_equal(runspec_load_string(yaml, "test", &spec), SHOAL_OK);
    trainer_t *t = NULL;
    assert_int_equal(trainer_new(&spec, spec.checkpoint_dir, &t), SHOAL_OK);
    trainer_init_fresh(t);
    return t;
}

static void s_step(trainer_t *t, int rank, int nranks)
{
    assert_int_equal(trainer_compute(t, rank, nranks), SHOAL_OK);
    assert_int_equal(trainer_apply(t, NULL), SHOAL_OK);
}

static int s_skip_without_data(void)
{
    return access(s_data, R_OK) != 0;
}

static void test_round_trip_and_rollback(void **state)
{
    (void)state;
    if (s_skip_without_data())
        skip();
    trainer_t *a = s_trainer(1), *b = s_trainer(1);
    s_step(a, 0, 1);
    const size_t n = trainer_state_bytes(a);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    trainer_state_pack(a, buf);
    assert_int_equal(trainer_state_step(buf, n), 1);
    /* b (fresh) takes a's state: identical parameters and moments, same next step */
    assert_int_equal(trainer_state_unpack(b, buf, n), SHOAL_OK);
    int64_t np = 0;
    const float *pa = trainer_params(a, &np), *pb = trainer_params(b, NULL);
    assert_memory_equal(pa, pb, sizeof(float) * (size_t)np);
    assert_memory_equal(trainer_adam_m(a), trainer_adam_m(b), sizeof(float) * (size_t)np);
    assert_memory_equal(trainer_adam_v(a), trainer_adam_v(b), sizeof(float) * (size_t)np);
    assert_int_equal(trainer_next_step(b), 1);
    /* both train step 2: bitwise the same (the state carries Adam's t as well) */
    s_step(a, 0, 1);
    s_step(b, 0, 1);
    assert_memory_equal(trainer_params(a, NULL), trainer_params(b, NULL), sizeof(float) * (size_t)np);
    /* rollback: a goes back to step 1 and trains step 2 again to the same bits */
    float *after2 = malloc(sizeof(float) * (size_t)np);
    memcpy(after2, trainer_params(a, NULL), sizeof(float) * (size_t)np);
    assert_int_equal(trainer_state_unpack(a, buf, n), SHOAL_OK);
    assert_int_equal(trainer_next_step(a), 1);
    s_step(a, 0, 1);
    assert_memory_equal(trainer_params(a, NULL), after2, sizeof(float) * (size_t)np);
    /* fresh init is the same as another fresh trainer's */
    trainer_init_fresh(a);
    trainer_t *c = s_trainer(1);
    assert_int_equal(trainer_next_step(a), 0);
    assert_memory_equal(trainer_params(a, NULL), trainer_params(c, NULL), sizeof(float) * (size_t)np);
    free(after2);
    free(buf);
    trainer_destroy(&a);
    trainer_destroy(&b);
    trainer_destroy(&c);
}

static void test_rejects_foreign_state(void **state)
{
    (void)state;
    if (s_skip_without_data())
        skip();
    trainer_t *a = s_trainer(1), *other = s_trainer(2);
    s_step(a, 0, 1);
    const size_t n = trainer_state_bytes(a);
    uint8_t *buf = malloc(n);
    trainer_state_pack(a, buf);
    int64_t np = 0;
    const float *params = trainer_params(other, &np);
    float *before = malloc(sizeof(float) * (size_t)np);
    memcpy(before, params, sizeof(float) * (size_t)np);
    /* another data order, a truncated buffer, a bad magic, an out-of-range step: refused and
     * the trainer is left as it was */
    assert_int_equal(trainer_state_unpack(other, buf, n), SHOAL_ERR_FORMAT);
    assert_int_equal(trainer_state_unpack(a, buf, n - 1), SHOAL_ERR_FORMAT);
    assert_int_equal(trainer_state_unpack(a, NULL, n), SHOAL_ERR_FORMAT);
    buf[0] ^= 0xff;
    assert_int_equal(trainer_state_step(buf, n), -1);
    assert_int_equal(trainer_state_unpack(a, buf, n), SHOAL_ERR_FORMAT);
    buf[0] ^= 0xff;
    int64_t bad_step = 99;
    memcpy(buf + 16, &bad_step, sizeof bad_step); /* next_step field */
    assert_int_equal(trainer_state_unpack(a, buf, n), SHOAL_ERR_FORMAT);
    assert_int_equal(trainer_state_step(buf, 8), -1);
    assert_memory_equal(trainer_params(other, NULL), before, sizeof(float) * (size_t)np);
    assert_int_equal(trainer_next_step(a), 1);
    char path[96], want[96];
    assert_int_equal(trainer_checkpoint_path(a, 12, path, sizeof path), SHOAL_OK);
    snprintf(want, sizeof want, "%s/step-00000012", s_ckpt_dir);
    assert_string_equal(path, want);
    assert_int_equal(trainer_checkpoint_path(a, 12, path, 10), SHOAL_ERR_INVALID);
    free(before);
    free(buf);
    trainer_destroy(&a);
    trainer_destroy(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_rollback),
        cmocka_unit_test(test_rejects_foreign_state),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
