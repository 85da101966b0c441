/* test_coord_faults: the real shoal-coordinator with fake DEALER workers through faults of the
 * protocol's edges: operator verbs in the wrong run state, the run id and generation of every
 * push, heartbeats that carry a stale run or generation, and workers whose plans keep failing
 * (re-plan back-off, quarantine, a run left with nobody to place, undrain). */
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

#include "clock.h"
#include "coord_testlib.h"

#define HB_MS 100
/* The bound of every wait for something that must happen: generous, since a loaded machine is
 * slow but never wrong; each wait ends as soon as the thing happens. */
#define WAIT_MS 30000

static const char *s_spec = "name: faults\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 8\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 2\n";

static char s_root[128], s_dir[160];
static int s_n_dirs;

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_root, sizeof s_root, "shoal-cf");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

/* Every test gets a fresh state dir (no run or worker of an earlier test). */
static int s_fresh_dir(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "%s/t%d", s_root, ++s_n_dirs);
    return mkdir(s_dir, 0755);
}

static int64_t s_deadline(void)
{
    return clock_mono_ms() + WAIT_MS;
}

static void s_stop_clean(void)
{
    int st = tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void s_submit_spec(const char *spec, char *run_id, size_t cap)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    snprintf(run_id, cap, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);
}

static void s_submit(char *run_id, size_t cap)
{
    s_submit_spec(s_spec, run_id, cap);
}

/* Registers `w` and heartbeats until it holds an assignment of generation >= `gen`. */
static void s_join(tc_worker_t *w, const char *name, uint64_t gen)
{
    assert_int_equal(tc_worker_open(w, s_dir, name), 0);
    assert_int_equal(tc_worker_register(w), 0);
    for (int64_t end = s_deadline(); w->gen < gen && clock_mono_ms() < end;) {
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
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\n");
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
    assert_string_equal(tc_jstr(st, "state"), "pending");
    json_decref(st);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_STATE);
    assert_non_null(strstr(r.message, "only a running run can be paused"));
    tc_reply_fini(&r);
    st = tc_run_status(s_dir, run);
    assert_string_equal(tc_jstr(st, "state"), "pending");
    json_decref(st);

    /* a running run: resume refused, pause accepted, then resume accepted once */
    tc_worker_t w;
    s_join(&w, "pr", 1);
    st = tc_run_status(s_dir, run);
    assert_string_equal(tc_jstr(st, "state"), "running");
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
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t w;
    s_join(&w, "pg", 1);
    assert_int_equal(w.gen, 1);
    /* a second generation, so that 1 is stale and 0 is wrong */
    assert_int_equal(tc_worker_heartbeat_activity(&w, 0, SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED),
                     0);
    for (int64_t end = s_deadline(); w.gen < 2 && clock_mono_ms() < end;) {
        (void)tc_worker_heartbeat(&w, 0);
        tc_worker_pump(&w, 50);
    }
    assert_int_equal(w.gen, 2);

    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    for (int64_t end = s_deadline();
         w.run_command != SHOAL__RUN_COMMAND__RUN_CMD_PAUSE && clock_mono_ms() < end;)
        tc_worker_pump(&w, 50);
    assert_int_equal(w.run_command, SHOAL__RUN_COMMAND__RUN_CMD_PAUSE);
    assert_string_equal(w.control_run, run);
    assert_int_equal(w.control_gen, 2);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    for (int64_t end = s_deadline();
         w.run_command != SHOAL__RUN_COMMAND__RUN_CMD_RESUME && clock_mono_ms() < end;)
        tc_worker_pump(&w, 50);
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
    for (int64_t end = s_deadline(); !w.drained && clock_mono_ms() < end;)
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
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 1200\nstep_window: 2\n"
                             "min_workers: 2\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a, b;
    assert_int_equal(tc_worker_open(&a, s_dir, "sa"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "sb"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    tc_worker_t *both[2] = {&a, &b};
    for (int64_t end = s_deadline(); (a.gen < 1 || b.gen < 1) && clock_mono_ms() < end;)
        tc_beat(both, 2, 50, HB_MS, 0, false);
    assert_int_equal(a.gen, 1);
    assert_int_equal(b.gen, 1);
    /* a falls silent: dead, and the run goes on with b alone */
    tc_worker_t *only_b[2] = {NULL, &b};
    for (int64_t end = s_deadline();
         strcmp(tc_worker_state(s_dir, a.id), "dead") != 0 && clock_mono_ms() < end;)
        tc_beat(only_b, 2, 50, HB_MS, 0, false);
    assert_string_equal(tc_worker_state(s_dir, a.id), "dead");
    for (int64_t end = s_deadline(); b.gen < 2 && clock_mono_ms() < end;)
        tc_beat(only_b, 2, 50, HB_MS, 0, false);
    assert_int_equal(b.gen, 2);
    /* it comes back, still speaking of run r1 generation 1 */
    assert_int_equal(tc_worker_register(&a), 0);
    assert_string_equal(tc_worker_state(s_dir, a.id), "joining");
    assert_string_equal(a.run, run);
    assert_int_equal(a.gen, 1);
    assert_int_equal(tc_worker_heartbeat(&a, 5), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    /* its stale step was not applied */
    json_t *st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "step"), 0);
    assert_int_equal(tc_jint(st, "generation"), 2);
    json_decref(st);
    tc_worker_close(&a);
    tc_worker_close(&b);
    s_stop_clean();
}

#define MISSING "data file ./missing.txt: No such file or directory"

/* The run's ledger entries (a new reference). */
static json_t *s_events(const char *run)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_EVENTS, run, 0, &r), 0);
    assert_true(r.ok);
    json_t *ev = json_incref(json_object_get(r.json, "events"));
    tc_reply_fini(&r);
    return ev;
}

