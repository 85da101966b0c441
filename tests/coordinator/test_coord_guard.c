/* test_coord_guard: the real shoal-coordinator against fake DEALER workers that misbehave:
 * malformed and misplaced messages quarantine their sender after quarantine_after_bad_messages,
 * a connection over its message rate is cut to its bucket (the excess dropped unanswered and
 * counted), and the gradient-sanity reports of a dp 3 run quarantine the replica a majority of
 * its peers reject, never one a single peer accuses. undrain restores a quarantined worker. */
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

#include <zmq.h>

#include "clock.h"
#include "coord_testlib.h"
#include "wire.h"

#define HB_MS 100
#define WAIT_MS 30000

static const char *s_spec = "name: guard\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 40\n  global_batch: 6\n  seq_len: 32\n  lr: 1e-3\n"
                            "parallel:\n  data_parallel: 3\n";

static char s_root[128], s_dir[160];
static int s_n_dirs;

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_root, sizeof s_root, "shoal-cg");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

static int s_fresh_dir(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "%s/t%d", s_root, ++s_n_dirs);
    return mkdir(s_dir, 0755);
}

static void s_stop_clean(void)
{
    int st = tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void s_active(tc_worker_t *w, const char *name)
{
    assert_int_equal(tc_worker_open(w, s_dir, name), 0);
    assert_int_equal(tc_worker_register(w), 0);
    assert_int_equal(tc_worker_heartbeat(w, 0), 0);
    assert_string_equal(tc_worker_state(s_dir, w->id), "active");
}

static void s_undrain(const char *id)
{
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    assert_string_equal(tc_worker_state(s_dir, id), "active");
}

/* Three bad messages (quarantine_after_bad_messages: 3): two that do not decode and one type
 * the worker socket does not take. The first two leave the worker active; the third
 * quarantines it, with the reason in `quarantine`; a drain is then refused as pointless;
 * undrain makes it active, and its count starts again. */
static void test_bad_messages(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 5000\n"
                             "quarantine_after_bad_messages: 3\n");
    tc_worker_t a;
    s_active(&a, "ga");
    const char junk[] = "\xff\xff\xff\xff not an envelope";
    for (int i = 0; i < 2; i++) {
        assert_int_equal(zmq_send(a.sock, junk, sizeof junk, 0), (int)sizeof junk);
        tc_worker_pump(&a, 200);
        assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    }
    Shoal__CtlStatus cs = SHOAL__CTL_STATUS__INIT;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_STATUS, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_CTL_STATUS;
    env.ctl_status = &cs;
    assert_int_equal(tc_worker_call(&a, &env), SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE);
    assert_string_equal(tc_worker_state(s_dir, a.id), "quarantined");
    assert_non_null(strstr(tc_worker_field(s_dir, a.id, "reason"), "3 malformed or out-of-plan"));
    /* it keeps heartbeating: live, but told to drain (in no plan) */
    assert_int_equal(tc_worker_heartbeat(&a, 0), 0);
    assert_int_equal(a.last_directive, SHOAL__DIRECTIVE__DIRECTIVE_DRAIN);
    s_undrain(a.id);
    assert_int_equal(zmq_send(a.sock, junk, sizeof junk, 0), (int)sizeof junk);
    tc_worker_pump(&a, 200);
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    tc_worker_close(&a);
    s_stop_clean();
}

/* rate_limit_msgs_per_s 20, burst 10: 200 heartbeats sent at once get about 10 answers (the
 * bucket, plus what refills while they are read); after a second the connection is served
 * again. */
static void test_rate_limit(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 60000\n"
                             "rate_limit_msgs_per_s: 20\nrate_limit_burst: 10\n");
    tc_worker_t a;
    s_active(&a, "ra");
    tc_sleep_ms(600); /* the bucket refills */
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "", a.id, 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    for (int i = 0; i < 200; i++) {
        env.seq = 1000 + (uint64_t)i;
        assert_int_equal(wire_send(a.sock, NULL, &env, 0), SHOAL_OK);
    }
    int answers = 0;
    for (int64_t end = clock_mono_ms() + 1500; clock_mono_ms() < end;) {
        zmq_pollitem_t it = {a.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) > 0) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, a.sock, 0) >= 0)
                answers++;
            zmq_msg_close(&m);
        }
    }
    print_message("200 heartbeats at once: %d answered\n", answers);
    assert_true(answers >= 10 && answers <= 40);
    tc_sleep_ms(1000);
    assert_int_equal(tc_worker_heartbeat(&a, 0), 0);
    assert_string_equal(tc_worker_state(s_dir, a.id), "active");
    tc_worker_close(&a);
    s_stop_clean();
}

