/* test_coord_metrics: the real shoal-coordinator with metrics_listen, driven by a fake DEALER
 * worker through a run: its /metrics must hold the values the worker reported (step time, comm
 * wait ratio, loss, the committed step, the plan generation), the states, and the checkpoint's
 * step, bytes, age, duration and replicas once its manifest is committed; step reports read in
 * one burst share one synced write (test_step_group_commit). */
/* cmocka.h needs these first */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coord_testlib.h"
#include "http_get.h"
#include "wire.h"

static char s_root[128], s_dir[160];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make_with(s_root, sizeof s_root, s_dir, sizeof s_dir, "shoal-cm");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

/* The value of the sample whose line starts with `series` + " " in page; NAN when absent. */
static double s_value(const char *page, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = page; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static void s_expect(const char *page, const char *series, double want, double tol)
{
    double got = s_value(page, series);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s = %g, expected %g (+- %g)\n%s", series, got, want, tol, page);
}

/* Submits a 50-step run (`head`: its name and checkpoint lines) to the coordinator of `dir` and
 * registers worker `name` as *a, heartbeating until it holds the run's plan. */
static void s_one_worker_run(const char *dir, const char *head, const char *name, tc_worker_t *a)
{
    char spec[512];
    snprintf(spec, sizeof spec,
             "%sdata: {files: [/usr/share/games/fortunes]}\n"
             "train: {steps: 50, global_batch: 2, seq_len: 16, lr: 0.001}\n",
             head);
    tc_reply_t r;
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_int_equal(tc_worker_open(a, dir, name), 0);
    assert_int_equal(tc_worker_register(a), 0);
    for (int i = 0; i < 100 && a->gen == 0; i++) {
        (void)tc_worker_heartbeat(a, 0);
        tc_worker_pump(a, 20);
    }
    assert_true(a->gen > 0);
}

static void test_run_series(void **state)
{
    (void)state;
    unsigned port = test_free_port();
    char yaml[256];
    snprintf(yaml, sizeof yaml, "heartbeat_interval_ms: 100\nmetrics_listen: 127.0.0.1:%u\n", port);
    tc_pid = tc_start(s_dir, yaml);
    static char page[1 << 20];
    assert_int_equal(test_http(port, "GET", "/metrics", page, sizeof page), 200);
    s_expect(page, "shoal_messages_dropped_total", 0, 0);

    tc_worker_t a;
    s_one_worker_run(s_dir, "name: met\ncheckpoint: {every_steps: 2}\n", "ma", &a);
    assert_int_equal(tc_worker_step_timed(&a, 1, 4.0f, 0.5f, 0.125f), 0);
    assert_int_equal(tc_worker_step_timed(&a, 2, 3.5f, 0.25f, 0.2f), 0);
    assert_int_equal(tc_worker_ckpt(&a, 2), 0);
    (void)tc_worker_heartbeat(&a, 2);
    tc_worker_pump(&a, 700); /* the coordinator publishes every 500 ms */

    assert_int_equal(test_http(port, "GET", "/metrics", page, sizeof page), 200);
    s_expect(page, "shoal_run_step{run=\"met\"}", 2, 0);
    s_expect(page, "shoal_run_target_steps{run=\"met\"}", 50, 0);
    s_expect(page, "shoal_run_loss{run=\"met\"}", 3.5, 1e-6);
    /* the run's figure: step 2's tokens (2048, the whole batch) over its time (0.25 s), as its
     * history row says, not a worker's heartbeat figure (the testlib's heartbeats say 1000) */
    s_expect(page, "shoal_run_tokens_per_second{run=\"met\"}", 8192, 1e-3);
    s_expect(page, "shoal_run_state{run=\"met\",state=\"running\"}", 1, 0);
    s_expect(page, "shoal_run_state{run=\"met\",state=\"pending\"}", 0, 0);
    s_expect(page, "shoal_run_plan_generation{run=\"met\"}", (double)a.gen, 0);
    s_expect(page, "shoal_run_plan_workers{run=\"met\"}", 1, 0);
    s_expect(page, "shoal_worker_state{worker=\"ma\",state=\"active\"}", 1, 0);
    s_expect(page, "shoal_worker_step{worker=\"ma\"}", 2, 0);
    s_expect(page, "shoal_worker_step_seconds{worker=\"ma\"}", 0.25, 1e-6);
    s_expect(page, "shoal_worker_comm_wait_ratio{worker=\"ma\"}", 0.8, 1e-6);
    s_expect(page, "shoal_worker_heartbeat_age_seconds{worker=\"ma\"}", 1, 1); /* 0..2 s */
    s_expect(page, "shoal_worker_quarantined{worker=\"ma\"}", 0, 0);
    s_expect(page, "shoal_workers{state=\"active\"}", 1, 0);
    /* the checkpoint of step 2: one shard of one 4096-byte file, no copies */
    s_expect(page, "shoal_checkpoint_step{run=\"met\"}", 2, 0);
    s_expect(page, "shoal_checkpoint_bytes{run=\"met\"}", 4096, 0);
    s_expect(page, "shoal_checkpoint_replicas{run=\"met\"}", 0, 0);
    s_expect(page, "shoal_checkpoint_age_seconds{run=\"met\"}", 1, 1);
    s_expect(page, "shoal_checkpoint_duration_seconds{run=\"met\"}", 1, 1);
    assert_true(s_value(page, "shoal_messages_handled_total") >= 6);

    /* after a SIGKILL and restart the run's tokens/s is read back from its history row */
    tc_worker_close(&a);
    tc_stop(tc_pid, SIGKILL);
    tc_pid = tc_start(s_dir, yaml);
    assert_int_equal(test_http(port, "GET", "/metrics", page, sizeof page), 200);
    s_expect(page, "shoal_run_tokens_per_second{run=\"met\"}", 8192, 1e-3);
    assert_int_equal(tc_stop(tc_pid, SIGTERM), 0);
    tc_pid = 0;
}

/* Polls /metrics (up to 10 s) until `series` has the value `want`, then checks it. */
static void s_expect_soon(unsigned port, char *page, size_t cap, const char *series, double want)
{
    for (int i = 0; i < 100; i++) {
        assert_int_equal(test_http(port, "GET", "/metrics", page, cap), 200);
        if (s_value(page, series) == want)
            break;
        tc_sleep_ms(100);
    }
    s_expect(page, series, want, 0);
}

/* A run that no plan fits (pp 2, one worker) is paused and unplaced; a second worker places
 * it: running, unplaced 0. */
static void test_unplaced_series(void **state)
{
    (void)state;
    char dir[200];
    snprintf(dir, sizeof dir, "%s/u", s_root);
    assert_int_equal(mkdir(dir, 0755), 0);
    unsigned port = test_free_port();
    char yaml[256];
    snprintf(yaml, sizeof yaml, "heartbeat_interval_ms: 100\nmetrics_listen: 127.0.0.1:%u\n", port);
    tc_pid = tc_start(dir, yaml);
    static char page[1 << 20];
    tc_reply_t r;
    const char *spec = "name: wait\ndata: {files: [/usr/share/games/fortunes]}\n"
                       "train: {steps: 50, global_batch: 2, seq_len: 16, lr: 0.001}\n"
                       "parallel: {pipeline_stages: 2}\n";
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_t a, b;
    assert_int_equal(tc_worker_open(&a, dir, "ua"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    for (int i = 0; i < 10; i++) {
        (void)tc_worker_heartbeat(&a, 0);
        tc_worker_pump(&a, 50);
    }
    s_expect_soon(port, page, sizeof page, "shoal_run_state{run=\"wait\",state=\"paused\"}", 1);
    s_expect(page, "shoal_run_unplaced{run=\"wait\"}", 1, 0);
    s_expect(page, "shoal_run_state{run=\"wait\",state=\"running\"}", 0, 0);
    assert_int_equal(tc_worker_open(&b, dir, "ub"), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    for (int i = 0; i < 200 && (a.gen == 0 || b.gen == 0); i++) {
        (void)tc_worker_heartbeat(&a, 0);
        (void)tc_worker_heartbeat(&b, 0);
        tc_worker_pump(&a, 20);
        tc_worker_pump(&b, 20);
    }
    assert_true(a.gen > 0 && b.gen > 0);
    s_expect_soon(port, page, sizeof page, "shoal_run_state{run=\"wait\",state=\"running\"}", 1);
    s_expect(page, "shoal_run_unplaced{run=\"wait\"}", 0, 0);
    tc_worker_close(&a);
    tc_worker_close(&b);
    assert_int_equal(tc_stop(tc_pid, SIGTERM), 0);
    tc_pid = 0;
}

/* Group commit of step reports (issue 13): K step reports that each complete a step, read in
 * one burst, share one synced write (shoal_state_writes_total), not K; the StepCommits went
 * out only after it, so a coordinator SIGKILLed once the worker holds step K has step K on
 * disk after a restart. */
static void test_step_group_commit(void **state)
{
    (void)state;
    enum { K = 4 }; /* the default step_window: steps 1..4 are in the first lease */
    char dir[200];
    snprintf(dir, sizeof dir, "%s/g", s_root);
    assert_int_equal(mkdir(dir, 0755), 0);
    unsigned port = test_free_port();
    char yaml[256];
    snprintf(yaml, sizeof yaml,
             "heartbeat_interval_ms: 100\ndead_after_ms: 10000\nmetrics_listen: 127.0.0.1:%u\n",
             port);
    tc_pid = tc_start(dir, yaml);
    static char page[1 << 20];
    tc_worker_t a;
    s_one_worker_run(dir, "name: gc\ncheckpoint: {every_steps: 100}\n", "ga", &a);
    assert_true(a.lease >= K); /* the only member: each report commits a step */
    tc_worker_pump(&a, 600); /* the coordinator publishes every 500 ms */
    assert_int_equal(test_http(port, "GET", "/metrics", page, sizeof page), 200);
    const double writes0 = s_value(page, "shoal_state_writes_total");
    assert_true(writes0 >= 1);
    /* the reports queue while the coordinator is stopped: it reads them as one burst */
    assert_int_equal(kill(tc_pid, SIGSTOP), 0);
    for (int s = 1; s <= K; s++)
        assert_int_equal(tc_worker_step_send(&a, s, 4.0f - 0.1f * (float)s), 0);
    tc_sleep_ms(100);
    assert_int_equal(kill(tc_pid, SIGCONT), 0);
    for (int i = 0; i < 250 && a.committed < K; i++)
        tc_worker_pump(&a, 20);
    assert_int_equal(a.committed, K);
    s_expect_soon(port, page, sizeof page, "shoal_run_step{run=\"gc\"}", K);
    const double writes = s_value(page, "shoal_state_writes_total") - writes0;
    printf("# %d steps committed by one burst of step reports in %.0f synced write(s)\n", K,
           writes);
    assert_true(writes >= 1 && writes <= 2); /* K (one a report) without group commit */
    /* told, so on disk */
    tc_worker_close(&a);
    tc_stop(tc_pid, SIGKILL);
    tc_pid = tc_start(dir, yaml);
    json_t *st = tc_run_status(dir, "gc");
    assert_non_null(st);
    assert_int_equal(tc_jint(st, "step"), K);
    json_decref(st);
    assert_int_equal(tc_stop(tc_pid, SIGTERM), 0);
    tc_pid = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_run_series, tc_kill_leftover),
        cmocka_unit_test_teardown(test_unplaced_series, tc_kill_leftover),
        cmocka_unit_test_teardown(test_step_group_commit, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
