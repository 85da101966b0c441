/* test_coord_peer_frames: the real shoal-coordinator with CURVE (a TCP worker endpoint, an
 * allow-list of three keys) and three fake workers of a dp 3 run that report bad data-plane
 * frames in their heartbeats (Heartbeat.bad_frames, per sending connection's CURVE key):
 * - a report naming the reporter's own key, or a key that holds no place in the plan, strikes
 *   nobody;
 * - a report naming a peer's key strikes that peer (quarantine_after_bad_messages 1: it is
 *   quarantined, the reason names the reporter), never the reporter;
 * - a second report against the same worker within COORD_PEER_FRAMES_MS (after undrain put it
 *   back in the plan) does not strike it again: a lying member cannot strike faster;
 * - shard-server key queries (MSG_KEY_QUERY): a live listed worker's key is admitted with its
 *   worker id, a quarantined worker's key and keys not on the allow-list as workers refused;
 * - the quarantine is pushed to the other workers (their shard servers) as a refusal of the key,
 *   and the undrain as its admission, ending the cached refusal at once;
 * - (test_readmit_after_gone) a quarantined worker that is gone when it is undrained: its key's
 *   admission is pushed when it registers again and is active. */
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
#include "http_get.h"
#include "wire.h"
#include "zsec.h"

#define HB_MS 100
#define WAIT_MS 30000

static const char *s_spec = "name: frames\n"
                            "model:\n  preset: tiny\n"
                            "data:\n  files: [/usr/share/games/fortunes]\n"
                            "train:\n  steps: 40\n  global_batch: 6\n  seq_len: 32\n  lr: 1e-3\n"
                            "parallel:\n  data_parallel: 3\n";

static char s_root[128];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_root, sizeof s_root, "shoal-cpf");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_root);
}

/* A fake worker that dials the coordinator's CURVE endpoint with `keys`. */
static void s_open(tc_worker_t *w, const char *dir, const char *name, const char *ep,
                   const zsec_keys_t *keys, const char *coord_public)
{
    assert_int_equal(tc_worker_open(w, dir, name), 0); /* an ipc dial, replaced below */
    /* a shard server's endpoint: the coordinator pushes key verdicts to such workers */
    snprintf(w->shard_endpoint, sizeof w->shard_endpoint, "tcp://127.0.0.1:%d", 7700 + name[1]);
    zmq_close(w->sock);
    static void *ctx;
    if (!ctx)
        ctx = zmq_ctx_new();
    w->sock = zmq_socket(ctx, ZMQ_DEALER);
    assert_non_null(w->sock);
    int linger = 0, ivl = 50;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    assert_int_equal(zsec_client(w->sock, keys, coord_public), SHOAL_OK);
    assert_int_equal(zmq_connect(w->sock, ep), 0);
    assert_int_equal(tc_worker_register(w), 0);
}

/* A heartbeat of w (its run and generation) reporting `frames` bad frames from `key`. */
static int s_report(tc_worker_t *w, const char *key, uint32_t frames)
{
    Shoal__BadFrames bf = SHOAL__BAD_FRAMES__INIT, *bfp = &bf;
    bf.public_key = (char *)key;
    bf.frames = frames;
    bf.why = "frame shorter than a header";
    Shoal__Heartbeat hb = SHOAL__HEARTBEAT__INIT;
    hb.activity = SHOAL__WORKER_ACTIVITY__ACTIVITY_TRAINING;
    hb.timestamp_ms = 1;
    hb.n_bad_frames = 1;
    hb.bad_frames = &bfp;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_HEARTBEAT, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    return tc_worker_call(w, &env);
}

/* The next MSG_KEY_ANSWER about `key` that w receives within 2 s whose verdict is `want` (-1:
 * any): 1 admitted (the holder's id to holder), 0 refused (the reason to why), -1 none. Other
 * messages meanwhile are read and dropped. */
