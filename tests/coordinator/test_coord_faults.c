/* test_coord_faults: the real shoal-coordinator with fake DEALER workers through faults of the
 * protocol's edges: operator verbs in the wrong run state, the run id and generation of every
 * push, and heartbeats that carry a stale run or generation. */
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
#include <unistd.h>

#include "coord_testlib.h"

#define HB_MS 100

static const char *s_spec = "name: faults\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 8\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 2\n";

static char s_root[128], s_dir[160];
static int s_n_dirs;
static pid_t s_pid; /* the coordinator of the running test, killed by s_kill_leftover() */

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_root, sizeof s_root, "/tmp/shoal-cf-XXXXXX");
    return mkdtemp(s_root) ? 0 : -1;
}

static int s_teardown(void **state)
{
    (void)state;
    if (getenv("SHOAL_KEEP_TEST_DIR"))
        return 0;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_root);
    return system(cmd) == 0 ? 0 : -1;
}

/* Every test gets a fresh state dir (no run or worker of an earlier test). */
static int s_fresh_dir(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "%s/t%d", s_root, ++s_n_dirs);
    return mkdir(s_dir, 0755);
}

/* A failed assertion jumps past the test's own tc_stop(): stop its coordinator here. */
static int s_kill_leftover(void **state)
{
    (void)state;
    if (s_pid > 0 && tc_alive(s_pid))
        tc_stop(s_pid, SIGKILL);
    s_pid = 0;
    return 0;
}

static const char *s_jstr(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static json_int_t s_jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void s_stop_clean(void)
{
    int st = tc_stop(s_pid, SIGTERM);
    s_pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void s_submit(char *run_id, size_t cap)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    snprintf(run_id, cap, "%s", s_jstr(r.json, "id"));
    tc_reply_fini(&r);
}

static const char *s_worker_state(const char *id)
{
    static char state[32];
    tc_reply_t r;
    state[0] = 0;
    if (tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, "", 0, &r) != 0)
        return state;
    json_t *arr = json_object_get(r.json, "workers");
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(s_jstr(json_array_get(arr, i), "id"), id) == 0)
            snprintf(state, sizeof state, "%s", s_jstr(json_array_get(arr, i), "state"));
    tc_reply_fini(&r);
    return state;
}

/* Heartbeats every worker in `ws` (NULL entries skipped) for `ms`, handling pushes. */
static void s_beat(tc_worker_t **ws, int n, int ms, int64_t step)
{
    for (int t = 0; t < ms; t += HB_MS / 2) {
        for (int i = 0; i < n; i++)
            if (ws[i]) {
                (void)tc_worker_heartbeat(ws[i], step);
                tc_worker_pump(ws[i], 1);
            }
        tc_sleep_ms(HB_MS / 2);
    }
}

/* Registers `w` and heartbeats until it holds an assignment of generation >= `gen`. */
static void s_join(tc_worker_t *w, const char *name, uint64_t gen)
{
    assert_int_equal(tc_worker_open(w, s_dir, name), 0);
    assert_int_equal(tc_worker_register(w), 0);
    for (int i = 0; i < 60 && w->gen < gen; i++) {
        (void)tc_worker_heartbeat(w, 0);
        tc_worker_pump(w, 50);
    }
    assert_true(w->gen >= gen);
}

/* pause and resume are refused (ERR_STATE, the state unchanged) unless the run is running or
 * paused respectively: resuming a pending run must not start it behind the scheduler's back. */
static void test_pause_resume_states(void **state)
{
    (void)state;
    s_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_STATE);
    assert_non_null(strstr(r.message, "pending"));
    assert_non_null(strstr(r.message, "only a paused run can be resumed"));
    tc_reply_fini(&r);
    json_t *st = tc_run_status(s_dir, run);
    assert_string_equal(s_jstr(st, "state"), "pending");
    json_decref(st);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_STATE);
    assert_non_null(strstr(r.message, "only a running run can be paused"));
    tc_reply_fini(&r);
    st = tc_run_status(s_dir, run);
    assert_string_equal(s_jstr(st, "state"), "pending");
    json_decref(st);

    /* a running run: resume refused, pause accepted, then resume accepted once */
    tc_worker_t w;
    s_join(&w, "pr", 1);
    st = tc_run_status(s_dir, run);
    assert_string_equal(s_jstr(st, "state"), "running");
    json_decref(st);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_STATE);
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_false(r.ok);
    tc_reply_fini(&r);
    tc_worker_close(&w);
    s_stop_clean();
}