/* The entries of `kind`, in order (a new reference). */
static json_t *s_kind(json_t *events, const char *kind)
{
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(events); i++)
        if (strcmp(tc_jstr(json_array_get(events, i), "kind"), kind) == 0)
            json_array_append(out, json_array_get(events, i));
    return out;
}

/* Whether the coordinator's log (tc_start writes it in the test's dir) holds `text`. */
static int s_log_has(const char *text)
{
    char path[200], line[2048];
    snprintf(path, sizeof path, "%s/coordinator.log", s_dir);
    FILE *f = fopen(path, "r");
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return found;
}

static json_int_t s_plan_gap_ms(json_t *plans, size_t i)
{
    return tc_jint(json_array_get(plans, i), "time_ms") -
           tc_jint(json_array_get(plans, i - 1), "time_ms");
}

/* `bad` reports every plan it gets as failed (heartbeats with ACTIVITY_FAILED and the detail
 * MISSING) while `good` (may be NULL) heartbeats normally, for `ms` of wall-clock time, until
 * `bad` is told to stop (its run cleared) or holds generation `until_gen` (0: no bound). */
static void s_fail_plans(tc_worker_t *bad, tc_worker_t *good, int ms, uint64_t until_gen)
{
    for (int64_t end = clock_mono_ms() + ms;
         clock_mono_ms() < end && bad->run[0] && (!until_gen || bad->gen < until_gen);) {
        (void)tc_worker_heartbeat_detail(bad, 0, SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED, MISSING);
        tc_worker_pump(bad, 1);
        if (good) {
            (void)tc_worker_heartbeat(good, good->committed);
            tc_worker_pump(good, 1);
        }
        tc_sleep_ms(HB_MS / 2);
    }
}

/* Default settings (quarantine after 3 failures, back-off 1 s doubling): a worker that fails
 * every plan (its data file is missing) is re-planned at once, then after 1 s, and on its third
 * failure in a row quarantined (state quarantined), a `quarantine` ledger entry, told to stop; the next
 * plan holds only the healthy worker, and its later stale failures change nothing. undrain puts
 * it back and it is placed again at the next step boundary. */
/* Two workers whose connections close 70 ms apart (a host lost, a part's every holder) die in
 * the same sweep: the survivor gets one new plan, not one per death (the first of two would name
 * the second, already gone, as a holder). Fails with the deaths judged one by one. */
