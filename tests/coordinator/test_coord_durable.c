/* test_coord_durable: durable first. A coordinator built with the store's fault hook
 * (SHOAL_STORE_FAULTS, test builds only) has its RocksDB writes fail after N commits, for every N
 * from the first commit to past the end of a whole data-parallel run driven by two fake workers.
 * Each time it must stop at once (fail-stop, non-zero exit), and after a restart of the shipped
 * binary on the same state dir nothing any worker was told is missing from disk: every worker id
 * it handed out is persisted (and never handed out again), no worker saw a plan generation, a
 * committed step or a STOP that the disk does not hold, and the ledger verifies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "coord_testlib.h"

#define CONFIG                                                                                     \
    "heartbeat_interval_ms: 100\n"                                                                 \
    "dead_after_ms: 3000\n"                                                                        \
    "step_window: 2\n"                                                                             \
    "min_workers: 2\n"                                                                             \
    "log_level: debug\n"

#define N_WORKERS 2
#define MAX_IDS 16

static const char *s_spec = "name: durable\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 6\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 2\n";

static char s_root[128];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_root, sizeof s_root, "shoal-durable");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

/* The coordinator under test: alive, or its exit status once reaped (tc_alive drops it). */
static int s_exited, s_exit_status;

static int s_alive(pid_t pid)
{
    if (s_exited)
        return 0;
    if (waitpid(pid, &s_exit_status, WNOHANG) == pid)
        s_exited = 1;
    return !s_exited;
}

static json_int_t s_jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *s_jstr(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* What the workers were told during one attempt. */
typedef struct {
    char ids[MAX_IDS][64], names[MAX_IDS][64];
    int n_ids;
    char run[64]; /* the submit was acknowledged with this run id */
    uint64_t max_gen;
    int64_t max_committed;
    int got_stop;
} s_told_t;

static void s_note_id(s_told_t *t, const tc_worker_t *w)
{
    for (int i = 0; i < t->n_ids; i++)
        if (strcmp(t->ids[i], w->id) == 0)
            return;
    assert_true(t->n_ids < MAX_IDS);
    snprintf(t->ids[t->n_ids], sizeof t->ids[0], "%s", w->id);
    snprintf(t->names[t->n_ids++], sizeof t->names[0], "%s", w->name);
}

/* Drives the run with N_WORKERS fake workers until it is done, the coordinator exits, or
 * `ms` pass. Returns 1 when the run finished (every worker got its STOP). */
static int s_drive(const char *dir, pid_t pid, s_told_t *t, int ms)
{
    tc_reply_t r;
    if (tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r) == 0 && r.ok && r.json)
        snprintf(t->run, sizeof t->run, "%s", s_jstr(r.json, "id"));
    tc_reply_fini(&r);
    tc_worker_t ws[N_WORKERS];
    int64_t reported[N_WORKERS] = {0}, ckpt_reported[N_WORKERS] = {0};
    for (int i = 0; i < N_WORKERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "node-%c", 'a' + i);
        assert_int_equal(tc_worker_open(&ws[i], dir, name), 0);
    }
    int done = 0;
    const int64_t until = clock_mono_ms() + ms;
    while (!done && clock_mono_ms() < until && s_alive(pid)) {
        done = 1;
        for (int i = 0; i < N_WORKERS && s_alive(pid); i++) {
            tc_worker_t *w = &ws[i];
            if (!w->id[0]) {
                if (tc_worker_register(w) == 0 && w->id[0])
                    s_note_id(t, w);
                done = 0;
                continue;
            }
            if (tc_worker_heartbeat(w, w->committed) == SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER)
                w->id[0] = 0;
            tc_worker_pump(w, 5);
            if (w->run[0] && reported[i] <= w->committed && w->committed < w->lease) {
                reported[i] = w->committed + 1;
                (void)tc_worker_step(w, reported[i], 3.0f - 0.1f * (float)reported[i]);
            }
            if (w->run[0] && w->committed > 0 && w->committed % 2 == 0 &&
                ckpt_reported[i] < w->committed) {
                ckpt_reported[i] = w->committed;
                (void)tc_worker_ckpt(w, w->committed);
            }
            done &= w->got_stop;
        }
        done &= s_alive(pid);
    }
    for (int i = 0; i < N_WORKERS; i++) {
        if (ws[i].max_gen > t->max_gen)
            t->max_gen = ws[i].max_gen;
        if (ws[i].max_committed > t->max_committed)
            t->max_committed = ws[i].max_committed;
        t->got_stop |= ws[i].got_stop;
        tc_worker_close(&ws[i]);
    }
    return done;
}

