/* test_store_ledger: RocksDB store (families, atomic synced batches, scans, reopen) and the
 * hash-chained ledger (chaining, staging, tamper detection), including reopen after the writer
 * was SIGKILLed in the middle of its writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"
#include "store.h"

static char s_dir[256];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/shoal-store-XXXXXX");
    assert_non_null(mkdtemp(s_dir));
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int s_count_fn(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (*(int *)ctx)++;
    return 0;
}

static void test_store_basics(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/nested/state", s_dir); /* parents created */
    store_t *st = NULL;
    assert_int_equal(store_open(dir, &st), SHOAL_OK);
    store_batch_t *b = store_batch_new(st);
    store_batch_put(b, STORE_CF_RUNS, "r1", "{\"a\":1}", 7);
    store_batch_put(b, STORE_CF_WORKERS, "w1", "x", 1);
    store_batch_put(b, STORE_CF_PLANS, "r1/00000000000000000001", "p1", 2);
    store_batch_put(b, STORE_CF_PLANS, "r1/00000000000000000002", "p2", 2);
    store_batch_put(b, STORE_CF_PLANS, "r2/00000000000000000001", "q1", 2);
    assert_int_equal(store_batch_count(b), 5);
    assert_int_equal(store_commit(b), SHOAL_OK);
    store_batch_destroy(&b);
    assert_null(b);

    char *v = NULL;
    size_t n = 0;
    assert_int_equal(store_get(st, STORE_CF_RUNS, "r1", &v, &n), SHOAL_OK);
    assert_string_equal(v, "{\"a\":1}");
    assert_int_equal(n, 7);
    free(v);
    /* families are separate key spaces */
    assert_int_equal(store_get(st, STORE_CF_WORKERS, "r1", &v, &n), SHOAL_ERR_NOTFOUND);
    int count = 0;
    assert_int_equal(store_scan(st, STORE_CF_PLANS, "r1/", NULL, s_count_fn, &count), SHOAL_OK);
    assert_int_equal(count, 2);
    char *k = NULL;
    assert_int_equal(store_last(st, STORE_CF_PLANS, "r1/", &k, &v), SHOAL_OK);
    assert_string_equal(k, "r1/00000000000000000002");
    assert_string_equal(v, "p2");
    free(k);
    free(v);
    assert_int_equal(store_last(st, STORE_CF_PLANS, "r3/", &k, &v), SHOAL_ERR_NOTFOUND);

    b = store_batch_new(st);
    store_batch_delete(b, STORE_CF_WORKERS, "w1");
    assert_int_equal(store_commit(b), SHOAL_OK);
    store_batch_destroy(&b);
    store_destroy(&st);
    assert_null(st);
    store_destroy(&st); /* idempotent */

    assert_int_equal(store_open(dir, &st), SHOAL_OK);
    assert_int_equal(store_get(st, STORE_CF_RUNS, "r1", &v, &n), SHOAL_OK);
    free(v);
    assert_int_equal(store_get(st, STORE_CF_WORKERS, "w1", &v, &n), SHOAL_ERR_NOTFOUND);
    store_destroy(&st);

    /* an unusable directory is an error naming it, not a crash */
    assert_int_equal(store_open("/proc/shoal-cannot-be-here", &st), SHOAL_ERR_IO);
    assert_null(st);
}

static void s_append(ledger_t *l, store_t *st, const char *run, const char *kind, int n)
{
    store_batch_t *b = store_batch_new(st);
    json_t *d = json_pack("{s:i}", "n", n);
    uint64_t seq = 0;
    assert_int_equal(ledger_append(l, b, run, kind, d, 1000 + n, &seq), SHOAL_OK);
    json_decref(d);
    assert_int_equal(store_commit(b), SHOAL_OK);
    ledger_staged_commit(l);
    store_batch_destroy(&b);
}