static void test_deaths_coalesced(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 30000\n"
                             "min_workers: 3\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a, b, c;
    assert_int_equal(tc_worker_open(&a, s_dir, "da"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "db"), 0);
    assert_int_equal(tc_worker_open(&c, s_dir, "dc"), 0);
    tc_worker_t *all[3] = {&a, &b, &c};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tc_worker_register(all[i]), 0);
    for (int64_t end = s_deadline();
         (a.gen < 1 || b.gen < 1 || c.gen < 1) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 0, false);
    assert_int_equal(c.gen, 1);
    tc_worker_close(&a);
    tc_worker_t *only_c[3] = {NULL, NULL, &c};
    tc_beat(only_c, 3, 70, HB_MS, 0, false);
    tc_worker_close(&b);
    for (int64_t end = s_deadline(); (strcmp(tc_worker_state(s_dir, a.id), "dead") != 0 ||
                                      strcmp(tc_worker_state(s_dir, b.id), "dead") != 0) &&
                                     clock_mono_ms() < end;)
        tc_beat(only_c, 3, 50, HB_MS, 0, false);
    assert_string_equal(tc_worker_state(s_dir, a.id), "dead");
    assert_string_equal(tc_worker_state(s_dir, b.id), "dead");
    tc_beat(only_c, 3, 1000, HB_MS, 0, false); /* any later plan would have come by now */
    assert_int_equal(c.gen, 2);
    tc_worker_close(&c);
    s_stop_clean();
}