static int s_key_answer_wait(tc_worker_t *w, const char *key, int want, char *holder, char *why,
                             size_t cap)
{
    for (int64_t end = clock_mono_ms() + 2000; clock_mono_ms() < end;) {
        zmq_pollitem_t it = {w->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        int got = -1;
        if (zmq_msg_recv(&m, w->sock, 0) >= 0) {
            Shoal__Envelope *e = shoal__envelope__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            if (e && e->type == SHOAL__MSG_TYPE__MSG_KEY_ANSWER && e->key_answer &&
                strcmp(e->key_answer->public_key, key) == 0 &&
                (want < 0 || (int)e->key_answer->admitted == want)) {
                got = e->key_answer->admitted;
                snprintf(holder, cap, "%s", e->key_answer->worker_id);
                snprintf(why, cap, "%s", e->key_answer->reason);
            }
            if (e)
                shoal__envelope__free_unpacked(e, NULL);
        }
        zmq_msg_close(&m);
        if (got >= 0)
            return got;
    }
    return -1;
}

/* MSG_KEY_QUERY from w about `key`: its answer, as s_key_answer_wait's. */
static int s_key_query(tc_worker_t *w, const char *key, char *holder, char *why, size_t cap)
{
    Shoal__KeyQuery q = SHOAL__KEY_QUERY__INIT;
    q.public_key = (char *)key;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_KEY_QUERY, "", w->id, 0, ++w->seq);
    env.body_case = SHOAL__ENVELOPE__BODY_KEY_QUERY;
    env.key_query = &q;
    if (wire_send(w->sock, NULL, &env, 0) != SHOAL_OK)
        return -1;
    return s_key_answer_wait(w, key, -1, holder, why, cap);
}

/* Beats until every worker holds a plan of generation > gen_min. */
static void s_placed(tc_worker_t **all, int n, uint64_t gen_min)
{
    for (int64_t end = clock_mono_ms() + WAIT_MS; clock_mono_ms() < end;) {
        int ok = 1;
        for (int i = 0; i < n; i++)
            ok &= all[i]->gen > gen_min && all[i]->rank >= 0;
        if (ok)
            return;
        tc_beat(all, n, 50, HB_MS, 0, false);
    }
    fail_msg("workers not placed past generation %llu", (unsigned long long)gen_min);
}

/* The coordinator of `sub` (a directory under s_root) with CURVE, an allow-list of k[0..2] and
 * the run submitted; three workers fa, fb, fc with those keys registered and placed. */
typedef struct {
    char dir[192], ep[64];
    zsec_keys_t coord, k[3], stranger;
    tc_worker_t w[3];
    tc_worker_t *all[3];
} s_fixture_t;