static void test_ledger_chain(void **state)
{
    (void)state;
    store_t *st = NULL;
    assert_int_equal(store_open(s_dir, &st), SHOAL_OK);
    ledger_t *l = ledger_new(st);
    s_append(l, st, "r1", "submit", 1);
    s_append(l, st, "r1", "plan", 2);
    s_append(l, st, "r2", "submit", 1);

    /* two entries in one batch chain onto each other */
    store_batch_t *b = store_batch_new(st);
    uint64_t s1, s2;
    assert_int_equal(ledger_append(l, b, "r1", "join", NULL, 5, &s1), SHOAL_OK);
    assert_int_equal(ledger_append(l, b, "r1", "plan", NULL, 6, &s2), SHOAL_OK);
    assert_int_equal(s1, 3);
    assert_int_equal(s2, 4);
    assert_int_equal(store_commit(b), SHOAL_OK);
    ledger_staged_commit(l);
    store_batch_destroy(&b);

    /* a failed (discarded) batch does not advance the chain */
    b = store_batch_new(st);
    assert_int_equal(ledger_append(l, b, "r1", "lost", NULL, 7, &s1), SHOAL_OK);
    assert_int_equal(s1, 5);
    ledger_staged_discard(l);
    store_batch_destroy(&b);
    s_append(l, st, "r1", "checkpoint", 5);

    uint64_t n = 0, bad = 0;
    char reason[200];
    assert_int_equal(ledger_verify(st, "r1", &n, &bad, reason, sizeof reason), SHOAL_OK);
    assert_int_equal(n, 5);
    assert_int_equal(bad, 0);
    assert_int_equal(ledger_verify(st, "r2", &n, &bad, reason, sizeof reason), SHOAL_OK);
    assert_int_equal(n, 1);

    json_t *arr = json_array();
    assert_int_equal(ledger_list(st, "r1", 2, 0, arr), SHOAL_OK);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 2), "kind")),
                        "checkpoint");
    const char *h4 = json_string_value(json_object_get(json_array_get(arr, 1), "hash"));
    const char *p5 = json_string_value(json_object_get(json_array_get(arr, 2), "prev_hash"));
    assert_string_equal(h4, p5);
    json_decref(arr);

    /* a new ledger over the same store continues the chain from the stored tail */
    ledger_destroy(&l);
    l = ledger_new(st);
    s_append(l, st, "r1", "done", 6);
    assert_int_equal(ledger_verify(st, "r1", &n, &bad, reason, sizeof reason), SHOAL_OK);
    assert_int_equal(n, 6);

    /* tampering with entry 3's detail is found at entry 3 */
    char *v = NULL;
    size_t len;
    const char *key3 = "r1/00000000000000000003";
    assert_int_equal(store_get(st, STORE_CF_LEDGER, key3, &v, &len), SHOAL_OK);
    json_t *e = json_loads(v, 0, NULL);
    json_object_set_new(e, "kind", json_string("forged"));
    char *forged = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    b = store_batch_new(st);
    store_batch_put(b, STORE_CF_LEDGER, key3, forged, strlen(forged));
    assert_int_equal(store_commit(b), SHOAL_OK);
    store_batch_destroy(&b);
    assert_int_equal(ledger_verify(st, "r1", &n, &bad, reason, sizeof reason), SHOAL_OK);
    assert_int_equal(bad, 3);
    assert_int_equal(n, 2);
    assert_non_null(strstr(reason, "hash does not match"));

    /* restoring it and deleting entry 5 is found at 5 (a gap) */
    b = store_batch_new(st);
    store_batch_put(b, STORE_CF_LEDGER, key3, v, len);
    store_batch_delete(b, STORE_CF_LEDGER, "r1/00000000000000000005");
    assert_int_equal(store_commit(b), SHOAL_OK);
    store_batch_destroy(&b);
    assert_int_equal(ledger_verify(st, "r1", &n, &bad, reason, sizeof reason), SHOAL_OK);
    assert_int_equal(bad, 5);
    free(forged);
    json_decref(e);
    free(v);
    ledger_destroy(&l);
    store_destroy(&st);
}

/* Child: commit batches {runs/r1 = i, ledger entry i} forever, telling the parent each i only
 * after store_commit() returned. */
static void s_writer(const char *dir, int fd)
{
    store_t *st = NULL;
    if (store_open(dir, &st) != SHOAL_OK)
        _exit(3);
    ledger_t *l = ledger_new(st);
    char *v = NULL;
    int first = 1;
    if (store_get(st, STORE_CF_RUNS, "r1", &v, NULL) == SHOAL_OK)
        first = atoi(v) + 1;
    free(v);
    for (int i = first;; i++) {
        store_batch_t *b = store_batch_new(st);
        char val[32];
        int n = snprintf(val, sizeof val, "%d", i);
        store_batch_put(b, STORE_CF_RUNS, "r1", val, (size_t)n);
        json_t *d = json_pack("{s:i}", "i", i);
        if (ledger_append(l, b, "r1", "step", d, i, NULL) != SHOAL_OK)
            _exit(4);
        json_decref(d);
        if (store_commit(b) != SHOAL_OK)
            _exit(5);
        ledger_staged_commit(l);
        store_batch_destroy(&b);
        if (write(fd, &i, sizeof i) != sizeof i)
            _exit(6);
    }
}

static void test_sigkill_mid_writes(void **state)
{
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/killed", s_dir);
    for (int round = 0; round < 3; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            s_writer(dir, fds[1]);
        }
        close(fds[1]);
        int acked = 0, got, n_acks = 0, target = 30 + 17 * round;
        while (n_acks < target && read(fds[0], &got, sizeof got) == sizeof got) {
            acked = got;
            n_acks++;
        }
        assert_int_equal(n_acks, target);
        kill(pid, SIGKILL); /* most likely in the middle of a write */
        int status;
        waitpid(pid, &status, 0);
        while (read(fds[0], &got, sizeof got) == sizeof got)
            acked = got;
        close(fds[0]);
        assert_true(WIFSIGNALED(status));

        store_t *st = NULL;
        assert_int_equal(store_open(dir, &st), SHOAL_OK);
        char *v = NULL;
        assert_int_equal(store_get(st, STORE_CF_RUNS, "r1", &v, NULL), SHOAL_OK);
        int stored = atoi(v);
        free(v);
        uint64_t n = 0, bad = 0;
        char reason[200];
        assert_int_equal(ledger_verify(st, "r1", &n, &bad, reason, sizeof reason), SHOAL_OK);
        if (bad)
            fail_msg("chain broken after SIGKILL: %s", reason);
        /* every acknowledged commit survived, and value and entry were written together */
        assert_true(stored >= acked);
        assert_int_equal((int)n, stored);
        store_destroy(&st);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_basics),
        cmocka_unit_test(test_ledger_chain),
        cmocka_unit_test(test_sigkill_mid_writes),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
