/* test_comm_groups: the comm interface added for pipeline and expert parallelism, with real forked
 * ranks on 127.0.0.1: several groups on one listener (overlapping, used alternately, frames for a
 * group not created yet held), send/recv ordering, sizes and interleaving with collectives,
 * alltoallv with uneven and empty blocks, reduce-scatter/all-gather against all-reduce bitwise,
 * no rank two ops ahead of another, dead peers and abort in the new operations. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "comm.h"
#include "log.h"
#include "test_comm_lib.h"

#define DEAD_TIMEOUT_MS 400

/* One record per rank and phase: the first failure's text, else ok. */
typedef struct {
    int ok;
    int rc;
    char msg[240];
} verdict_t;

static void s_check(verdict_t *v, int ok, int rc, const char *fmt, const char *what)
{
    if (ok || !v->ok)
        return;
    v->ok = 0;
    v->rc = rc;
    snprintf(v->msg, sizeof v->msg, fmt, what, rc ? shoal_errmsg() : "");
}

static void s_report(result_t *res, const verdict_t *v)
{
    ct_rec(res, SHOAL_OK, v->ok, 0, 0);
    if (!v->ok)
        snprintf(res->msg[res->nrec - 1], sizeof res->msg[0], "%s", v->msg);
}

#define CHECK(v, cond, rc, what) s_check((v), (cond), (rc), "%s: %s", (what))

/* All-reduce on c (a group of `n` members, this rank's group rank g) checked bitwise. */
static void s_group_allreduce(verdict_t *v, comm_t *c, size_t n, uint64_t seed, uint64_t step,
                              const char *what)
{
    int g = comm_rank(c), R = comm_nranks(c);
    float *buf = malloc(n * sizeof *buf), *want = malloc(n * sizeof *want);
    ct_fill(buf, n, seed, g);
    ct_expected(want, n, seed, R);
    int rc = comm_allreduce_sum_f32(c, buf, n, step);
    CHECK(v, rc == SHOAL_OK && memcmp(buf, want, n * sizeof *buf) == 0, rc, what);
    free(buf);
    free(want);
}

static void s_run(int nranks, rank_fn fn, void *arg)
{
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(nranks, fn, arg, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, nranks);
}

/* ------------------------------------------------------------------------------------------- */

static void test_chunk_range(void **state)
{
    (void)state;
    size_t ns[] = {0, 1, 2, 3, 7, 1000, 1001};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        for (int R = 1; R <= 5; R++) {
            size_t prev = 0;
            for (int r = 0; r < R; r++) {
                size_t lo, hi;
                comm_chunk_range(ns[k], R, r, &lo, &hi);
                assert_int_equal(lo, prev);
                assert_true(hi >= lo && hi - lo <= ns[k] / (size_t)R + 1);
                assert_true(hi - lo >= ns[k] / (size_t)R);
                prev = hi;
            }
            assert_int_equal(prev, ns[k]);
        }
    }
}

/* Four ranks in gen 1: world (group 0), pairs {0,1} and {2,3} (groups 1, 2), and {1,2} (group 3)
 * overlapping both, used alternately with rank-dependent delays so that frames of one group arrive
 * while another group's op runs. Then group 5 = {0,1}: rank 0 creates it, sends on it and starts
 * an all-reduce on it, then sends on group 1; rank 1 receives on group 1 first, so group 5's
 * frames reach it before its comm exists and must be held. */
