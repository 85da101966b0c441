/* test_coord_hostile: bad input on both sockets of the real shoal-coordinator: garbage bytes,
 * truncated and oversized protobufs, unknown types, bodies that do not match their type,
 * messages for the other socket, wrong run ids, old generations, bad names and specs. Each is
 * answered with an error (oversized frames: the peer is disconnected), nothing is applied, and
 * the daemon still answers a status request afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include "coord_testlib.h"

static char s_dir[128];

static void *s_ctx;

static int s_setup(void **state)
{
    (void)state;
    s_ctx = zmq_ctx_new();
    return tc_tmpdir_make(s_dir, sizeof s_dir, "shoal-ch");
}

static int s_teardown(void **state)
{
    (void)state;
    zmq_ctx_term(s_ctx);
    return tc_tmpdir_remove(s_dir);
}

static void *s_dealer(int control)
{
    char ep[300];
    if (control)
        tc_control_endpoint(s_dir, ep, sizeof ep);
    else
        tc_worker_endpoint(s_dir, ep, sizeof ep);
    void *s = zmq_socket(s_ctx, ZMQ_DEALER);
    int t = 2000, linger = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, ep), 0);
    return s;
}

typedef struct {
    int type, code, ok;
} s_answer_t;

static void s_on_answer(const Shoal__Envelope *env, void *ctx)
{
    s_answer_t *a = ctx;
    a->type = env->type;
    if (env->type == SHOAL__MSG_TYPE__MSG_ERROR)
        a->code = env->error->code;
    if (env->type == SHOAL__MSG_TYPE__MSG_CTL_REPLY) {
        a->code = env->ctl_reply->code;
        a->ok = env->ctl_reply->ok;
    }
    if (env->type == SHOAL__MSG_TYPE__MSG_REGISTER_REPLY)
        a->ok = env->reg_reply->accepted;
}

/* Sends raw frames and returns the answer (type 0 when none came within 2 s). */
static s_answer_t s_raw(void *sock, const void *buf, size_t len)
{
    zmq_send(sock, buf, len, 0);
    s_answer_t a = {0, 0, 0};
    wire_route_t route;
    (void)wire_recv(sock, 0, &route, s_on_answer, &a);
    return a;
}

static uint8_t *s_pack_raw(const Shoal__Envelope *env, size_t *len)
{
    *len = shoal__envelope__get_packed_size(env);
    uint8_t *buf = malloc(*len + 1);
    shoal__envelope__pack(env, buf);
    return buf;
}

static void s_expect_error(void *sock, int control, const void *buf, size_t len, int code)
{
    s_answer_t a = s_raw(sock, buf, len);
    if (control) {
        assert_int_equal(a.type, SHOAL__MSG_TYPE__MSG_CTL_REPLY);
        assert_false(a.ok);
    } else {
        assert_int_equal(a.type, SHOAL__MSG_TYPE__MSG_ERROR);
    }
    if (code)
        assert_int_equal(a.code, code);
}

static void s_status_still_works(pid_t pid)
{
    assert_true(tc_alive(pid));
    tc_reply_t r;
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_STATUS, "", 0, &r), 0);
    assert_true(r.ok);
    assert_non_null(json_object_get(r.json, "runs"));
    tc_reply_fini(&r);
}