static void test_quarantine(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n"
                             "min_workers: 2\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a, b;
    assert_int_equal(tc_worker_open(&a, s_dir, "qa"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "qb"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    tc_worker_t *both[2] = {&a, &b};
    for (int64_t end = s_deadline(); (a.gen < 1 || b.gen < 1) && clock_mono_ms() < end;)
        tc_beat(both, 2, 50, HB_MS, 0, false);
    assert_int_equal(b.gen, 1);
    s_fail_plans(&b, &a, WAIT_MS, 0);
    assert_string_equal(b.run, "");
    assert_int_equal(b.run_command, SHOAL__RUN_COMMAND__RUN_CMD_STOP);
    assert_string_equal(b.control_run, run);
    assert_string_equal(tc_worker_state(s_dir, b.id), "quarantined");
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    for (int64_t end = s_deadline(); a.gen < 4 && clock_mono_ms() < end;)
        tc_beat(both, 1, 50, HB_MS, 0, false);
    assert_int_equal(a.gen, 4);
    assert_int_equal(a.dp, 1);

    /* a failure that outlives the quarantine (the worker missed its stop) is stale: dropped
     * (each heartbeat is answered before the next is sent: all are handled before the events
     * are read) */
    snprintf(b.run, sizeof b.run, "%s", run);
    b.gen = 3;
    s_fail_plans(&b, &a, 600, 0);

    json_t *ev = s_events(run);
    json_t *plans = s_kind(ev, "plan");
    json_t *quar = s_kind(ev, "quarantine");
    assert_int_equal(json_array_size(plans), 4); /* gen 1, two failure re-plans, one without b */
    assert_true(s_plan_gap_ms(plans, 2) >= 950); /* the second failure waited the back-off */
    assert_int_equal(json_array_size(quar), 1);
    json_t *qd = json_object_get(json_array_get(quar, 0), "detail");
    assert_string_equal(tc_jstr(qd, "worker"), b.id);
    assert_int_equal(tc_jint(qd, "failures"), 3);
    assert_non_null(strstr(tc_jstr(qd, "detail"), "missing.txt"));
    json_t *last = json_object_get(json_array_get(plans, 3), "detail");
    assert_int_equal(json_array_size(json_object_get(last, "workers")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(last, "workers"), 0)),
                        a.id);
    json_t *ws = s_kind(ev, "worker_state");
    int drained = 0;
    for (size_t i = 0; i < json_array_size(ws); i++) {
        json_t *d = json_object_get(json_array_get(ws, i), "detail");
        if (strcmp(tc_jstr(d, "worker"), b.id) == 0 &&
            strcmp(tc_jstr(d, "to"), "quarantined") == 0 &&
            strncmp(tc_jstr(d, "reason"), "quarantined: " MISSING, 20) == 0)
            drained++;
    }
    assert_int_equal(drained, 1);
    json_decref(ws);
    json_decref(quar);
    json_decref(plans);
    json_decref(ev);

    /* undrain: active again, and placed at the next boundary (a trains to the lease) */
    tc_reply_t r;
    b.run[0] = 0;
    b.gen = 0;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, b.id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_string_equal(tc_worker_state(s_dir, b.id), "active");
    /* the cron sees the join and freezes the lease (it logs so); a then trains up to it */
    char joins[96];
    snprintf(joins, sizeof joins, "%s joins): new plan after step", b.id);
    for (int64_t end = s_deadline(); !s_log_has(joins) && clock_mono_ms() < end;)
        tc_beat(both, 2, 50, HB_MS, a.committed, false);
    assert_true(s_log_has(joins));
    json_t *st = tc_run_status(s_dir, run);
    const int64_t lease = tc_jint(st, "lease");
    json_decref(st);
    for (int64_t k = a.committed + 1; k <= lease; k++)
        assert_int_equal(tc_worker_step(&a, k, 2.0f), 0);
    for (int64_t end = s_deadline(); (b.gen < 5 || a.gen < 5) && clock_mono_ms() < end;)
        tc_beat(both, 2, 50, HB_MS, a.committed, false);
    assert_int_equal(b.gen, 5);
    assert_int_equal(b.dp, 2);
    assert_int_equal(a.gen, 5);
    tc_worker_close(&a);
    tc_worker_close(&b);
    s_stop_clean();
}

/* The failure streak counts failures in a row: a step completed in between starts it again
 * and resets the back-off. When the only worker is quarantined the run is paused, unplaced:
 * state paused with the reason in its status and in the ledger's run_state entry, an
 * operator's resume refused (it resumes by itself); undrain places it again and it is running,
 * the reason cleared. Quarantine after 2
 * failures and a back-off of 10 minutes make each outcome a matter of what happens, not of
 * when: without the resets the second failure would quarantine, or its re-plan would not come
 * within the test's wait. */
static void test_streak_and_unplaced(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n"
                             "quarantine_after_failures: 2\nreplan_backoff_ms: 600000\n"
                             "replan_backoff_max_ms: 600000\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a;
    s_join(&a, "su", 1);
    /* the first failure re-plans at once (generation 2) and starts the 10-minute back-off */
    s_fail_plans(&a, NULL, WAIT_MS, 2);
    assert_int_equal(a.gen, 2);
    /* a step under generation 2: the streak and the back-off start over */
    assert_int_equal(tc_worker_step(&a, a.start_step, 2.0f), 0);
    for (int64_t end = s_deadline(); a.committed < a.start_step && clock_mono_ms() < end;)
        tc_worker_pump(&a, 50);
    assert_int_equal(a.committed, a.start_step);
    /* so the next failure is the first in a row again: re-planned at once, not quarantined */
    s_fail_plans(&a, NULL, WAIT_MS, 3);
    assert_int_equal(a.gen, 3);
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    json_t *ev = s_events(run);
    json_t *plans = s_kind(ev, "plan");
    assert_int_equal(json_array_size(plans), 3);
    json_t *quar = s_kind(ev, "quarantine");
    assert_int_equal(json_array_size(quar), 0);
    json_decref(quar);
    json_decref(plans);
    json_decref(ev);
    /* the second failure in a row: quarantined, and nobody is left to place */
    s_fail_plans(&a, NULL, WAIT_MS, 0);
    assert_string_equal(a.run, "");
    assert_string_equal(tc_worker_state(s_dir, a.id), "quarantined");
    ev = s_events(run);
    quar = s_kind(ev, "quarantine");
    assert_int_equal(json_array_size(quar), 1);
    assert_int_equal(tc_jint(json_object_get(json_array_get(quar, 0), "detail"), "failures"), 2);
    json_decref(quar);
    json_decref(ev);
    json_t *st = NULL;
    for (int64_t end = s_deadline(); clock_mono_ms() < end; tc_sleep_ms(50)) {
        json_decref(st);
        st = tc_run_status(s_dir, run);
        if (strstr(tc_jstr(st, "reason"), "unplaced"))
            break;
    }
    assert_string_equal(tc_jstr(st, "state"), "paused");
    assert_non_null(strstr(tc_jstr(st, "reason"), "unplaced"));
    assert_non_null(strstr(tc_jstr(st, "reason"), "quarantined: " MISSING));
    assert_int_equal(tc_jint(st, "generation"), 3);
    json_decref(st);
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_STATE);
    assert_non_null(strstr(r.message, "waiting for workers"));
    tc_reply_fini(&r);
    /* undrain: placed again at once (its cells were lost, the back-off does not apply), the
     * reason cleared */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, a.id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    a.gen = 0;
    for (int64_t end = s_deadline(); a.gen < 4 && clock_mono_ms() < end;)
        tc_beat((tc_worker_t *[]){&a}, 1, 50, HB_MS, 0, false);
    assert_int_equal(a.gen, 4);
    st = tc_run_status(s_dir, run);
    assert_string_equal(tc_jstr(st, "reason"), "");
    assert_string_equal(tc_jstr(st, "state"), "running");
    json_decref(st);
    /* the ledger: running -> paused with the unplaced reason, then paused -> running */
    ev = s_events(run);
    json_t *rs = s_kind(ev, "run_state");
    int paused = 0, placed = 0;
    for (size_t i = 0; i < json_array_size(rs); i++) {
        json_t *d = json_object_get(json_array_get(rs, i), "detail");
        if (strcmp(tc_jstr(d, "to"), "paused") == 0 &&
            strncmp(tc_jstr(d, "reason"), "unplaced: ", 10) == 0)
            paused++;
        if (strcmp(tc_jstr(d, "from"), "paused") == 0 && strcmp(tc_jstr(d, "to"), "running") == 0 &&
            strstr(tc_jstr(d, "reason"), "placed: plan generation 4"))
            placed++;
    }
    assert_int_equal(paused, 1);
    assert_int_equal(placed, 1);
    json_decref(rs);
    json_decref(ev);
    /* the worker was told: PAUSE while unplaced, then RESUME with the new plan */
    for (int64_t end = s_deadline();
         a.run_command != SHOAL__RUN_COMMAND__RUN_CMD_RESUME && clock_mono_ms() < end;)
        tc_worker_pump(&a, 50);
    assert_int_equal(a.run_command, SHOAL__RUN_COMMAND__RUN_CMD_RESUME);
    tc_worker_close(&a);
    s_stop_clean();
}

