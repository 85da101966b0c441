/* test_coord_history: the real shoal-coordinator keeps a run's per-step history: for a known
 * sequence of step reports from two fake-but-real workers (dp=2) each committed step has one
 * row with the mean loss, the slowest rank's time, the step's tokens once (not per replica),
 * tokens/s, grad norm, generation and the commit's wall time; a heartbeat-only jump of two
 * steps writes one row; MSG_CTL_HISTORY pages; a SIGKILL + restart keeps every row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "coord_testlib.h"

#define HB_MS 100
#define CONFIG                                                                                     \
    "heartbeat_interval_ms: 100\n"                                                                 \
    "dead_after_ms: 5000\n"                                                                        \
    "step_window: 4\n"                                                                             \
    "min_workers: 2\n"

static const char *s_spec = "name: hist\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 20\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 10\n";

static char s_dir[128];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_dir, sizeof s_dir, "shoal-ch");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_dir);
}

static long long s_wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static double s_num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("row field %s missing", k);
    return json_number_value(v);
}

static void s_wait_committed(tc_worker_t *w, int64_t step)
{
    for (int t = 0; t < 200 && w->committed < step; t++)
        tc_worker_pump(w, 25);
    assert_int_equal(w->committed, step);
}

/* One page of run's history: the rows (new reference) and *next. */
static json_t *s_page(const char *run, uint64_t since, unsigned limit, json_int_t *next)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl_page(s_dir, SHOAL__MSG_TYPE__MSG_CTL_HISTORY, run, since, limit, &r),
                     0);
    if (!r.ok)
        fail_msg("history refused: %s", r.message);
    json_t *rows = json_incref(json_object_get(r.json, "rows"));
    assert_true(json_is_array(rows));
    *next = tc_jint(r.json, "next");
    tc_reply_fini(&r);
    return rows;
}

static void s_expect_row(const json_t *row, int64_t step, double loss, double secs, int ranks,
                         uint64_t gen)
{
    assert_int_equal((int64_t)s_num(row, "step"), step);
    assert_true(fabs(s_num(row, "loss") - loss) < 1e-5);
    assert_true(fabs(s_num(row, "step_seconds") - secs) < 1e-6);
    /* the testlib's reports carry 2048 tokens each: the run's step is 2048, not 2 x 2048 */
    assert_int_equal((int64_t)s_num(row, "tokens"), 2048);
    assert_true(fabs(s_num(row, "tokens_per_s") - 2048 / secs) < 1e-2);
    assert_true(fabs(s_num(row, "grad_norm") - 1.0) < 1e-6);
    assert_int_equal((int64_t)s_num(row, "ranks"), ranks);
    assert_int_equal((uint64_t)s_num(row, "generation"), gen);
}

static void test_history_rows_pages_restart(void **state)
{
    (void)state;
    const long long t0 = s_wall_ms();
    tc_pid = tc_start(s_dir, CONFIG);
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    char run[32];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);

    tc_worker_t a, b;
    tc_worker_t *ab[2] = {&a, &b};
    assert_int_equal(tc_worker_open(&a, s_dir, "ha"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "hb"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    for (int i = 0; i < 30 && (a.gen == 0 || b.gen == 0); i++)
        tc_beat(ab, 2, 100, HB_MS, 0, true);
    assert_true(a.gen > 0 && a.gen == b.gen);
    assert_int_equal(a.dp, 2);
    const uint64_t gen = a.gen;

    /* no step committed: no row */
    json_int_t next = -1;
    json_t *rows = s_page(run, 0, 0, &next);
    assert_int_equal(json_array_size(rows), 0);
    assert_int_equal(next, 0);
    json_decref(rows);

    /* step 1: losses 4 and 3, times 0.5 and 0.25 s; step 2: 2 and 1, 0.2 and 0.4 s */
    assert_int_equal(tc_worker_step_timed(&a, 1, 4.0f, 0.5f, 0.1f), 0);
    assert_int_equal(tc_worker_step_timed(&b, 1, 3.0f, 0.25f, 0.1f), 0);
    s_wait_committed(&a, 1);
    tc_sleep_ms(5);
    assert_int_equal(tc_worker_step_timed(&a, 2, 2.0f, 0.2f, 0.1f), 0);
    assert_int_equal(tc_worker_step_timed(&b, 2, 1.0f, 0.4f, 0.1f), 0);
    s_wait_committed(&a, 2);
    tc_sleep_ms(5);
    /* heartbeats alone take both ranks from 2 to 4: one row, for step 4 */
    assert_int_equal(tc_worker_heartbeat(&a, 4), 0);
    assert_int_equal(tc_worker_heartbeat(&b, 4), 0);
    s_wait_committed(&a, 4);
    const long long t1 = s_wall_ms();

    rows = s_page(run, 0, 0, &next);
    assert_int_equal(json_array_size(rows), 3);
    assert_int_equal(next, 0);
    s_expect_row(json_array_get(rows, 0), 1, 3.5, 0.5, 2, gen);
    s_expect_row(json_array_get(rows, 1), 2, 1.5, 0.4, 2, gen);
    /* the heartbeat's loss (testlib: 2.5); no rank reported step 4 itself, so the time is
     * the ranks' newest report's */
    s_expect_row(json_array_get(rows, 2), 4, 2.5, 0.4, 0, gen);
    long long prev = t0;
    for (size_t i = 0; i < 3; i++) {
        long long t = (long long)s_num(json_array_get(rows, i), "time_ms");
        assert_true(t >= prev && t <= t1);
        prev = t;
    }
    assert_true(s_num(json_array_get(rows, 2), "time_ms") >
                s_num(json_array_get(rows, 0), "time_ms"));

    /* pages of 2: rows 1-2 (next 2), then row 4 (next 0: the end) */
    json_t *p1 = s_page(run, 0, 2, &next);
    assert_int_equal(json_array_size(p1), 2);
    assert_int_equal(next, 2);
    json_t *p2 = s_page(run, (uint64_t)next, 2, &next);
    assert_int_equal(json_array_size(p2), 1);
    assert_int_equal(next, 0);
    assert_true(json_equal(json_array_get(p1, 0), json_array_get(rows, 0)));
    assert_true(json_equal(json_array_get(p1, 1), json_array_get(rows, 1)));
    assert_true(json_equal(json_array_get(p2, 0), json_array_get(rows, 2)));
    json_decref(p1);
    json_decref(p2);
    /* by name too; an unknown run is refused */
    p1 = s_page("hist", 3, 0, &next);
    assert_int_equal(json_array_size(p1), 1);
    json_decref(p1);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_HISTORY, "nope", 0, &r), 0);
    assert_false(r.ok);
    tc_reply_fini(&r);

    /* SIGKILL mid-run and restart: every row is still there, unchanged */
    tc_stop(tc_pid, SIGKILL);
    tc_pid = tc_start(s_dir, CONFIG);
    json_t *again = s_page(run, 0, 0, &next);
    assert_true(json_equal(again, rows));
    json_decref(again);
    json_decref(rows);

    tc_worker_close(&a);
    tc_worker_close(&b);
    assert_int_equal(tc_stop(tc_pid, SIGTERM), 0);
    tc_pid = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_history_rows_pages_restart, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