static void s_rank_groups(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    int r = ctx->rank;
    const int world[] = {0, 1, 2, 3}, lowpair[] = {0, 1}, highpair[] = {2, 3}, mid[] = {1, 2};
    comm_t *w = ct_comm_group(ctx, 1, 0, world, 4, 5000);
    comm_t *pair = r < 2 ? ct_comm_group(ctx, 1, 1, lowpair, 2, 5000)
                         : ct_comm_group(ctx, 1, 2, highpair, 2, 5000);
    comm_t *m = ct_comm_group(ctx, 1, 3, mid, 2, 5000);
    for (int it = 0; it < 6; it++) {
        uint64_t step = 100 + (uint64_t)it;
        if ((it + r) % 3 == 0)
            usleep(3000);
        s_group_allreduce(&v, w, 1000 + (size_t)it * 77, 10 + (uint64_t)it, step, "world");
        s_group_allreduce(&v, pair, 3000 + (size_t)it, 20 + (uint64_t)it + (uint64_t)(r / 2),
                          step, "pair");
        if (m)
            s_group_allreduce(&v, m, 70000, 30 + (uint64_t)it, step, "mid");
        int rc = comm_barrier(w, step);
        CHECK(&v, rc == SHOAL_OK, rc, "world barrier");
    }
    /* A group created late on rank 1. */
    const char a[] = "early message on group 5", b[] = "message on group 1";
    char got[64] = {0};
    if (r == 0) {
        comm_t *g5 = ct_comm_group(ctx, 1, 5, lowpair, 2, 5000);
        int rc = comm_send(g5, 1, a, sizeof a, 7);
        CHECK(&v, rc == SHOAL_OK, rc, "send g5");
        rc = comm_send(pair, 1, b, sizeof b, 7);
        CHECK(&v, rc == SHOAL_OK, rc, "send g1");
        s_group_allreduce(&v, g5, 5000, 55, 7, "g5 allreduce");
        comm_destroy(&g5);
    } else if (r == 1) {
        int rc = comm_recv(pair, 0, got, sizeof b, 7);
        CHECK(&v, rc == SHOAL_OK && memcmp(got, b, sizeof b) == 0, rc, "recv g1");
        usleep(50 * 1000); /* let group 5's frames arrive; they stay queued in zmq or the stash */
        comm_t *g5 = ct_comm_group(ctx, 1, 5, lowpair, 2, 5000);
        rc = comm_recv(g5, 0, got, sizeof a, 7);
        CHECK(&v, rc == SHOAL_OK && memcmp(got, a, sizeof a) == 0, rc, "recv g5");
        s_group_allreduce(&v, g5, 5000, 55, 7, "g5 allreduce");
        comm_destroy(&g5);
    }
    /* Destroying one group leaves the others working. */
    comm_destroy(&m);
    s_group_allreduce(&v, w, 4097, 77, 200, "world after destroy");
    comm_destroy(&pair);
    comm_destroy(&w);
    s_report(res, &v);
}

static void test_groups(void **state)
{
    (void)state;
    s_run(4, s_rank_groups, NULL);
}

/* ------------------------------------------------------------------------------------------- */

#define P2P_CHUNK 64

static void s_pattern(unsigned char *b, size_t n, int from, int k)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 31 + (size_t)from * 7 + (size_t)k * 13);
}

static const size_t s_p2p_sizes[] = {0, 5, P2P_CHUNK - 1, P2P_CHUNK, 3 * P2P_CHUNK + 7, 100000};
#define NP2P (sizeof s_p2p_sizes / sizeof s_p2p_sizes[0])

/* Ranks 0 and 2 each send rank 1 every size in order, with all-reduces in between (interleaved
 * on the same comm); rank 1 receives rank 2's messages first, then rank 0's, all after the
 * all-reduces: every message must match in send order and content. */
static void s_rank_p2p(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, 5000, P2P_CHUNK);
    unsigned char *buf = malloc(100000), *want = malloc(100000);
    if (ctx->rank != 1) {
        for (size_t k = 0; k < NP2P; k++) {
            s_pattern(buf, s_p2p_sizes[k], ctx->rank, (int)k);
            int rc = comm_send(c, 1, buf, s_p2p_sizes[k], 3);
            memset(buf, 0xAB, s_p2p_sizes[k]); /* the buffer is free once send returns */
            CHECK(&v, rc == SHOAL_OK, rc, "send");
            if (k % 2 == 0)
                s_group_allreduce(&v, c, 999, 40 + k, 3, "allreduce between sends");
        }
    } else {
        for (size_t k = 0; k < NP2P; k += 2)
            s_group_allreduce(&v, c, 999, 40 + k, 3, "allreduce between sends");
        for (int from = 2; from >= 0; from -= 2) {
            for (size_t k = 0; k < NP2P; k++) {
                memset(buf, 0xEE, s_p2p_sizes[k]);
                s_pattern(want, s_p2p_sizes[k], from, (int)k);
                int rc = comm_recv(c, from, buf, s_p2p_sizes[k], 3);
                CHECK(&v, rc == SHOAL_OK && memcmp(buf, want, s_p2p_sizes[k]) == 0, rc, "recv");
            }
        }
    }
    /* Ping-pong in both directions right after one another. */
    for (int k = 0; k < 20 && ctx->rank < 2; k++) {
        uint32_t x = (uint32_t)k, y = 0;
        int peer = 1 - ctx->rank, rc;
        if (ctx->rank == 0) {
            rc = comm_send(c, peer, &x, sizeof x, 4);
            if (rc == SHOAL_OK)
                rc = comm_recv(c, peer, &y, sizeof y, 4);
        } else {
            rc = comm_recv(c, peer, &y, sizeof y, 4);
            if (rc == SHOAL_OK)
                rc = comm_send(c, peer, &y, sizeof y, 4);
        }
        CHECK(&v, rc == SHOAL_OK && y == x, rc, "ping-pong");
    }
    int rc = comm_barrier(c, 5);
    CHECK(&v, rc == SHOAL_OK, rc, "barrier");
    free(buf);
    free(want);
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_send_recv(void **state)
{
    (void)state;
    s_run(3, s_rank_p2p, NULL);
}