/* With quarantine off (quarantine_after_failures: 0) a worker failing every plan is re-planned
 * forever, but at most once per back-off: replan_backoff_ms doubling to replan_backoff_max_ms.
 * The plans come at about 0, 0, 0.2, 0.6, 1.0, 1.4, ... s: 12 within a few seconds, within
 * the test's 30 s wait even on a loaded machine; without the cap the twelfth would come after
 * 0.2 * (2^10 - 1) = 205 s, without a back-off the gaps would be a heartbeat (50 ms). */
static void test_failure_backoff(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\n"
                             "quarantine_after_failures: 0\nreplan_backoff_ms: 200\n"
                             "replan_backoff_max_ms: 400\n");
    char run[64];
    s_submit(run, sizeof run);
    tc_worker_t a;
    s_join(&a, "fb", 1);
    s_fail_plans(&a, NULL, WAIT_MS, 12);
    assert_int_equal(a.gen, 12);
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    json_t *ev = s_events(run);
    json_t *plans = s_kind(ev, "plan");
    const size_t n = json_array_size(plans);
    assert_true(n >= 12);
    assert_true(s_plan_gap_ms(plans, 2) >= 190);
    for (size_t i = 3; i < n; i++)
        assert_true(s_plan_gap_ms(plans, i) >= 390);
    json_decref(plans);
    json_decref(ev);
    tc_worker_close(&a);
    s_stop_clean();
}

/* The plan entries of the run's ledger (a new reference). */
static size_t s_n_plans(const char *run)
{
    json_t *ev = s_events(run), *plans = s_kind(ev, "plan");
    const size_t n = json_array_size(plans);
    json_decref(plans);
    json_decref(ev);
    return n;
}

/* dp 2 on 3 workers: a member dies and the spare takes its cell (one re-plan, generation 2).
 * The dead worker restarts and registers again: the planner sorts it first (the lowest id), yet
 * the survivors keep their cells and it only becomes the spare, so the plan keeps generation 2
 * and nobody gets a new assignment (bench_recovery saw every kill + restart move the
 * generation by 2: the restarted worker took a cell back from the spare that held it). */
