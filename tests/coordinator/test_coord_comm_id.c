/* test_coord_comm_id: the relay of NCCL unique ids (CommId) by the real shoal-coordinator. Two
 * protocol-speaking workers (DEALER sockets) join a run; rank 0's id arrives, byte for byte,
 * at the other member and not back at the sender; malformed CommIds (group not
 * "<generation>/<tag>", an empty or oversized id, another generation's group) are answered with
 * an error and relayed to nobody, and the coordinator keeps relaying afterwards. Then the same
 * through two real worker sessions (worker/session.h): rank 0's session_send_comm_id reaches the
 * other worker's comm_ids table, where a comm creation waits for it. CPU only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <zmq.h>

#include "comm_ids.h"
#include "coord_testlib.h"
#include "session.h"

static char s_dir[128];

static int s_setup(void **state)
{
    (void)state;
    return tc_tmpdir_make(s_dir, sizeof s_dir, "shoal-cid");
}

static int s_teardown(void **state)
{
    (void)state;
    return tc_tmpdir_remove(s_dir);
}

/* Sends a CommId of `group` with `len` bytes (byte i = seed + 7 i); raw: without the sender's
 * own wire check, as a hostile worker would. Returns tc_worker_call's result. */
static int s_send_id(tc_worker_t *w, const char *group, size_t len, uint8_t seed, int raw)
{
    static uint8_t bytes[512];
    for (size_t i = 0; i < len; i++)
        bytes[i] = (uint8_t)(seed + 7 * i);
    Shoal__CommId cid = SHOAL__COMM_ID__INIT;
    cid.group = (char *)group;
    cid.id.data = bytes;
    cid.id.len = len;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_COMM_ID, "", "", 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_COMM_ID;
    env.comm_id = &cid;
    return raw ? tc_worker_call_raw(w, &env) : tc_worker_call(w, &env);
}

static void s_expect_id(const tc_worker_t *w, const char *group, const char *sender, size_t len,
                        uint8_t seed)
{
    assert_string_equal(w->comm_group, group);
    assert_string_equal(w->comm_sender, sender);
    assert_int_equal(w->comm_id_len, len);
    for (size_t i = 0; i < len; i++)
        if (w->comm_id[i] != (uint8_t)(seed + 7 * i))
            fail_msg("byte %zu of the relayed id: %u, sent %u", i, w->comm_id[i],
                     (uint8_t)(seed + 7 * i));
}

static void test_relay(void **state)
{
    (void)state;
    /* ten malformed CommIds below must not quarantine their sender: that is test_coord_guard's */
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 3000\n"
                             "quarantine_after_bad_messages: 100\n");
    tc_reply_t r;
    const char *spec = "name: nccl\ndata: {files: [/usr/share/games/fortunes]}\n"
                       "train: {steps: 50, global_batch: 2, seq_len: 16, lr: 0.001}\n";
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    tc_worker_t a, b;
    assert_int_equal(tc_worker_open(&a, s_dir, "ga"), 0);
    assert_int_equal(tc_worker_open(&b, s_dir, "gb"), 0);
    assert_int_equal(tc_worker_register(&a), 0);
    assert_int_equal(tc_worker_register(&b), 0);
    /* both in one plan (dp 2): the same generation, ranks 0 and 1 */
    for (int i = 0; i < 100 && (a.gen == 0 || a.gen != b.gen || a.dp != 2 || b.dp != 2); i++) {
        (void)tc_worker_heartbeat(&a, 0);
        (void)tc_worker_heartbeat(&b, 0);
        tc_worker_pump(&a, 20);
        tc_worker_pump(&b, 20);
    }
    assert_true(a.gen > 0 && a.gen == b.gen);
    tc_worker_t *r0 = a.rank == 0 ? &a : &b, *r1 = a.rank == 0 ? &b : &a;
    char group[32];
    snprintf(group, sizeof group, "%llu/5", (unsigned long long)r0->gen);

    /* rank 0's id reaches rank 1, byte for byte, and not rank 0 itself */
    assert_int_equal(s_send_id(r0, group, 128, 3, 0), 0);
    for (int i = 0; i < 50 && r1->n_comm_ids == 0; i++)
        tc_worker_pump(r1, 20);
    assert_int_equal(r1->n_comm_ids, 1);
    s_expect_id(r1, group, r0->id, 128, 3);
    tc_worker_pump(r0, 100);
    assert_int_equal(r0->n_comm_ids, 0);

    /* malformed: each an error to the sender, relayed to nobody */
    char other_gen[32];
    snprintf(other_gen, sizeof other_gen, "%llu/5", (unsigned long long)r0->gen + 1);
    static const struct {
        const char *group; /* NULL: other_gen */
        size_t len;
    } bad[] = {
        {"5", 128},      {"x/5", 128},   {"1/", 128},        {"/5", 128}, {"1/5/6", 128},
        {" 1/5", 128},   {"1/4294967296", 128}, {NULL, 128}, {"1/5", 0},  {"1/5", 257},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char g[32];
        if (!bad[i].group)
            snprintf(g, sizeof g, "%s", other_gen);
        else if (strcmp(bad[i].group, "1/5") == 0) /* well-formed group, bad id size */
            snprintf(g, sizeof g, "%s", group);
        else
            snprintf(g, sizeof g, "%s", bad[i].group);
        int rc = s_send_id(r0, g, bad[i].len, 9, 1);
        if (rc <= 0)
            fail_msg("CommId group '%s' id of %zu bytes: answered %d, expected an error", g,
                     bad[i].len, rc);
    }
    tc_worker_pump(r1, 200);
    assert_int_equal(r1->n_comm_ids, 1);
    assert_true(tc_alive(tc_pid));

    /* and the relay still works, in the other direction too (any member may send) */
    assert_int_equal(s_send_id(r1, group, 200, 77, 0), 0);
    for (int i = 0; i < 50 && r0->n_comm_ids == 0; i++)
        tc_worker_pump(r0, 20);
    assert_int_equal(r0->n_comm_ids, 1);
    s_expect_id(r0, group, r1->id, 200, 77);
    json_t *status = tc_run_status(s_dir, "nccl"); /* and it still answers its operator */
    assert_non_null(status);
    json_decref(status);

    tc_worker_close(&a);
    tc_worker_close(&b);
    int st = tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Waits for a plan event of `s` with 2 ranks; its run, generation and rank. */