/* A step report that names rejected replicas (bit = replica), from w. */
static int s_report_rejected(tc_worker_t *w, int64_t step, uint64_t rejected)
{
    Shoal__StepReport sr = SHOAL__STEP_REPORT__INIT;
    sr.step = step;
    sr.loss = 3.0f;
    sr.tokens = 192;
    sr.rejected_replicas = rejected;
    sr.reject_detail = "replica x: non-finite gradient";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_STEP_REPORT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_STEP_REPORT;
    env.step_report = &sr;
    return tc_worker_call(w, &env);
}

/* dp 3: a lone accuser quarantines nobody; once a second peer names the same replica, its
 * worker is quarantined (ledger `quarantine`, cause "gradient rejected") and the run re-plans
 * without it. A report naming a replica beyond data_parallel is a bad message. */
static void test_gradient_votes(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 5000\nmin_workers: 3\n"
                             "step_window: 4\n");
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    char run[64];
    snprintf(run, sizeof run, "%s", tc_jstr(r.json, "id"));
    tc_reply_fini(&r);
    tc_worker_t w[3];
    tc_worker_t *all[3] = {&w[0], &w[1], &w[2]};
    const char *names[3] = {"va", "vb", "vc"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tc_worker_open(&w[i], s_dir, names[i]), 0);
        assert_int_equal(tc_worker_register(&w[i]), 0);
    }
    for (int64_t end = clock_mono_ms() + WAIT_MS;
         (w[0].gen < 1 || w[1].gen < 1 || w[2].gen < 1) && clock_mono_ms() < end;)
        tc_beat(all, 3, 50, HB_MS, 0, false);
    assert_int_equal(w[0].dp, 3);
    /* each worker's replica is its rank (dp 3, pp 1, ep 1) */
    tc_worker_t *by_rank[3] = {0};
    for (int i = 0; i < 3; i++)
        by_rank[w[i].rank] = &w[i];
    tc_worker_t *bad = by_rank[2];
    /* replica 2 accuses replica 0 alone: nothing happens */
    assert_int_equal(s_report_rejected(bad, 1, 1u << 0), 0);
    assert_string_equal(tc_worker_state(s_dir, by_rank[0]->id), "active");
    /* replica 0 names replica 2: one vote of the two needed */
    assert_int_equal(s_report_rejected(by_rank[0], 1, 1u << 2), 0);
    assert_string_equal(tc_worker_state(s_dir, bad->id), "active");
    /* replica 1 too: a majority of replica 2's peers */
    assert_int_equal(s_report_rejected(by_rank[1], 1, 1u << 2), 0);
    assert_string_equal(tc_worker_state(s_dir, bad->id), "quarantined");
    assert_string_equal(tc_worker_state(s_dir, by_rank[0]->id), "active");
    assert_non_null(
        strstr(tc_worker_field(s_dir, bad->id, "reason"), "gradient rejected by 2 of 2"));
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_EVENTS, run, 0, &r), 0);
    json_t *ev = json_object_get(r.json, "events");
    int found = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        json_t *d = json_object_get(e, "detail");
        if (strcmp(tc_jstr(e, "kind"), "quarantine") == 0 &&
            strcmp(tc_jstr(d, "worker"), bad->id) == 0 &&
            strcmp(tc_jstr(d, "cause"), "gradient rejected") == 0)
            found++;
    }
    tc_reply_fini(&r);
    assert_int_equal(found, 1);
    /* a replica outside data_parallel: a strike, not a vote */
    assert_int_equal(s_report_rejected(by_rank[0], 1, 1u << 5), 0);
    assert_string_equal(tc_worker_state(s_dir, by_rank[0]->id), "active");
    for (int i = 0; i < 3; i++)
        tc_worker_close(&w[i]);
    s_stop_clean();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_messages, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_rate_limit, s_fresh_dir, tc_kill_leftover),
        cmocka_unit_test_setup_teardown(test_gradient_votes, s_fresh_dir, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