static void s_fixture_start(s_fixture_t *fx, const char *sub)
{
    char kdir[256], allow[256], yaml[1024];
    snprintf(fx->dir, sizeof fx->dir, "%s/%s", s_root, sub);
    assert_int_equal(mkdir(fx->dir, 0700), 0);
    assert_int_equal(zsec_keys_generate(&fx->coord), SHOAL_OK);
    snprintf(kdir, sizeof kdir, "%s/coord-keys", fx->dir);
    assert_int_equal(zsec_keys_write(kdir, &fx->coord), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&fx->stranger), SHOAL_OK);
    snprintf(allow, sizeof allow, "%s/allow", fx->dir);
    FILE *f = fopen(allow, "w");
    assert_non_null(f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(zsec_keys_generate(&fx->k[i]), SHOAL_OK);
        fprintf(f, "worker uni-a %s\n", fx->k[i].public_key);
    }
    fclose(f);
    snprintf(fx->ep, sizeof fx->ep, "tcp://127.0.0.1:%d", test_free_port());
    snprintf(yaml, sizeof yaml,
             "heartbeat_interval_ms: 100\ndead_after_ms: 5000\nmin_workers: 3\n"
             "quarantine_after_bad_messages: 1\nkeys_dir: %s\nallow_list: %s\n",
             kdir, allow);
    tc_pid = tc_start_listen(fx->dir, fx->ep, yaml);
    assert_true(tc_pid > 0);
    tc_reply_t r;
    assert_int_equal(tc_ctl(fx->dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, s_spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    const char *names[3] = {"fa", "fb", "fc"};
    for (int i = 0; i < 3; i++) {
        fx->all[i] = &fx->w[i];
        s_open(&fx->w[i], fx->dir, names[i], fx->ep, &fx->k[i], fx->coord.public_key);
    }
    s_placed(fx->all, 3, 0);
}

static void s_fixture_stop(s_fixture_t *fx)
{
    for (int i = 0; i < 3; i++)
        tc_worker_close(&fx->w[i]);
    int st = tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    assert_true(WIFEXITED(st));
}

static void test_peer_frames(void **state)
{
    (void)state;
    s_fixture_t fx;
    s_fixture_start(&fx, "frames");
    tc_worker_t *w = fx.w, **all = fx.all;
    const zsec_keys_t *k = fx.k, *coord = &fx.coord, *stranger = &fx.stranger;
    const char *dir = fx.dir; /* this test's coordinator */
    tc_reply_t r;

    /* its own key, and a key of no plan: nobody is struck */
    assert_int_equal(s_report(&w[0], k[0].public_key, 3), 0);
    assert_int_equal(s_report(&w[0], stranger->public_key, 3), 0);
    for (int i = 0; i < 3; i++)
        assert_string_equal(tc_worker_state(dir, w[i].id), "active");
    /* w[0] names w[1]'s key: w[1] is struck (and, at 1, quarantined), w[0] is not */
    assert_int_equal(s_report(&w[0], k[1].public_key, 3), 0);
    assert_string_equal(tc_worker_state(dir, w[1].id), "quarantined");
    assert_string_equal(tc_worker_state(dir, w[0].id), "active");
    char want[128];
    snprintf(want, sizeof want, "bad data-plane frames reported by %s", w[0].id);
    assert_non_null(strstr(tc_worker_field(dir, w[1].id, "reason"), want));

    /* the quarantine is pushed to the other workers' shard servers as a refusal of w[1]'s key */
    char holder[128], why[128];
    assert_int_equal(s_key_answer_wait(&w[2], k[1].public_key, 0, holder, why, sizeof holder), 0);
    assert_non_null(strstr(why, "quarantined"));

    /* shard servers' key queries (asked here by the quarantined w[1], which no plan pushes to):
     * a live listed worker's key is vouched for, a quarantined worker's and a stranger's not */
    assert_int_equal(s_key_query(&w[1], k[2].public_key, holder, why, sizeof holder), 1);
    assert_string_equal(holder, w[2].id);
    assert_int_equal(s_key_query(&w[1], k[1].public_key, holder, why, sizeof holder), 0);
    assert_non_null(strstr(why, "quarantined"));
    assert_int_equal(s_key_query(&w[1], stranger->public_key, holder, why, sizeof holder), 0);
    assert_non_null(strstr(why, "not a worker key of the allow-list"));
    assert_int_equal(s_key_query(&w[1], coord->public_key, holder, why, sizeof holder), 0);

    /* back in the plan, w[2] at once names w[1] too: within COORD_PEER_FRAMES_MS, no strike */
    uint64_t gen = w[0].gen;
    assert_int_equal(tc_ctl(dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, w[1].id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    /* the undrain ends the refusal that shard servers cached: w[1]'s key is admitted again */
    assert_int_equal(s_key_answer_wait(&w[2], k[1].public_key, 1, holder, why, sizeof holder), 1);
    assert_string_equal(holder, w[1].id);
    s_placed(all, 3, gen);
    assert_int_equal(s_report(&w[2], k[1].public_key, 3), 0);
    tc_beat(all, 3, 300, HB_MS, 0, false);
    assert_string_equal(tc_worker_state(dir, w[1].id), "active");

    s_fixture_stop(&fx);
}

/* A quarantined worker that is gone when it is undrained: the admission of its key reaches the
 * shard servers when it registers again, not when their cached refusal expires (60 s). */
static void test_readmit_after_gone(void **state)
{
    (void)state;
    s_fixture_t fx;
    s_fixture_start(&fx, "gone");
    char holder[128], why[128];
    /* w[0] names w[1]'s key: w[1] is quarantined, and its key refused at w[2]'s server */
    assert_int_equal(s_report(&fx.w[0], fx.k[1].public_key, 3), 0);
    assert_string_equal(tc_worker_state(fx.dir, fx.w[1].id), "quarantined");
    assert_int_equal(s_key_answer_wait(&fx.w[2], fx.k[1].public_key, 0, holder, why, sizeof why),
                     0);
    /* w[1] goes away (its connection closes) and is undrained while gone */
    char id[sizeof fx.w[1].id];
    snprintf(id, sizeof id, "%s", fx.w[1].id);
    tc_worker_close(&fx.w[1]);
    tc_worker_t *alive[2] = {&fx.w[0], &fx.w[2]};
    for (int64_t end = clock_mono_ms() + WAIT_MS;
         strcmp(tc_worker_state(fx.dir, id), "dead") != 0;) {
        assert_true(clock_mono_ms() < end);
        tc_beat(alive, 2, 100, HB_MS, 0, false);
    }
    tc_reply_t r;
    assert_int_equal(tc_ctl(fx.dir, SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN, id, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    /* it registers again with the same key: once active, its key is admitted at w[2] */
    s_open(&fx.w[1], fx.dir, "fb", fx.ep, &fx.k[1], fx.coord.public_key);
    assert_string_equal(fx.w[1].id, id);
    assert_int_equal(tc_worker_heartbeat(&fx.w[1], 0), 0);
    assert_string_equal(tc_worker_state(fx.dir, id), "active");
    assert_int_equal(s_key_answer_wait(&fx.w[2], fx.k[1].public_key, 1, holder, why, sizeof why),
                     1);
    assert_string_equal(holder, id);
    s_fixture_stop(&fx);
}

int main(void)
{
    if (!zmq_has("curve")) {
        printf("libzmq without CURVE: skip\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_peer_frames, tc_kill_leftover),
        cmocka_unit_test_teardown(test_readmit_after_gone, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
