/* test_coord_daemon: the real shoal-coordinator on ipc:// in a temp dir with fake-but-real
 * DEALER workers: registration, heartbeats, data-parallel plans and their generations, the step
 * barrier and leases, checkpoint commits, join at a step boundary, death of a silent worker,
 * drain/undrain, pause/resume/cancel, events/verify/plan, and a SIGKILL + restart mid-run after
 * which the run completes with no committed step or checkpoint lost and the ledger verifying. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord_testlib.h"

#define HB_MS 100
#define DEAD_MS 1200
#define CONFIG                                                                                     \
    "heartbeat_interval_ms: 100\n"                                                                 \
    "dead_after_ms: 1200\n"                                                                        \
    "step_window: 2\n"                                                                             \
    "min_workers: 2\n"                                                                             \
    "log_level: debug\n"

static const char *s_spec = "name: daemon-test\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 8\n  global_batch: 4\n  seq_len: 32\n  lr: 1e-3\n"
                            "checkpoint:\n  every_steps: 2\n";

static char s_dir[128];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_dir, sizeof s_dir, "shoal-cd");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_dir);
}

/* Every worker in ws trains steps (from, to], reporting each, and waits for the commit. */
static void s_train(tc_worker_t **ws, int n, int64_t from, int64_t to)
{
    for (int64_t k = from + 1; k <= to; k++) {
        for (int i = 0; i < n; i++) {
            assert_true(k <= ws[i]->lease);
            assert_int_equal(tc_worker_step(ws[i], k, 3.0f - 0.1f * (float)k), 0);
        }
        for (int i = 0; i < n; i++) {
            for (int t = 0; t < 200 && ws[i]->committed < k; t++) /* synced writes may be slow */
                tc_worker_pump(ws[i], 25);
            assert_int_equal(ws[i]->committed, k);
        }
    }
}