/* SIGTERM: exit status 0 (under ASan also: no leak, no error on the way) */
static void s_stop_clean(pid_t pid)
{
    int st = tc_stop(pid, SIGTERM);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void s_bad_messages(pid_t pid, int control)
{
    void *s = s_dealer(control);
    /* garbage */
    s_expect_error(s, control, "\x00\xffgarbage\x13\x37", 11, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);
    /* empty frame */
    s_expect_error(s, control, "", 0, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);

    /* truncated: a valid message cut short, at every length */
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.step = 5;
    hb.detail = "fine";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "r1", "w1", 1, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    size_t len;
    uint8_t *buf = s_pack_raw(&env, &len);
    for (size_t cut = 1; cut < len; cut += 3)
        s_expect_error(s, control, buf, cut, 0);
    free(buf);

    /* unknown type */
    env.type = (Shoal__MsgType)77;
    buf = s_pack_raw(&env, &len);
    s_expect_error(s, control, buf, len, SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE);
    free(buf);

    /* body not matching the type */
    env.type = SHOAL__MSG_TYPE__MSG_STEP_REPORT;
    buf = s_pack_raw(&env, &len);
    s_expect_error(s, control, buf, len, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);
    free(buf);

    /* a message for the other socket */
    Shoal__CtlStatus cs = SHOAL__CTL_STATUS__INIT;
    cs.run = "";
    if (control) {
        env.type = SHOAL__MSG_TYPE__MSG_HEARTBEAT;
    } else {
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_STATUS, "", "ctl", 0, 1);
        env.body_case = SHOAL__ENVELOPE__BODY_CTL_STATUS;
        env.ctl_status = &cs;
    }
    buf = s_pack_raw(&env, &len);
    s_expect_error(s, control, buf, len, SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE);
    free(buf);

    /* too many frames */
    for (int i = 0; i < 6; i++)
        zmq_send(s, "x", 1, ZMQ_SNDMORE);
    s_expect_error(s, control, "x", 1, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE);

    /* random bytes, many of them */
    uint64_t x = 88172645463325252ull + (uint64_t)control;
    uint8_t junk[300];
    for (int it = 0; it < 200; it++) {
        size_t n = 1 + (size_t)(it * 7 % 299);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk[i] = (uint8_t)x;
        }
        s_answer_t a = s_raw(s, junk, n);
        assert_int_not_equal(a.type, 0); /* answered */
    }
    zmq_close(s);

    /* oversized: libzmq drops the peer before anything is allocated; no answer */
    void *big = s_dealer(control);
    size_t huge = (size_t)WIRE_MAX_MSG_BYTES + 4096;
    uint8_t *hb_buf = calloc(1, huge);
    assert_non_null(hb_buf);
    zmq_send(big, hb_buf, huge, 0);
    free(hb_buf);
    int t = 500;
    zmq_setsockopt(big, ZMQ_RCVTIMEO, &t, sizeof t);
    char tmp[16];
    assert_int_equal(zmq_recv(big, tmp, sizeof tmp, 0), -1);
    zmq_close(big);
    s_status_still_works(pid);
}

static void test_hostile_worker_socket(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\n");
    s_bad_messages(tc_pid, 0);
    s_stop_clean(tc_pid);
}

static void test_hostile_control_socket(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 2000\n");
    s_bad_messages(tc_pid, 1);
    /* hostile specs: every one refused with a message, none stored */
    const char *specs[] = {"",
                           "\x01\x02\xff",
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                           "name: a\n\tb: c",
                           "name: x\ndata: {files: [a]}\ntrain: {steps: -1}\n",
                           "*alias"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        tc_reply_t r;
        assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, specs[i], 0, &r), 0);
        assert_false(r.ok);
        assert_true(strlen(r.message) > 0);
        tc_reply_fini(&r);
    }
    json_t *st = tc_run_status(s_dir, "");
    assert_null(st); /* no run at all */

    /* a REQ client (an empty delimiter frame in the route) is answered too */
    char ep[300];
    tc_control_endpoint(s_dir, ep, sizeof ep);
    void *req = zmq_socket(s_ctx, ZMQ_REQ);
    int t = 2000, linger = 0;
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(req, ep), 0);
    Shoal__CtlWorkers wk = SHOAL__CTL_WORKERS__INIT;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_WORKERS, "", "ctl", 0, 1);
    env.body_case = SHOAL__ENVELOPE__BODY_CTL_WORKERS;
    env.ctl_workers = &wk;
    assert_int_equal(wire_send(req, NULL, &env, 0), SHOAL_OK);
    s_answer_t a = {0, 0, 0};
    wire_route_t route;
    assert_int_equal(wire_recv(req, 0, &route, s_on_answer, &a), SHOAL_OK);
    assert_int_equal(a.type, SHOAL__MSG_TYPE__MSG_CTL_REPLY);
    assert_true(a.ok);
    zmq_close(req);
    s_status_still_works(tc_pid);
    s_stop_clean(tc_pid);
}