/* Every push and answer to a worker names the worker's run and that run's current generation:
 * RunControl, Drain and Error alike (a Drain used to carry generation 0, an Error the foreign
 * run id the worker had sent). */
static void test_push_generations(void **state)
{
    (void)state;
    s_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t w;
    s_join(&w, "pg", 1);
    assert_int_equal(w.gen, 1);
    /* a second generation, so that 1 is stale and 0 is wrong */
    assert_int_equal(tc_worker_heartbeat_activity(&w, 0, SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED),
                     0);
    for (int i = 0; i < 40 && w.gen < 2; i++) {
        (void)tc_worker_heartbeat(&w, 0);
        tc_worker_pump(&w, 50);
    }
    assert_int_equal(w.gen, 2);

    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_pump(&w, 200);
    assert_int_equal(w.run_command, SHOAL__RUN_COMMAND__RUN_CMD_PAUSE);
    assert_string_equal(w.control_run, run);
    assert_int_equal(w.control_gen, 2);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_pump(&w, 200);
    assert_int_equal(w.run_command, SHOAL__RUN_COMMAND__RUN_CMD_RESUME);
    assert_int_equal(w.control_gen, 2);

    /* an Error about a message of a foreign run names the worker's own run and generation */
    snprintf(w.run, sizeof w.run, "r99");
    assert_int_equal(tc_worker_step(&w, 1, 2.0f), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    assert_string_equal(w.error_run, run);
    assert_int_equal(w.error_gen, 2);
    snprintf(w.run, sizeof w.run, "%s", run);
    w.gen = 1;
    assert_int_equal(tc_worker_step(&w, 1, 2.0f), SHOAL__ERROR_CODE__ERR_STALE_GENERATION);
    assert_string_equal(w.error_run, run);
    assert_int_equal(w.error_gen, 2);
    w.gen = 2;

    /* drain: the Drain carries run and generation 2 */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_DRAIN, w.id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    for (int i = 0; i < 20 && !w.drained; i++)
        tc_worker_pump(&w, 50);
    assert_true(w.drained);
    assert_string_equal(w.drain_run, run);
    assert_int_equal(w.drain_gen, 2);
    tc_worker_close(&w);
    s_stop_clean();
}

/* A worker declared dead re-registers while its heartbeats still carry its old run and
 * generation: they prove it alive (joining -> active, so it can be placed again) even though
 * their step and loss are dropped as stale. */
static void test_stale_heartbeat_activates(void **state)
{
    (void)state;
    s_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 1200\nstep_window: 2\n"
                            "min_workers: 2\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a, b;
    assert_int_equal(tc_worker_open(&a, s_dir, "sa"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "sb"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    tc_worker_t *both[2] = {&a, &b};
    for (int i = 0; i < 40 && (a.gen < 1 || b.gen < 1); i++)
        s_beat(both, 2, 50, 0);
    assert_int_equal(a.gen, 1);
    assert_int_equal(b.gen, 1);
    /* a falls silent: dead, and the run goes on with b alone */
    tc_worker_t *only_b[2] = {NULL, &b};
    for (int i = 0; i < 60 && strcmp(s_worker_state(a.id), "dead") != 0; i++)
        s_beat(only_b, 2, 50, 0);
    assert_string_equal(s_worker_state(a.id), "dead");
    for (int i = 0; i < 20 && b.gen < 2; i++)
        s_beat(only_b, 2, 50, 0);
    assert_int_equal(b.gen, 2);
    /* it comes back, still speaking of run r1 generation 1 */
    assert_int_equal(tc_worker_register(&a), 0);
    assert_string_equal(s_worker_state(a.id), "joining");
    assert_string_equal(a.run, run);
    assert_int_equal(a.gen, 1);
    assert_int_equal(tc_worker_heartbeat(&a, 5), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    assert_string_equal(s_worker_state(a.id), "active");
    /* its stale step was not applied */
    json_t *st = tc_run_status(s_dir, run);
    assert_int_equal(s_jint(st, "step"), 0);
    assert_int_equal(s_jint(st, "generation"), 2);
    json_decref(st);
    tc_worker_close(&a);
    tc_worker_close(&b);
    s_stop_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pause_resume_states, s_fresh_dir, s_kill_leftover),
        cmocka_unit_test_setup_teardown(test_push_generations, s_fresh_dir, s_kill_leftover),
        cmocka_unit_test_setup_teardown(test_stale_heartbeat_activates, s_fresh_dir,
                                        s_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