/* After a restart from disk: everything in `t` is on disk, and the ledger verifies. */
static void s_check_disk(const char *dir, const s_told_t *t, int attempt)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, "", 0, &r), 0);
    json_t *arr = json_object_get(r.json, "workers");
    for (int k = 0; k < t->n_ids; k++) {
        const char *name = NULL;
        for (size_t i = 0; i < json_array_size(arr); i++)
            if (strcmp(s_jstr(json_array_get(arr, i), "id"), t->ids[k]) == 0)
                name = s_jstr(json_array_get(arr, i), "name");
        if (!name || strcmp(name, t->names[k]) != 0)
            fail_msg("attempt %d: worker id %s was handed to %s but is not on disk as that",
                     attempt, t->ids[k], t->names[k]);
    }
    tc_reply_fini(&r);
    if (t->run[0]) {
        json_t *st = tc_run_status(dir, t->run);
        if (!st)
            fail_msg("attempt %d: run %s was acknowledged but is not on disk", attempt, t->run);
        if ((uint64_t)s_jint(st, "generation") < t->max_gen)
            fail_msg("attempt %d: a worker got generation %llu, the disk holds %lld", attempt,
                     (unsigned long long)t->max_gen, (long long)s_jint(st, "generation"));
        if (s_jint(st, "step") < t->max_committed)
            fail_msg("attempt %d: a worker got step %lld committed, the disk holds %lld", attempt,
                     (long long)t->max_committed, (long long)s_jint(st, "step"));
        if (t->got_stop && strcmp(s_jstr(st, "state"), "done") != 0)
            fail_msg("attempt %d: a worker got STOP, the run on disk is %s", attempt,
                     s_jstr(st, "state"));
        json_decref(st);
    } else {
        assert_int_equal(t->max_gen, 0);
    }
    /* a newcomer never gets an id that was handed out before the failure */
    tc_worker_t late;
    assert_int_equal(tc_worker_open(&late, dir, "late"), 0);
    assert_int_equal(tc_worker_register(&late), 0);
    for (int k = 0; k < t->n_ids; k++)
        if (strcmp(late.id, t->ids[k]) == 0)
            fail_msg("attempt %d: id %s handed out twice (%s, then late)", attempt, late.id,
                     t->names[k]);
    tc_worker_close(&late);
    /* the cluster's chain (registrations, worker states), and the run's */
    const char *chains[2] = {"cluster", t->run};
    for (int i = 0; i < 2 && chains[i][0]; i++) {
        assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_VERIFY, chains[i], 0, &r), 0);
        if (!r.ok)
            fail_msg("attempt %d: ledger %s does not verify: %s", attempt, chains[i], r.message);
        tc_reply_fini(&r);
    }
}

/* Writes fail after n commits, for n = 1, 2, ... until a whole run fits in the n commits.
 * Every attempt before that must end in a fail-stop that lost nothing announced. */
static void test_store_failure_at_every_commit(void **state)
{
    (void)state;
    int fail_stops = 0, n;
    for (n = 1; n <= 400; n++) {
        char dir[200], val[16];
        snprintf(dir, sizeof dir, "%s/n%d", s_root, n);
        assert_int_equal(mkdir(dir, 0755), 0);
        snprintf(val, sizeof val, "%d", n);
        setenv("SHOAL_STORE_FAIL_AFTER", val, 1);
        pid_t pid = tc_start_bin(SHOAL_COORDINATOR_FAULTS_BIN, dir, CONFIG);
        unsetenv("SHOAL_STORE_FAIL_AFTER");
        s_told_t told = {0};
        int finished = 0;
        s_exited = 0;
        if (pid > 0)
            finished = s_drive(dir, pid, &told, 20000);
        if (finished && s_alive(pid)) {
            assert_int_equal(tc_stop(pid, SIGTERM), 0);
            break; /* the whole run took fewer than n commits */
        }
        if (pid > 0) {
            /* the coordinator must have stopped by itself, with a failure status */
            for (int t = 0; t < 100 && s_alive(pid); t++)
                tc_sleep_ms(50);
            int ws = s_exit_status;
            if (!s_exited || !(WIFEXITED(ws) && WEXITSTATUS(ws) != 0)) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                fail_msg("n=%d: coordinator did not fail-stop (status 0x%x, see %s)", n, ws, dir);
            }
        }
        fail_stops++;
        pid_t again = tc_start(dir, CONFIG);
        s_check_disk(dir, &told, n);
        assert_int_equal(tc_stop(again, SIGTERM), 0);
    }
    printf("durable: %d fail-stops checked; a whole run takes %d commits\n", fail_stops, n - 1);
    assert_true(n <= 400);
    assert_true(fail_stops >= 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_failure_at_every_commit),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