static void test_restart_becomes_spare(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 1200\nstep_window: 2\n"
                             "min_workers: 3\n");
    char run[64], spec[512];
    snprintf(spec, sizeof spec, "%sparallel:\n  data_parallel: 2\n", s_spec);
    s_submit_spec(spec, run, sizeof run);
    tc_worker_t a, b, c;
    assert_int_equal(tc_worker_open(&a, s_dir, "rs-a"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "rs-b"), 0);
    assert_int_equal(tc_worker_open(&c, s_dir, "rs-c"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    assert_int_equal(tc_worker_register(&c), 0);
    tc_worker_t *all[3] = {&a, &b, &c};
    for (int64_t end = s_deadline(); (a.gen < 1 || b.gen < 1) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 0, false);
    assert_int_equal(a.gen, 1);
    assert_int_equal(b.gen, 1);
    assert_int_equal(c.gen, 0); /* the spare: no cell */
    assert_string_equal(tc_worker_state(s_dir, c.id), "standby");

    /* a is killed: its connection closes and it falls silent; the spare takes its cell */
    char a_id[64];
    snprintf(a_id, sizeof a_id, "%s", a.id);
    tc_worker_close(&a);
    tc_worker_t *left[3] = {NULL, &b, &c};
    for (int64_t end = s_deadline(); (b.gen < 2 || c.gen < 2) && clock_mono_ms() < end;)
        tc_beat(left, 3, 50, HB_MS, 0, false);
    assert_int_equal(b.gen, 2);
    assert_int_equal(c.gen, 2);
    assert_string_equal(tc_worker_state(s_dir, a_id), "dead");
    assert_int_equal(s_n_plans(run), 2); /* re-planned once */
    const uint32_t b_assigned = b.n_assignments, c_assigned = c.n_assignments;

    /* a restarts: a new process registering under its name, then heartbeating */
    assert_int_equal(tc_worker_open(&a, s_dir, "rs-a"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_string_equal(a.id, a_id);
    char joins[96];
    snprintf(joins, sizeof joins, "%s joins): new plan after step", a.id);
    for (int64_t end = s_deadline(); !s_log_has(joins) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, b.committed, false);
    assert_true(s_log_has(joins));
    /* the members train to the frozen lease: the boundary where a join is applied */
    json_t *st = tc_run_status(s_dir, run);
    const int64_t lease = tc_jint(st, "lease");
    json_decref(st);
    assert_true(lease >= 1);
    for (int64_t k = b.committed + 1; k <= lease; k++) {
        assert_int_equal(tc_worker_step(&b, k, 2.0f), 0);
        assert_int_equal(tc_worker_step(&c, k, 2.0f), 0);
    }
    for (int64_t end = s_deadline();
         strcmp(tc_worker_state(s_dir, a.id), "standby") != 0 && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, b.committed, false);
    assert_string_equal(tc_worker_state(s_dir, a.id), "standby");
    tc_beat(all, 3, 300, HB_MS, b.committed, false); /* a plan would have reached them by now */
    assert_int_equal(s_n_plans(run), 2);
    st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "generation"), 2);
    assert_true(tc_jint(st, "lease") > lease); /* the lease moves on: the join is settled */
    json_decref(st);
    assert_int_equal(a.gen, 0);
    assert_int_equal(b.gen, 2);
    assert_int_equal(c.gen, 2);
    assert_int_equal(b.n_assignments, b_assigned);
    assert_int_equal(c.n_assignments, c_assigned);
    tc_worker_close(&a);
    tc_worker_close(&b);
    tc_worker_close(&c);
    s_stop_clean();
}

/* A coordinator with config `cfg` and a dp 1 run (checkpoint.replicas 2) on three workers with
 * shard servers, named prefix-a/b/c: a (the lowest id) holds the cell, b and c are spares. a
 * trains steps 1 and 2 and commits checkpoint 2 (the copy orders follow). The run's id goes to
 * run. */
static void s_replicated_ckpt(const char *cfg, const char *prefix, tc_worker_t **all, char *run,
                              size_t run_cap)
{
    tc_pid = tc_start(s_dir, cfg);
    char spec[512];
    snprintf(spec, sizeof spec, "%sparallel:\n  data_parallel: 1\n", s_spec);
    s_submit_spec(spec, run, run_cap);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s-%c", prefix, 'a' + i);
        assert_int_equal(tc_worker_open(all[i], s_dir, name), 0);
        snprintf(all[i]->shard_endpoint, sizeof all[i]->shard_endpoint,
                 "ipc:///tmp/%s-shards.sock", name);
        assert_int_equal(tc_worker_register(all[i]), 0);
    }
    for (int64_t end = s_deadline(); all[0]->gen < 1 && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 0, false);
    assert_int_equal(all[0]->gen, 1);
    assert_int_equal(all[1]->gen, 0);
    assert_int_equal(tc_worker_step(all[0], 1, 3.0f), 0);
    assert_int_equal(tc_worker_step(all[0], 2, 2.5f), 0);
    assert_int_equal(tc_worker_ckpt(all[0], 2), 0);
}