static int s_wait_plan2(session_t *s, char *run, uint64_t *gen, uint32_t *rank, int ms)
{
    for (int waited = 0; waited < ms; waited += 50) {
        sess_event_t *ev = NULL;
        if (session_wait(s, 50, &ev) != SHOAL_OK)
            continue;
        int done = 0;
        if (ev->kind == SESS_EV_PLAN && ev->plan && ev->plan->nranks == 2) {
            snprintf(run, SESS_ID_MAX, "%s", ev->run_id);
            *gen = ev->generation;
            *rank = ev->plan->rank;
            done = 1;
        }
        sess_event_destroy(&ev);
        if (done)
            return 0;
    }
    return -1;
}

static void test_sessions(void **state)
{
    (void)state;
    tc_pid = tc_start(s_dir, "heartbeat_interval_ms: 100\ndead_after_ms: 3000\n");
    tc_reply_t r;
    const char *spec = "name: nccl2\ndata: {files: [/usr/share/games/fortunes]}\n"
                       "train: {steps: 50, global_batch: 2, seq_len: 16, lr: 0.001}\n";
    assert_int_equal(tc_ctl(s_dir, SHOAL__MSG_TYPE__MSG_CTL_SUBMIT, spec, 0, &r), 0);
    assert_true(r.ok);
    tc_reply_fini(&r);
    char ep[300];
    tc_worker_endpoint(s_dir, ep, sizeof ep);
    void *zctx = zmq_ctx_new();
    session_t *s[2] = {NULL, NULL};
    const char *names[2] = {"sa", "sb"}, *data[2] = {"tcp://127.0.0.1:9", "tcp://127.0.0.1:10"};
    for (int i = 0; i < 2; i++) {
        session_config_t cfg = {.coordinator = ep, .name = names[i], .host = "localhost",
                                .device = "cpu", .version = "test", .data_endpoint = data[i],
                                .grace_seconds = 1};
        assert_int_equal(session_new(zctx, &cfg, &s[i]), SHOAL_OK);
    }
    char run[2][SESS_ID_MAX];
    uint64_t gen[2] = {0, 0};
    uint32_t rank[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        assert_int_equal(s_wait_plan2(s[i], run[i], &gen[i], &rank[i], 10000), 0);
    while (gen[0] != gen[1]) { /* the one behind takes its next plan event */
        const int behind = gen[0] < gen[1] ? 0 : 1;
        assert_int_equal(s_wait_plan2(s[behind], run[behind], &gen[behind], &rank[behind], 10000),
                         0);
    }
    assert_true(rank[0] != rank[1]);
    const int r0 = rank[0] == 0 ? 0 : 1, r1 = 1 - r0;
    uint8_t id[128], got[256];
    for (int i = 0; i < 128; i++)
        id[i] = (uint8_t)(i * 5 + 1);
    assert_int_equal(session_send_comm_id(s[r0], run[r0], gen[r0], 3, id, sizeof id), SHOAL_OK);
    size_t len = 0;
    assert_int_equal(comm_ids_wait(session_comm_ids(s[r1]), gen[r1], 3, 5000, got, sizeof got,
                                   &len), SHOAL_OK);
    assert_int_equal(len, 128);
    assert_memory_equal(got, id, 128);
    assert_int_equal(comm_ids_count(session_comm_ids(s[r0])), 0); /* not echoed to the sender */
    /* a group nobody sends is a timeout naming it, not a hang */
    assert_int_equal(comm_ids_wait(session_comm_ids(s[r1]), gen[r1], 4, 300, got, sizeof got,
                                   &len), SHOAL_ERR_TIMEOUT);
    assert_int_equal(session_send_comm_id(s[r0], run[r0], gen[r0], 5, id, 0), SHOAL_ERR_INVALID);
    session_destroy(&s[0]);
    session_destroy(&s[1]);
    zmq_ctx_term(zctx);
    int st = tc_stop(tc_pid, SIGTERM);
    tc_pid = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_relay, tc_kill_leftover),
        cmocka_unit_test_teardown(test_sessions, tc_kill_leftover),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
