/* test_comm_curve.c: the ZeroMQ comm backend with CURVE (comm_listener_opts_t.keys): two ranks
 * (threads, a listener each) all-reduce while
 * - a peer of the plan (its key is in the plan, for another endpoint) sends each rank
 *   well-formed frames claiming to be the other rank, with poison that would show in the sum:
 *   the sum must be exact and every forged frame counted (comm_dropped_frames);
 * - a stranger (a valid CURVE key that no plan lists) sends the same: its handshake is refused
 *   (comm_listener_denied_handshakes moves) and none of its frames reaches the comm;
 * - a plaintext sender gets nothing through;
 * each rank names the rogue's key (only it) as the sender of bad frames (the report to the
 * coordinator).
 * Rank 0 dials rank 1 before rank 1 holds the plan: the handshake is held, not refused, and the
 * all-reduce completes once rank 1 has it. A peer endpoint the plan gave no key is refused by
 * comm_new. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "comm_zmq_int.h"
#include "zsec.h"

#define N 1000
#define POISON 1e30f
/* how long a listener holds an unknown key: well above the 300 ms rank 1 takes to get its plan */
#define HOLD_MS 2000

typedef struct {
    comm_t *c;
    float buf[N];
    shoal_err_t rc;
} rank_t;

static void *s_rank(void *arg)
{
    rank_t *r = arg;
    r->rc = comm_allreduce_sum_f32(r->c, r->buf, N, 1);
    return NULL;
}

/* A frame rank `src` would send rank `dst` in the first all-reduce (a contribution to dst's
 * piece of the buffer), its payload poison. */
static void s_forge(void *sock, int src, int dst)
{
    size_t lo, hi;
    comm_chunk_range(N, 2, dst, &lo, &hi);
    size_t count = hi - lo;
    wire_hdr_t h = {.magic = WIRE_MAGIC,
                    .version = WIRE_VERSION,
                    .kind = KIND_AR_RS,
                    .src = (uint32_t)src,
                    .nranks = 2,
                    .generation = 1,
                    .step = 1,
                    .seq = 1,
                    .total = N,
                    .offset = lo,
                    .count = (uint32_t)count,
                    .chunk = COMM_CHUNK_DEFAULT,
                    .group = 0};
    size_t bytes = sizeof h + count * sizeof(float);
    unsigned char *m = malloc(bytes);
    memcpy(m, &h, sizeof h);
    for (size_t i = 0; i < count; i++)
        memcpy(m + sizeof h + i * sizeof(float), &(float){POISON}, sizeof(float));
    zmq_send(sock, m, bytes, 0);
    free(m);
}

/* Sends forged frames to `ep` (the listener of rank dst, key dst_key) from a connection made
 * with `keys` (NULL: plaintext), waiting until they left. */
static void s_send_forged(const char *ep, const char *dst_key, const zsec_keys_t *keys, int dst)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    if (keys)
        assert_int_equal(zsec_client(s, keys, dst_key), SHOAL_OK);
    assert_int_equal(zmq_connect(s, ep), 0);
    for (int i = 0; i < 3; i++)
        s_forge(s, 1 - dst, dst);
    zmq_send(s, "junk", 4, 0); /* shorter than a header */
    int linger = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

static void test_forged_frames_dropped(void **state)
{
    (void)state;
    zsec_keys_t k[2], rogue, stranger;
    comm_listener_t *l[2];
    /* the plan: the two ranks, and the rogue as a worker of another group at an endpoint of
     * its own (never dialled) */
    const char *eps[3], *pubs[3];
    for (int r = 0; r < 2; r++) {
        assert_int_equal(zsec_keys_generate(&k[r]), SHOAL_OK);
        comm_listener_opts_t o = {.bind_endpoint = "tcp://127.0.0.1:0", .no_ipc = 1,
                                  .keys = &k[r], .admit_hold_ms = HOLD_MS};
        assert_int_equal(comm_listener_new_opts(&o, &l[r]), SHOAL_OK);
        eps[r] = comm_listener_endpoint(l[r]);
        pubs[r] = k[r].public_key;
    }
    assert_int_equal(zsec_keys_generate(&rogue), SHOAL_OK);
    assert_int_equal(zsec_keys_generate(&stranger), SHOAL_OK);
    eps[2] = "tcp://127.0.0.1:9";
    pubs[2] = rogue.public_key;

    /* a peer endpoint without a key in the plan: refused */
    comm_t *nokey = NULL;
    const comm_config_t cfg0 = {.rank = 0, .nranks = 2, .endpoints = eps, .generation = 1,
                                .timeout_ms = 10000};
    assert_int_equal(comm_new(l[0], &cfg0, &nokey), SHOAL_ERR_INVALID);
    assert_null(nokey);

    rank_t rk[2];
    unsigned long long before = comm_dropped_frames();
    for (int r = 0; r < 2; r++) {
        /* rank 0 dials rank 1 (comm_new) while rank 1 holds no plan yet: held, then admitted */
        if (r == 1)
            usleep(300 * 1000);
        assert_int_equal(comm_listener_peer_keys(l[r], eps, pubs, 3), SHOAL_OK);
        comm_config_t cfg = {.rank = r, .nranks = 2, .endpoints = eps, .generation = 1,
                             .timeout_ms = 10000};
        assert_int_equal(comm_new(l[r], &cfg, &rk[r].c), SHOAL_OK);
        for (int i = 0; i < N; i++)
            rk[r].buf[i] = (float)(i + 1000 * (r + 1));
    }
    /* the plan's rogue claiming to be the other rank (dropped per frame), a stranger's key
     * (refused at the handshake) and a plaintext sender (CURVE keeps it out before any frame) */
    for (int r = 0; r < 2; r++) {
        s_send_forged(eps[r], pubs[r], &rogue, r);
        s_send_forged(eps[r], pubs[r], &stranger, r);
        s_send_forged(eps[r], pubs[r], NULL, r);
    }
    pthread_t t[2];
    for (int r = 0; r < 2; r++)
        assert_int_equal(pthread_create(&t[r], NULL, s_rank, &rk[r]), 0);
    for (int r = 0; r < 2; r++)
        pthread_join(t[r], NULL);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(rk[r].rc, SHOAL_OK);
        for (int i = 0; i < N; i++)
            if (rk[r].buf[i] != (float)(2 * i + 3000)) {
                fprintf(stderr, "rank %d [%d] = %g, expected %d\n", r, i, rk[r].buf[i],
                        2 * i + 3000);
                fail();
            }
    }
    /* the rogue's 3 frames to each rank, none of the stranger's or the plaintext sender's */
    assert_int_equal(comm_dropped_frames() - before, 6);
    /* each rank names the rogue's key, and only it, as the sender of its 3 forged frames and
     * the malformed one: what the worker reports to the coordinator */
    for (int r = 0; r < 2; r++) {
        comm_bad_sender_t bad[COMM_BAD_SENDERS_MAX];
        assert_int_equal(comm_listener_take_bad_senders(l[r], bad, COMM_BAD_SENDERS_MAX), 1);
        assert_string_equal(bad[0].key, rogue.public_key);
        assert_int_equal(bad[0].frames, 4);
        assert_string_equal(bad[0].why, "frame shorter than a header");
        assert_int_equal(comm_listener_take_bad_senders(l[r], bad, COMM_BAD_SENDERS_MAX), 0);
    }
    /* the stranger's handshake with each rank was refused (held HOLD_MS first) */
    for (int r = 0; r < 2; r++) {
        for (int w = 0; w < 100 && comm_listener_denied_handshakes(l[r]) == 0; w++)
            usleep(50 * 1000);
        assert_int_equal(comm_listener_denied_handshakes(l[r]), 1);
    }
    for (int r = 0; r < 2; r++) {
        comm_destroy(&rk[r].c);
        comm_listener_destroy(&l[r]);
    }
}