/* checkpoint.replicas 2 on dp 1 + 2 spares with shard servers: when checkpoint 2 commits,
 * both spares are told to copy the writer's shard. One confirms its copy at once and is never
 * told again; the other never confirms: the order is sent again after replicate_ack_ms, then
 * after twice that, and after replicate_retries (2) re-sends the coordinator gives up and
 * logs so: 3 orders in all. */
static void test_replicate_resent(void **state)
{
    (void)state;
    tc_worker_t a, b, c;
    tc_worker_t *all[3] = {&a, &b, &c};
    char run[64];
    s_replicated_ckpt("heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n"
                      "min_workers: 3\nreplicate_ack_ms: 300\nreplicate_retries: 2\n"
                      "replica_repair_ms: 0\n",
                      "rp", all, run, sizeof run);
    int b_confirmed_at = -1;
    for (int64_t end = s_deadline(); !s_log_has("never confirmed") && clock_mono_ms() < end;) {
        tc_beat(all, 3, 50, HB_MS, 2, false);
        if (b.n_replicates && b_confirmed_at < 0) {
            assert_int_equal(tc_worker_shard_held(&b), 0);
            b_confirmed_at = b.n_replicates;
        }
    }
    assert_true(s_log_has("never confirmed"));
    tc_beat(all, 3, 700, HB_MS, 2, false); /* a fourth order would come 1.2 s after the third */
    assert_int_equal(c.n_replicates, 3);
    assert_int_equal(c.repl_step, 2);
    assert_string_equal(c.repl_writer, a.id);
    assert_int_equal(b_confirmed_at, 1);
    assert_int_equal(b.n_replicates, 1); /* confirmed: never sent again */
    assert_true(s_log_has("order sent again (2 of 3)"));
    assert_true(s_log_has("order sent again (3 of 3)"));
    tc_worker_close(&a);
    tc_worker_close(&b);
    tc_worker_close(&c);
    s_stop_clean();
}

/* Replication orders live in memory; the periodic repair scan (replica_repair_ms) brings a
 * restarted coordinator's shards back to replicas + 1. checkpoint.replicas 2 on dp 1 + 2 spares:
 * both spares get an order for checkpoint 2 and confirm none. While those orders are followed
 * (replicate_ack_ms 30 s) the scan orders nothing more. After a SIGKILL and restart the
 * coordinator has forgotten them: once the workers are back, the scan orders both copies
 * again; after both confirm, later scans order nothing. */