/* Rank 0 sends 100 bytes, rank 1 expects 96: an error naming both sizes. */
static void s_rank_p2p_size(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, 2000, 0);
    unsigned char buf[100] = {0};
    int rc;
    if (ctx->rank == 0) {
        rc = comm_send(c, 1, buf, 100, 1);
        CHECK(&v, rc == SHOAL_OK, rc, "send");
    } else {
        rc = comm_recv(c, 0, buf, 96, 1);
        const char *e = shoal_errmsg();
        CHECK(&v, rc == SHOAL_ERR_INVALID && strstr(e, "100") && strstr(e, "96"), rc,
              "size mismatch");
        rc = comm_recv(c, 0, buf, 100, 1);
        CHECK(&v, rc == SHOAL_ERR_STATE, rc, "broken after a mismatch");
    }
    rc = comm_send(c, 1 - ctx->rank, buf, 0, 1);
    CHECK(&v, ctx->rank == 0 ? rc == SHOAL_OK : rc == SHOAL_ERR_STATE, rc, "send after");
    CHECK(&v, comm_send(c, ctx->rank, buf, 1, 1) == (ctx->rank ? SHOAL_ERR_STATE
                                                               : SHOAL_ERR_INVALID),
          SHOAL_OK, "send to self");
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_send_recv_size_mismatch(void **state)
{
    (void)state;
    s_run(2, s_rank_p2p_size, NULL);
}

/* ------------------------------------------------------------------------------------------- */

/* Block i -> j of round `k`: uneven, often empty. */
static size_t s_block(int i, int j, int k)
{
    if ((i * 7 + j * 3 + k) % 4 == 0)
        return 0;
    return (size_t)((i + 1) * (j + 2) * 13 * (k + 1)) % 700 + (k == 2 ? 100000 : 0);
}