/* Dials ep (server key server_pub) with `keys` and waits for the handshake's outcome: 1 done,
 * 0 refused, -1 neither within wait_ms (a held handshake). */
static int s_handshake(const char *ep, const char *server_pub, const zsec_keys_t *keys,
                       int wait_ms)
{
    static int n;
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://curve-mon-%d", ++n);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_PUSH);
    assert_int_equal(zsec_client(s, keys, server_pub), SHOAL_OK);
    assert_int_equal(zmq_socket_monitor(s, mon,
                                        ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL),
                     0);
    void *m = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(m, mon), 0);
    assert_int_equal(zmq_connect(s, ep), 0);
    int outcome = -1;
    zmq_setsockopt(m, ZMQ_RCVTIMEO, &wait_ms, sizeof wait_ms);
    zmq_msg_t ev;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, m, 0) >= 6) {
        uint16_t what;
        memcpy(&what, zmq_msg_data(&ev), sizeof what);
        outcome = what == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
        while (zmq_msg_more(&ev) && zmq_msg_recv(&ev, m, 0) >= 0)
            ; /* the endpoint frame */
    }
    zmq_msg_close(&ev);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(m, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_close(m);
    zmq_ctx_term(ctx);
    return outcome;
}

/* Three plans in a row (keys A, then B, then C): the listener admits the keys of the last two,
 * refuses A once C arrives (after holding it), and counts only that refusal. */
static void test_admission_follows_plans(void **state)
{
    (void)state;
    zsec_keys_t me, k[3];
    assert_int_equal(zsec_keys_generate(&me), SHOAL_OK);
    comm_listener_opts_t o = {.bind_endpoint = "tcp://127.0.0.1:0", .no_ipc = 1, .keys = &me,
                              .admit_hold_ms = 300};
    comm_listener_t *l = NULL;
    assert_int_equal(comm_listener_new_opts(&o, &l), SHOAL_OK);
    const char *ep = comm_listener_endpoint(l);
    const char *eps[3] = {"tcp://127.0.0.1:7", "tcp://127.0.0.1:8", "tcp://127.0.0.1:9"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(zsec_keys_generate(&k[i]), SHOAL_OK);
    /* no plan yet: held, then refused */
    assert_int_equal(s_handshake(ep, me.public_key, &k[0], 5000), 0);
    assert_int_equal(comm_listener_denied_handshakes(l), 1);
    for (int i = 0; i < 3; i++) {
        const char *key = k[i].public_key;
        assert_int_equal(comm_listener_peer_keys(l, &eps[i], &key, 1), SHOAL_OK);
        /* this plan's key, and the previous plan's */
        assert_int_equal(s_handshake(ep, me.public_key, &k[i], 5000), 1);
        if (i > 0)
            assert_int_equal(s_handshake(ep, me.public_key, &k[i - 1], 5000), 1);
    }
    /* the plan before the previous one: refused */
    assert_int_equal(s_handshake(ep, me.public_key, &k[0], 5000), 0);
    assert_int_equal(comm_listener_denied_handshakes(l), 2);
    comm_listener_destroy(&l);
}

int main(void)
{
    if (!zmq_has("curve")) {
        printf("libzmq without CURVE: skip\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forged_frames_dropped),
        cmocka_unit_test(test_admission_follows_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