static void test_repair_after_restart(void **state)
{
    (void)state;
    const char *cfg = "heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n"
                      "min_workers: 3\nreplica_repair_ms: 500\n";
    tc_worker_t a, b, c;
    tc_worker_t *all[3] = {&a, &b, &c};
    char run[64];
    s_replicated_ckpt(cfg, "rr", all, run, sizeof run);
    for (int64_t end = s_deadline();
         (!b.n_replicates || !c.n_replicates) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 2, false);
    tc_beat(all, 3, 1500, HB_MS, 2, false); /* three scans: the orders are still followed */
    assert_int_equal(b.n_replicates, 1);
    assert_int_equal(c.n_replicates, 1);
    assert_false(s_log_has("short of holders"));

    tc_stop(tc_pid, SIGKILL);
    tc_pid = tc_start(s_dir, cfg);
    for (int64_t end = s_deadline();
         (b.n_replicates < 2 || c.n_replicates < 2) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 2, true);
    assert_int_equal(b.n_replicates, 2);
    assert_int_equal(c.n_replicates, 2);
    assert_int_equal(c.repl_step, 2);
    assert_string_equal(c.repl_writer, a.id);
    assert_true(s_log_has("short of holders, 2 new copies ordered"));
    assert_int_equal(tc_worker_shard_held(&b), 0);
    assert_int_equal(tc_worker_shard_held(&c), 0);
    tc_beat(all, 3, 1500, HB_MS, 2, true); /* 3 holders: nothing more to order */
    assert_int_equal(b.n_replicates, 2);
    assert_int_equal(c.n_replicates, 2);
    tc_worker_close(&a);
    tc_worker_close(&b);
    tc_worker_close(&c);
    s_stop_clean();
}

/* checkpoint.replicas 2 on dp 1 + 2 spares: both spares confirm their copies of checkpoint
 * 2 (3 holders). The writer then reports that one spare's copy failed its digests: that
 * holder leaves the shard's holders (a shard_corrupt ledger entry naming holder, writer and
 * reporter) and a new copy is ordered, to the only live worker holding none: that spare. A
 * report about a worker that holds no copy changes nothing. */
static void test_shard_corrupt(void **state)
{
    (void)state;
    tc_worker_t a, b, c;
    tc_worker_t *all[3] = {&a, &b, &c};
    char run[64];
    s_replicated_ckpt("heartbeat_interval_ms: 100\ndead_after_ms: 2000\nstep_window: 2\n"
                      "min_workers: 3\nreplicate_ack_ms: 0\nreplica_repair_ms: 0\n",
                      "sc", all, run, sizeof run);
    for (int64_t end = s_deadline();
         (!b.n_replicates || !c.n_replicates) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 2, false);
    assert_int_equal(b.n_replicates, 1);
    assert_int_equal(c.n_replicates, 1);
    assert_int_equal(tc_worker_shard_held(&b), 0);
    assert_int_equal(tc_worker_shard_held(&c), 0);
    assert_true(s_log_has("holds a copy of") && s_log_has("(3 holders)"));

    /* a report about a worker holding no copy: nothing changes */
    assert_int_equal(tc_worker_shard_corrupt(&a, 2, a.id, "w99"), 0);
    tc_beat(all, 3, 300, HB_MS, 2, false);
    assert_int_equal(b.n_replicates + c.n_replicates, 2);

    assert_int_equal(tc_worker_shard_corrupt(&a, 2, a.id, c.id), 0);
    for (int64_t end = s_deadline(); c.n_replicates < 2 && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 2, false);
    assert_int_equal(c.n_replicates, 2); /* ordered again: the only live non-holder */
    assert_int_equal(b.n_replicates, 1);
    assert_string_equal(c.repl_writer, a.id);
    assert_true(s_log_has("is corrupt (found by") && s_log_has("(2 left)"));
    json_t *ev = s_events(run), *bad = s_kind(ev, "shard_corrupt");
    assert_int_equal(json_array_size(bad), 1);
    json_t *d = json_object_get(json_array_get(bad, 0), "detail");
    assert_string_equal(tc_jstr(d, "holder"), c.id);
    assert_string_equal(tc_jstr(d, "writer"), a.id);
    assert_string_equal(tc_jstr(d, "reported_by"), a.id);
    assert_int_equal(tc_jint(d, "step"), 2);
    json_decref(bad);
    json_decref(ev);
    /* its new verified copy counts again */
    assert_int_equal(tc_worker_shard_held(&c), 0);
    tc_worker_close(&a);
    tc_worker_close(&b);
    tc_worker_close(&c);
    s_stop_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pause_resume_states, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_push_generations, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_stale_heartbeat_activates, s_fresh_dir,
                                        tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_deaths_coalesced, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_quarantine, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_streak_and_unplaced, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_failure_backoff, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_restart_becomes_spare, s_fresh_dir,
                                        tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_replicate_resent, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_shard_corrupt, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_repair_after_restart, s_fresh_dir,
                                        tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