static void s_rank_a2a(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    int R = ctx->nranks, me = ctx->rank;
    comm_t *c = ct_comm(ctx, 1, 5000, P2P_CHUNK * 4);
    for (int k = 0; k < 3; k++) {
        /* Counts first, with a fixed-size call of the same function (8 bytes per rank). */
        size_t sb[MAX_RANKS], so[MAX_RANKS], rb[MAX_RANKS], ro[MAX_RANKS];
        uint64_t scount[MAX_RANKS], rcount[MAX_RANKS];
        size_t eight[MAX_RANKS], offs8[MAX_RANKS];
        for (int j = 0; j < R; j++) {
            scount[j] = s_block(me, j, k);
            eight[j] = 8;
            offs8[j] = 8 * (size_t)j;
        }
        int rc = comm_alltoallv(c, scount, eight, offs8, rcount, eight, offs8, (uint64_t)k);
        CHECK(&v, rc == SHOAL_OK, rc, "count exchange");
        size_t stot = 0, rtot = 0;
        for (int j = 0; j < R; j++) {
            CHECK(&v, rcount[j] == s_block(j, me, k), SHOAL_OK, "counts received");
            sb[j] = (size_t)scount[j];
            rb[j] = (size_t)rcount[j];
            /* Send blocks in reverse order in the buffer, receive blocks with gaps. */
            so[R - 1 - j] = 0;
            ro[j] = rtot + 3;
            rtot += rb[j] + 3;
        }
        for (int j = R - 1; j >= 0; j--) {
            so[j] = stot;
            stot += sb[j];
        }
        unsigned char *sbuf = malloc(stot + 1), *rbuf = malloc(rtot + 1);
        unsigned char *want = malloc(rtot + 1);
        memset(rbuf, 0x5A, rtot + 1);
        memset(want, 0x5A, rtot + 1);
        for (int j = 0; j < R; j++) {
            s_pattern(sbuf + so[j], sb[j], me * 16 + j, k);
            s_pattern(want + ro[j], rb[j], j * 16 + me, k);
        }
        rc = comm_alltoallv(c, sbuf, sb, so, rbuf, rb, ro, (uint64_t)k);
        CHECK(&v, rc == SHOAL_OK && memcmp(rbuf, want, rtot + 1) == 0, rc, "alltoallv");
        free(sbuf);
        free(rbuf);
        free(want);
        if (k == 1 && me == 0)
            usleep(20 * 1000); /* others run into the next op first */
    }
    /* Every block empty: still completes everywhere. */
    size_t zero[MAX_RANKS] = {0};
    int rc = comm_alltoallv(c, NULL, zero, zero, NULL, zero, zero, 9);
    CHECK(&v, rc == SHOAL_OK, rc, "all empty");
    s_group_allreduce(&v, c, 1234, 5, 10, "allreduce after");
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_alltoallv(void **state)
{
    (void)state;
    s_run(4, s_rank_a2a, NULL);
    s_run(2, s_rank_a2a, NULL);
}

/* Rank 1 expects 10 bytes from rank 0, which sends 12. */
static void s_rank_a2a_size(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    unsigned char sbuf[32] = {0}, rbuf[32];
    size_t sb[2] = {12, 12}, so[2] = {0, 16}, rb[2] = {12, 12}, ro[2] = {0, 16};
    if (ctx->rank == 1)
        rb[0] = 10;
    int rc = comm_alltoallv(c, sbuf, sb, so, rbuf, rb, ro, 1);
    if (ctx->rank == 1)
        CHECK(&v, rc == SHOAL_ERR_INVALID && strstr(shoal_errmsg(), "sends 12 bytes") &&
                      strstr(shoal_errmsg(), "expects 10"),
              rc, "size mismatch");
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_alltoallv_size_mismatch(void **state)
{
    (void)state;
    s_run(2, s_rank_a2a_size, NULL);
}

/* ------------------------------------------------------------------------------------------- */

/* Reduce-scatter then all-gather gives all-reduce's bytes; each range is final after the
 * reduce-scatter already. Sizes below nranks (empty ranges), around the chunk, large. */
static void s_rank_rs_ag(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, 5000, 64);
    const size_t ns[] = {1, 2, 3, 5, 16, 17, 1000, 100003};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k], lo, hi;
        float *ar = malloc(n * 4), *x = malloc(n * 4), *want = malloc(n * 4);
        ct_fill(ar, n, 60 + k, ctx->rank);
        ct_expected(want, n, 60 + k, ctx->nranks);
        int rc = comm_allreduce_sum_f32(c, ar, n, k);
        CHECK(&v, rc == SHOAL_OK && memcmp(ar, want, n * 4) == 0, rc, "allreduce");
        ct_fill(x, n, 60 + k, ctx->rank);
        rc = comm_reduce_scatter_sum_f32(c, x, n, k);
        comm_chunk_range(n, ctx->nranks, ctx->rank, &lo, &hi);
        CHECK(&v, rc == SHOAL_OK && memcmp(x + lo, ar + lo, (hi - lo) * 4) == 0, rc,
              "reduce_scatter");
        if (k % 2)
            usleep(5000 * (unsigned)ctx->rank);
        rc = comm_allgather_f32(c, x, n, k);
        CHECK(&v, rc == SHOAL_OK && memcmp(x, ar, n * 4) == 0, rc, "allgather");
        free(ar);
        free(x);
        free(want);
    }
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_reduce_scatter_allgather(void **state)
{
    (void)state;
    s_run(3, s_rank_rs_ag, NULL);
    s_run(4, s_rank_rs_ag, NULL);
}

/* No rank runs two ops ahead of another. Reduce-scatter of 1 float over 3 ranks: rank 0 owns it,
 * so ranks 1 and 2 only talk to rank 0. Rank 2 first waits 200 ms, then receives a message rank 1
 * sent before its reduce-scatter; rank 1's all-gather frame (op 2) reaches rank 2 in the same batch,
 * while rank 2 has not entered op 1. An owner that acknowledged rank 1's contribution before rank
 * 2's let rank 1 get there; rank 2 dropped the frame and timed out in the all-gather. */