static void test_wrong_run_and_generation(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 3000\nstep_window: 3\n");
    tc_reply_t r;
    const char *spec = "name: hostile\ndata: {files: [/usr/share/games/fortunes]}\n"
                       "train: {steps: 5, global_batch: 2, seq_len: 16, lr: 0.001}\n";
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);

    /* a bad worker name is refused */
    tc_worker_t bad;
    assert_int_equal(tc_worker_open(&bad, s_dir, "bad name!"), 0);
    assert_int_not_equal(tc_worker_register(&bad), 0);
    assert_string_equal(bad.id, "");
    tc_worker_close(&bad);

    tc_worker_t w;
    assert_int_equal(tc_worker_open(&w, s_dir, "hw"), 0);
    assert_int_equal(tc_worker_register(&w), 0);
    for (int i = 0; i < 10 && w.gen == 0; i++) {
        (void)tc_worker_heartbeat(&w, 0);
        tc_worker_pump(&w, 50);
    }
    assert_int_equal(w.gen, 1);
    assert_int_equal(tc_worker_step(&w, 1, 2.0f), 0);
    tc_worker_pump(&w, 50);
    assert_int_equal(w.committed, 1);

    /* wrong run id: dropped */
    char run[64];
    snprintf(run, sizeof run, "%s", w.run);
    snprintf(w.run, sizeof w.run, "r2");
    assert_int_equal(tc_worker_step(&w, 2, 2.0f), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    assert_int_equal(tc_worker_ckpt(&w, 2), SHOAL__ERROR_CODE__ERR_WRONG_RUN);
    snprintf(w.run, sizeof w.run, "%s", run);
    /* old (and future) generation: dropped */
    w.gen = 0;
    assert_int_equal(tc_worker_step(&w, 2, 2.0f), SHOAL__ERROR_CODE__ERR_STALE_GENERATION);
    w.gen = 7;
    assert_int_equal(tc_worker_step(&w, 2, 2.0f), SHOAL__ERROR_CODE__ERR_STALE_GENERATION);
    w.gen = 1;
    /* a sender that is not a worker */
    char id[64];
    snprintf(id, sizeof id, "%s", w.id);
    snprintf(w.id, sizeof w.id, "w999");
    assert_int_equal(tc_worker_step(&w, 2, 2.0f), SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER);
    snprintf(w.id, sizeof w.id, "%s", id);
    /* nothing of that was applied */
    json_t *st = tc_run_status(s_dir, "hostile");
    assert_int_equal(json_integer_value(json_object_get(st, "step")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "checkpoint_step")), 0);
    json_decref(st);
    /* and the worker still works; a NaN loss does not poison the state or its JSON */
    assert_int_equal(tc_worker_step(&w, 2, NAN), 0);
    tc_worker_pump(&w, 50);
    assert_int_equal(w.committed, 2);
    st = tc_run_status(s_dir, "hostile");
    assert_non_null(st);
    assert_int_equal(json_integer_value(json_object_get(st, "step")), 2);
    json_decref(st);

    /* a worker reporting that its plan failed gets a new generation (same members, state
     * from the peer that got furthest) */
    assert_int_equal(tc_worker_heartbeat_activity(&w, 2, SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED),
                     0);
    for (int i = 0; i < 10 && w.gen == 1; i++) {
        (void)tc_worker_heartbeat(&w, 2);
        tc_worker_pump(&w, 50);
    }
    assert_int_equal(w.gen, 2);
    assert_int_equal(w.source, SHOAL__STATE_SOURCE__STATE_SOURCE_PEER);
    assert_int_equal(w.start_step, 3);
    /* registering again while holding a cell means the process restarted: its state is gone;
     * with no survivor and no checkpoint the run restarts from initialisation */
    assert_int_equal(tc_worker_register(&w), 0);
    assert_string_equal(w.id, id);
    for (int i = 0; i < 10 && w.gen == 2; i++) {
        (void)tc_worker_heartbeat(&w, 0);
        tc_worker_pump(&w, 50);
    }
    assert_int_equal(w.gen, 3);
    assert_int_equal(w.source, SHOAL__STATE_SOURCE__STATE_SOURCE_INIT);
    assert_int_equal(w.start_step, 1);
    s_status_still_works(tc_pid);
    tc_worker_close(&w);
    s_stop_clean(tc_pid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hostile_worker_socket, tc_kill_leftover),
        cmocka_unit_test_teardown(test_hostile_control_socket, tc_kill_leftover),
        cmocka_unit_test_teardown(test_wrong_run_and_generation, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