static void test_daemon_lifecycle(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, CONFIG);
    tc_reply_t r;

    /* a bad spec is refused with its position */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, "name: x\ntrain: [1\n", 0, &r),
                     0);
    assert_false(r.ok);
    assert_non_null(strstr(r.message, "test.yaml:"));
    tc_reply_fini(&r);

    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    char run[32];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    assert_string_equal(run, "r1");
    tc_reply_fini(&r);
    /* the same name twice is refused */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_false(r.ok);
    tc_reply_fini(&r);
    json_t *st = tc_run_status(s_dir, "daemon-test"); /* by name */
    assert_string_equal(tc_jstr(st, "state"), "pending");
    json_decref(st);

    /* two workers register and heartbeat: the run starts with a dp=2 plan, generation 1 */
    tc_worker_t a, b, c;
    tc_worker_t *all[3] = {&a, &b, &c};
    assert_int_equal(tc_worker_open(&a, s_dir, "node-a"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "node-b"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    assert_string_equal(a.id, "w1");
    assert_string_equal(b.id, "w2");
    assert_string_equal(tc_worker_state(s_dir, "w1"), "joining");
    tc_beat(all, 2, 600, HB_MS, 0, true);
    assert_string_equal(tc_worker_state(s_dir, "w1"), "active");
    assert_string_equal(a.run, "r1");
    assert_int_equal(a.gen, 1);
    assert_int_equal(b.gen, 1);
    assert_int_equal(a.dp, 2);
    assert_int_equal(a.rank + b.rank, 1);
    assert_int_equal(a.source, SHOAL__STATE_SOURCE__STATE_SOURCE_INIT);
    assert_int_equal(a.start_step, 1);
    assert_int_equal(a.lease, 2);

    /* barrier: step 1 is committed only when both reported it */
    assert_int_equal(tc_worker_step(&a, 1, 3.0f), 0);
    st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "step"), 0);
    json_decref(st);
    assert_int_equal(tc_worker_step(&b, 1, 3.2f), 0);
    tc_worker_pump(&a, 50);
    assert_int_equal(a.committed, 1);
    assert_int_equal(a.lease, 3);
    st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "step"), 1);
    assert_string_equal(tc_jstr(st, "state"), "running");
    json_decref(st);
    /* a step beyond the lease is refused */
    assert_int_equal(tc_worker_step(&a, 9, 1.0f), SHOAL__ERROR_CODE__ERR_INVALID);
    tc_worker_t *ab[2] = {&a, &b};
    s_train(ab, 2, 1, 2);

    /* checkpoint of step 2: committed only when both cells reported their shard */
    assert_int_equal(tc_worker_ckpt(&a, 2), 0);
    st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "checkpoint_step"), 0);
    json_decref(st);
    assert_int_equal(tc_worker_ckpt(&b, 2), 0);
    st = tc_run_status(s_dir, run);
    assert_int_equal(tc_jint(st, "checkpoint_step"), 2);
    json_decref(st);
    assert_int_equal(tc_worker_ckpt(&b, 2), 0); /* a retry: acknowledged, nothing changes */

    /* a third worker joins: the lease freezes, the new plan starts at the boundary */
    assert_int_equal(tc_worker_open(&c, s_dir, "node-c"), 0);
    assert_int_equal(tc_worker_register(&c), 0);
    tc_beat(all, 3, 300, HB_MS, 2, true);
    assert_int_equal(a.gen, 1); /* not before the boundary */
    assert_int_equal(c.gen, 0);
    int64_t boundary = a.lease;
    s_train(ab, 2, 2, boundary);
    tc_beat(all, 3, 300, HB_MS, boundary, true);
    assert_int_equal(a.gen, 2);
    assert_int_equal(c.gen, 2);
    assert_int_equal(c.dp, 3);
    assert_int_equal(c.start_step, boundary + 1);
    assert_int_equal(c.source, SHOAL__STATE_SOURCE__STATE_SOURCE_PEER);

    /* old generation and wrong run are dropped, not applied */
    uint64_t g = a.gen;
    a.gen = 1;
    assert_int_equal(tc_worker_step(&a, boundary + 1, 1.0f),
                     SHOAL__ERROR_CODE__ERR_STALE_GENERATION);
    a.gen = g;
    char saved[64];
    snprintf(saved, sizeof saved, "%s", a.run);
    snprintf(a.run, sizeof a.run, "r99");
    assert_int_equal(tc_worker_step(&a, boundary + 1, 1.0f), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    snprintf(a.run, sizeof a.run, "%s", saved);

    /* dry-run plan and current plan */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PLAN, run, 0, &r), 0);
    assert_true(r.ok);
    json_t *plan = json_object_get(r.json, "plan");
    assert_int_equal(tc_jint(plan, "generation"), 2);
    assert_int_equal(tc_jint(json_object_get(plan, "topology"), "dp"), 3);
    assert_int_equal(json_array_size(json_object_get(plan, "stages")), 1);
    tc_reply_fini(&r);

    /* node-b goes silent: dead after dead_after, new plan (generation 3) without it */
    tc_worker_t *ac[3] = {&a, &c, NULL};
    tc_beat(ac, 2, DEAD_MS + 600, HB_MS, boundary, true);
    assert_string_equal(tc_worker_state(s_dir, "w2"), "dead");
    assert_int_equal(a.gen, 3);
    assert_int_equal(a.dp, 2);
    /* the dead worker coming back must register again */
    assert_int_equal(tc_worker_heartbeat(&b, boundary), SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER);

    /* drain and undrain node-c: drained after the boundary, back to active */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_DRAIN, "node-c", 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_string_equal(tc_worker_state(s_dir, "w3"), "draining");
    tc_beat(ac, 2, 200, HB_MS, a.committed, true); /* the cron freezes the lease */
    tc_worker_t *ac2[2] = {&a, &c};
    int64_t from = a.committed;
    s_train(ac2, 2, from, a.lease);
    tc_beat(ac, 2, 300, HB_MS, a.committed, true);
    assert_string_equal(tc_worker_state(s_dir, "w3"), "drained");
    assert_int_equal(a.gen, 4);
    assert_int_equal(a.dp, 1);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, "w3", 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_string_equal(tc_worker_state(s_dir, "w3"), "active");

    /* pause and resume */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_pump(&a, 50);
    assert_int_equal(a.run_command, SHOAL__RUN_COMMAND__RUN_CMD_PAUSE);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_PAUSE, run, 0, &r), 0);
    assert_false(r.ok); /* already paused */
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_RESUME, run, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);

    /* SIGKILL mid-run, restart on the same state dir */
    st = tc_run_status(s_dir, run);
    json_int_t step_before = tc_jint(st, "step"), ckpt_before = tc_jint(st, "checkpoint_step");
    json_int_t gen_before = tc_jint(st, "generation");
    json_decref(st);
    assert_true(step_before >= 4);
    /* mid-traffic: a step report in flight (not yet answered) when the coordinator dies */
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = a.committed + 1;
    sr.loss = 2.0f;
    Shoal__Envelope senv;
    wire_envelope_init(&senv, SHOAL__MSG_TYPE__MSG_STEP_REPORT, a.run, a.id, a.gen, ++a.seq);
    senv.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    senv.step_report = &sr;
    assert_int_equal(wire_send(a.sock, NULL, &senv, 0), SHOAL_OK);
    int ws = tc_stop(tc_pid, SIGKILL);
    assert_true(WIFSIGNALED(ws));
    tc_pid = tc_start(s_dir, CONFIG);
    st = tc_run_status(s_dir, run);
    assert_string_equal(tc_jstr(st, "state"), "running");
    /* committed state survived: the step that was in flight may or may not have landed */
    assert_true(tc_jint(st, "step") == step_before || tc_jint(st, "step") == step_before + 1);
    assert_int_equal(tc_jint(st, "checkpoint_step"), ckpt_before);
    assert_int_equal(tc_jint(st, "generation"), gen_before);
    json_decref(st);

    /* the workers reconnect on their own (same ids, same generation) and finish the run;
     * node-c (active again) joins at the next boundary */
    tc_beat(ac, 2, 400, HB_MS, a.committed, true);
    assert_string_equal(tc_worker_state(s_dir, "w1"), "active");
    for (int guard = 0; guard < 20 && a.run[0]; guard++) {
        tc_worker_t *members[2];
        int n = 0;
        if (a.run[0])
            members[n++] = &a;
        if (c.run[0] && c.gen == a.gen)
            members[n++] = &c;
        int64_t k = a.committed;
        if (k < a.lease) {
            s_train(members, n, k, a.lease);
            if (a.committed % 2 == 0)
                for (int i = 0; i < n; i++)
                    assert_int_equal(tc_worker_ckpt(members[i], a.committed), 0);
        }
        tc_beat(ac, 2, 200, HB_MS, a.committed, true);
    }
    st = tc_run_status(s_dir, run);
    assert_string_equal(tc_jstr(st, "state"), "done");
    assert_int_equal(tc_jint(st, "step"), 8);
    assert_int_equal(tc_jint(st, "checkpoint_step"), 8);
    json_decref(st);
    assert_int_equal(a.run_command, SHOAL__RUN_COMMAND__RUN_CMD_STOP);

    /* ledger: events and verify */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_EVENTS, run, 0, &r), 0);
    assert_true(r.ok);
    json_t *evs = json_object_get(r.json, "events");
    int plans = 0, ckpts = 0, submit = 0;
    for (size_t i = 0; i < json_array_size(evs); i++) {
        const char *kind = tc_jstr(json_array_get(evs, i), "kind");
        plans += strcmp(kind, "plan") == 0;
        ckpts += strcmp(kind, "checkpoint") == 0;
        submit += strcmp(kind, "submit") == 0;
    }
    assert_int_equal(submit, 1);
    assert_true(plans >= 4);
    assert_true(ckpts >= 2); /* step 2, ..., step 8 */
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_VERIFY, run, 0, &r), 0);
    assert_true(r.ok);
    assert_true(json_is_true(json_object_get(r.json, "ok")));
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_VERIFY, "cluster", 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);

    /* unknown run / worker names are errors, not crashes */
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_CANCEL, "nope", 0, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, SHOAL__ERROR_CODE__ERR_NOT_FOUND);
    tc_reply_fini(&r);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_DRAIN, "nope", 0, &r), 0);
    assert_false(r.ok);
    tc_reply_fini(&r);

    uint64_t last_gen = a.gen;

    /* a second run starts on the free workers with a generation never used before (unique
     * across runs), and can be cancelled while running */
    char spec2[512];
    snprintf(spec2, sizeof spec2, "%s", s_spec);
    memcpy(spec2 + 6, "daemon-tesu", 11);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec2, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_beat(ac, 2, 400, HB_MS, 0, true);
    assert_string_equal(a.run, "r2");
    assert_true(a.gen > last_gen);
    assert_int_equal(a.source, SHOAL__STATE_SOURCE__STATE_SOURCE_INIT);
    st = tc_run_status(s_dir, "daemon-tesu");
    assert_string_equal(tc_jstr(st, "state"), "running");
    json_decref(st);
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_CANCEL, "daemon-tesu", 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_pump(&a, 50);
    assert_int_equal(a.run_command, SHOAL__RUN_COMMAND__RUN_CMD_STOP);
    assert_string_equal(a.run, "");

    /* leave: clean exit */
    Shoal__Leave lv = SHOAL__LEAVE__INIT;
    lv.reason = "SIGTERM";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_LEAVE, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_LEAVE;
    env.leave = &lv;
    assert_int_equal(tc_worker_call(&a, &env), 0);
    assert_string_equal(tc_worker_state(s_dir, "w1"), "left");

    /* SIGTERM: clean exit 0 */
    int wst = tc_stop(tc_pid, SIGTERM);
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 0);
    tc_worker_close(&a);
    tc_worker_close(&b);
    tc_worker_close(&c);
}

/* With NOTIFY_SOCKET set, the daemon tells systemd READY=1 and pings WATCHDOG=1. */
static void test_sd_notify(void **state)
{
    (void)state;
#ifndef SHOAL_HAVE_SYSTEMD
    skip();
#else
    char path[100]; /* fits sun_path */
    snprintf(path, sizeof path, "%.80s/notify", s_dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    tc_pid = tc_start(s_dir, "log_level: warn\n");
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    int ready = 0, watchdog = 0;
    for (int i = 0; i < 20 && !(ready && watchdog); i++) {
        char buf[256];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            break;
        buf[n] = 0;
        ready |= strstr(buf, "READY=1") != NULL;
        watchdog |= strstr(buf, "WATCHDOG=1") != NULL;
    }
    assert_true(ready);
    assert_true(watchdog);
    int st = tc_stop(tc_pid, SIGTERM);
    assert_true(WIFEXITED(st));
    close(fd);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_daemon_lifecycle, tc_kill_leftover),
        cmocka_unit_test_teardown(test_sd_notify, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