static void s_rank_two_ahead(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    int r = ctx->rank;
    comm_t *c = ct_comm(ctx, 1, 2000, 64);
    const char msg[] = "sent before op 1";
    char got[sizeof msg] = {0};
    int rc;
    if (r == 1) {
        rc = comm_send(c, 2, msg, sizeof msg, 0);
        CHECK(&v, rc == SHOAL_OK, rc, "send");
    } else if (r == 2) {
        usleep(200 * 1000);
        rc = comm_recv(c, 1, got, sizeof got, 0);
        CHECK(&v, rc == SHOAL_OK && memcmp(got, msg, sizeof msg) == 0, rc, "recv");
    }
    float x[3], want[3];
    ct_fill(x, 1, 70, r);
    ct_expected(want, 3, 70, ctx->nranks);
    rc = comm_reduce_scatter_sum_f32(c, x, 1, 0);
    CHECK(&v, rc == SHOAL_OK && (r != 0 || memcmp(x, want, 4) == 0), rc, "reduce_scatter");
    memset(x, 0, sizeof x);
    x[r] = want[r];
    rc = comm_allgather_f32(c, x, 3, 1);
    CHECK(&v, rc == SHOAL_OK && memcmp(x, want, sizeof x) == 0, rc, "allgather");
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_no_rank_two_ops_ahead(void **state)
{
    (void)state;
    s_run(3, s_rank_two_ahead, NULL);
}

/* ------------------------------------------------------------------------------------------- */

/* Rank 2 dies after joining: the others' alltoallv, then (next generation, still listing it) their
 * recv from it time out naming it. */
static void s_rank_dead(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    if (ctx->rank == 2)
        raise(SIGKILL);
    for (int phase = 0; phase < 2; phase++) {
        double t0 = ct_ms();
        int rc;
        if (phase == 0) {
            unsigned char sbuf[30] = {0}, rbuf[30];
            size_t sb[3] = {10, 10, 10}, so[3] = {0, 10, 20};
            rc = comm_alltoallv(c, sbuf, sb, so, rbuf, sb, so, 1);
        } else {
            char buf[8];
            rc = comm_recv(c, 2, buf, sizeof buf, 1);
        }
        double ms = ct_ms() - t0;
        CHECK(&v,
              rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), "no message from rank 2;") &&
                  ms >= DEAD_TIMEOUT_MS - 5 && ms < DEAD_TIMEOUT_MS + 1500,
              rc, phase ? "dead peer in recv" : "dead peer in alltoallv");
        comm_destroy(&c);
        c = ct_comm(ctx, 2 + (uint64_t)phase, DEAD_TIMEOUT_MS, 0);
    }
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_dead_peer(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_killed(3, s_rank_dead, NULL, 2, res);
    for (int r = 0; r < 2; r++) {
        if (!res[r].ok[0])
            fail_msg("rank %d: %s", r, res[r].msg[0]);
    }
}

static comm_t *volatile s_abort_target;

static void s_on_alarm(int sig)
{
    (void)sig;
    comm_abort(s_abort_target);
}

/* Rank 0 waits in recv for a message rank 1 never sends; a signal handler aborts it. */
static void s_rank_abort(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    verdict_t v = {.ok = 1};
    comm_t *c = ct_comm(ctx, 1, 20000, 0);
    if (ctx->rank == 0) {
        s_abort_target = c;
        struct sigaction sa = {.sa_handler = s_on_alarm};
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {.it_value = {.tv_usec = 100 * 1000}};
        setitimer(ITIMER_REAL, &it, NULL);
        char buf[8];
        double t0 = ct_ms();
        int rc = comm_recv(c, 1, buf, sizeof buf, 1);
        CHECK(&v, rc == SHOAL_ERR_ABORTED && ct_ms() - t0 < 10000, rc, "abort in recv");
        rc = comm_send(c, 1, buf, sizeof buf, 1);
        CHECK(&v, rc == SHOAL_ERR_ABORTED, rc, "send after abort");
    } else {
        usleep(300 * 1000);
    }
    comm_destroy(&c);
    s_report(res, &v);
}

static void test_abort_recv(void **state)
{
    (void)state;
    s_run(2, s_rank_abort, NULL);
}

/* ------------------------------------------------------------------------------------------- */

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_range),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_send_recv),
        cmocka_unit_test(test_send_recv_size_mismatch),
        cmocka_unit_test(test_alltoallv),
        cmocka_unit_test(test_alltoallv_size_mismatch),
        cmocka_unit_test(test_reduce_scatter_allgather),
        cmocka_unit_test(test_no_rank_two_ops_ahead),
        cmocka_unit_test(test_dead_peer),
        cmocka_unit_test(test_abort_recv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
