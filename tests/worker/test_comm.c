/* test_comm: the ZeroMQ comm backend with real forked ranks on 127.0.0.1 (same-host ipc between
 * them, TCP from the hostile sender): bitwise
 * reproducible all-reduce for 1-4 ranks and awkward sizes, op sequences, dead peers, generation
 * changes with stray messages, garbage frames, abort from a signal handler and from a thread. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "comm.h"
#include "log.h"
#include "test_comm_lib.h"

/* ------------------------------------------------------------------------------------------- */

static void test_order_matters(void **state)
{
    /* The inputs must make the reduction order visible, or the bitwise checks prove nothing. */
    (void)state;
    int differ = 0;
    for (size_t i = 0; i < 1000; i++) {
        float fwd = ct_input(1, 0, i), rev = ct_input(1, 3, i);
        for (int r = 1; r < 4; r++)
            fwd += ct_input(1, r, i);
        for (int r = 2; r >= 0; r--)
            rev += ct_input(1, r, i);
        differ += memcmp(&fwd, &rev, 4) != 0;
    }
    assert_true(differ > 50);
}

static void test_listener_and_config(void **state)
{
    (void)state;
    comm_listener_t *l = NULL, *w = NULL, *a = NULL;
    assert_int_equal(comm_listener_new("tcp://127.0.0.1:0", &l), SHOAL_OK);
    const char *ep = comm_listener_endpoint(l);
    assert_true(strncmp(ep, "tcp://127.0.0.1:", 16) == 0);
    assert_true(atoi(ep + 16) > 0);
    assert_int_equal(comm_listener_new("tcp://*:0", &w), SHOAL_OK);
    assert_true(strncmp(comm_listener_endpoint(w), "tcp://127.0.0.1:", 16) == 0);
    assert_int_equal(comm_listener_new_advertise("tcp://*:0", "node7.example", &a), SHOAL_OK);
    assert_true(strncmp(comm_listener_endpoint(a), "tcp://node7.example:", 20) == 0);
    comm_listener_destroy(&a);
    comm_listener_destroy(&w);
    assert_null(w);
    comm_listener_destroy(&w); /* idempotent */
    assert_int_equal(comm_listener_new("bogus://x", &a), SHOAL_ERR_INVALID);
    assert_null(a);

    const char *eps[3] = {ep, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"};
    comm_config_t cfg = {
        .rank = 0, .nranks = 3, .endpoints = eps, .generation = 5, .timeout_ms = 1000};
    comm_t *c = NULL;
    comm_config_t bad = cfg;
    bad.nranks = 0;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    bad = cfg;
    bad.rank = 3;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    bad = cfg;
    bad.timeout_ms = 0;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    bad = cfg;
    bad.chunk_bytes = 6;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    const char *eps_bad[3] = {ep, "not-an-endpoint", "tcp://127.0.0.1:2"};
    bad = cfg;
    bad.endpoints = eps_bad;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "rank 1"));
    const char *eps_null[3] = {ep, NULL, "tcp://127.0.0.1:2"};
    bad.endpoints = eps_null;
    assert_int_equal(comm_new(l, &bad, &c), SHOAL_ERR_INVALID);
    assert_null(c);

    assert_int_equal(comm_new(l, &cfg, &c), SHOAL_OK);
    comm_t *c2 = NULL;
    assert_int_equal(comm_new(l, &cfg, &c2), SHOAL_ERR_STATE); /* (generation, group) is live */
    comm_config_t other = cfg;
    other.group = 7;
    assert_int_equal(comm_new(l, &other, &c2), SHOAL_OK); /* another group beside it */
    assert_int_equal(comm_group(c2), 7);
    other.generation = 6;
    comm_t *c3 = NULL;
    assert_int_equal(comm_new(l, &other, &c3), SHOAL_ERR_STATE); /* generation 5 still live */
    assert_null(c3);
    comm_destroy(&c2);
    assert_int_equal(comm_broadcast(c, eps, 8, 3, 1), SHOAL_ERR_INVALID);
    assert_int_equal(comm_allreduce_sum_f32(c, NULL, 4, 1), SHOAL_ERR_INVALID);
    assert_int_equal(comm_rank(c), 0);
    assert_int_equal(comm_nranks(c), 3);
    assert_int_equal(comm_generation(c), 5);
    comm_destroy(&c);
    assert_null(c);
    comm_destroy(&c);
    assert_int_equal(comm_new(l, &cfg, &c), SHOAL_ERR_INVALID); /* generation must increase */

    /* One rank: every collective is a cheap local no-op. */
    const char *one[1] = {ep};
    comm_config_t solo = {
        .rank = 0, .nranks = 1, .endpoints = one, .generation = 6, .timeout_ms = 1000};
    assert_int_equal(comm_new(l, &solo, &c), SHOAL_OK);
    float v[5] = {1, 2, 3, 4, 5}, w5[5] = {1, 2, 3, 4, 5};
    double t0 = ct_ms();
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(comm_allreduce_sum_f32(c, v, 5, (uint64_t)i), SHOAL_OK);
        assert_int_equal(comm_broadcast(c, v, sizeof v, 0, (uint64_t)i), SHOAL_OK);
        assert_int_equal(comm_barrier(c, (uint64_t)i), SHOAL_OK);
    }
    assert_true(ct_ms() - t0 < 50);
    assert_memory_equal(v, w5, sizeof v);
    comm_abort(c);
    assert_int_equal(comm_barrier(c, 1), SHOAL_ERR_ABORTED);
    comm_destroy(&c);
    comm_listener_destroy(&l);
}

/* ------------------------------------------------------------------------------------------- */

/* All-reduce of n floats for (seed) on comm c; checks the rank's own output. */
static void s_allreduce_check(comm_t *c, rank_ctx_t *ctx, result_t *res, size_t n, uint64_t seed,
                              uint64_t step, float *keep)
{
    float *buf = malloc((n ? n : 1) * sizeof *buf), *want = malloc((n ? n : 1) * sizeof *want);
    ct_fill(buf, n, seed, ctx->rank);
    ct_expected(want, n, seed, ctx->nranks);
    double t0 = ct_ms();
    int rc = comm_allreduce_sum_f32(c, buf, n, step);
    double ms = ct_ms() - t0;
    int ok = rc == SHOAL_OK && memcmp(buf, want, n * sizeof *buf) == 0;
    if (keep)
        memcpy(keep, buf, n * sizeof *buf);
    ct_rec(res, rc, ok, ct_fnv(buf, n * sizeof *buf), ms);
    free(buf);
    free(want);
}

static void s_rank_sizes(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    const size_t sizes[] = {1, 7, 1001, 4099, (size_t)(ctx->nranks > 1 ? ctx->nranks - 1 : 1)};
    const size_t chunks[] = {0, 16};
    uint64_t gen = 1, step = 0;
    for (size_t k = 0; k < 2; k++) {
        comm_t *c = ct_comm(ctx, gen++, 5000, chunks[k]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            s_allreduce_check(c, ctx, res, sizes[s], 100 + s, ++step, NULL);
        /* The same all-reduce twice: bitwise the same result. */
        float a[1001], b[1001];
        s_allreduce_check(c, ctx, res, 1001, 7, ++step, a);
        s_allreduce_check(c, ctx, res, 1001, 7, ++step, b);
        ct_rec(res, SHOAL_OK, memcmp(a, b, sizeof a) == 0, 0, 0);
        /* A broadcast of many pieces (more than the in-flight window with 16-byte chunks). */
        unsigned char bc[8193], want[8193];
        for (size_t i = 0; i < sizeof bc; i++)
            want[i] = (unsigned char)(i * 31 + 7);
        int root = ctx->nranks - 1;
        if (ctx->rank == root)
            memcpy(bc, want, sizeof bc);
        else
            memset(bc, 0, sizeof bc);
        int rc = comm_broadcast(c, bc, sizeof bc, root, ++step);
        ct_rec(res, rc, rc == SHOAL_OK && memcmp(bc, want, sizeof bc) == 0, ct_fnv(bc, sizeof bc), 0);
        comm_destroy(&c);
    }
}

/* int64 all-reduces (sum and maximum) of values near the int64 range, every chunking: the exact
 * result on every rank, and the f32 all-reduce after them still works on the same comm. */
static void s_rank_i64(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    const size_t sizes[] = {1, 3, 1001, 70000};
    const size_t chunks[] = {0, 8, 24};
    uint64_t gen = 1, step = 0;
    for (size_t k = 0; k < 3; k++) {
        comm_t *c = ct_comm(ctx, gen++, 5000, chunks[k]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            const size_t n = chunks[k] && sizes[s] > 2000 ? 2000 : sizes[s];
            int64_t *sum = malloc(n * 8), *mx = malloc(n * 8);
            for (size_t i = 0; i < n; i++) {
                /* rank r contributes (r + 1) * 2^50 - i (the sum needs all 64 bits' carries) */
                sum[i] = ((int64_t)(ctx->rank + 1) << 50) - (int64_t)i;
                mx[i] = (int64_t)((i * 2654435761u + (size_t)ctx->rank * 97u) % 1000u) - 500;
            }
            int rc = comm_allreduce_sum_i64(c, sum, n, ++step);
            int ok = rc == SHOAL_OK;
            const int64_t R = ctx->nranks;
            for (size_t i = 0; ok && i < n; i++)
                ok = sum[i] == (((R * (R + 1)) / 2) << 50) - R * (int64_t)i;
            ct_rec(res, rc, ok, ct_fnv(sum, n * 8), 0);
            rc = comm_allreduce_max_i64(c, mx, n, ++step);
            ok = rc == SHOAL_OK;
            for (size_t i = 0; ok && i < n; i++) {
                int64_t want = INT64_MIN;
                for (int r = 0; r < ctx->nranks; r++) {
                    int64_t v = (int64_t)((i * 2654435761u + (size_t)r * 97u) % 1000u) - 500;
                    want = v > want ? v : want;
                }
                ok = mx[i] == want;
            }
            ct_rec(res, rc, ok, ct_fnv(mx, n * 8), 0);
            free(sum);
            free(mx);
        }
        s_allreduce_check(c, ctx, res, 1001, 9, ++step, NULL);
        comm_destroy(&c);
    }
}

static void test_allreduce_i64(void **state)
{
    (void)state;
    for (int nranks = 1; nranks <= 3; nranks++) {
        result_t res[MAX_RANKS];
        bool got[MAX_RANKS];
        int status[MAX_RANKS];
        ct_run_group(nranks, s_rank_i64, NULL, NULL, NULL, res, got, status);
        ct_check_all(res, got, status, nranks);
        assert_int_equal(res[0].nrec, 3 * (2 * 4 + 1));
    }
}

/* One rank runs an f32 all-reduce where the other runs an int64 one: neither result is mixed;
 * both fail (the frames of the other type are dropped) instead of folding garbage. */
static void s_rank_type_mismatch(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, 600, 0);
    int64_t buf[64] = {0};
    int rc = ctx->rank == 0 ? comm_allreduce_sum_i64(c, buf, 64, 1)
                            : comm_allreduce_sum_f32(c, (float *)buf, 128, 1);
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_TIMEOUT, 0, 0);
    comm_destroy(&c);
}

static void test_allreduce_type_mismatch(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(2, s_rank_type_mismatch, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 2);
}

static void s_sizes_for(int nranks)
{
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(nranks, s_rank_sizes, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, nranks);
    assert_int_equal(res[0].nrec, 2 * (5 + 4));
}

static void test_allreduce_1_rank(void **state)
{
    (void)state;
    s_sizes_for(1);
}

static void test_allreduce_2_ranks(void **state)
{
    (void)state;
    s_sizes_for(2);
}

static void test_allreduce_3_ranks(void **state)
{
    (void)state;
    s_sizes_for(3);
}

static void test_allreduce_4_ranks(void **state)
{
    (void)state;
    s_sizes_for(4);
}

static void s_rank_large(rank_ctx_t *ctx, result_t *res, void *arg)
{
    size_t n = *(size_t *)arg, bytes = n * sizeof(float);
    comm_t *c = ct_comm(ctx, 1, 10000, 0);
    float *in = malloc(bytes), *want = malloc(bytes), *a = malloc(bytes), *b = malloc(bytes);
    ct_fill(in, n, 42, ctx->rank);
    ct_expected(want, n, 42, ctx->nranks);
    memcpy(a, in, bytes);
    double t0 = ct_ms();
    int rc = comm_allreduce_sum_f32(c, a, n, 1);
    ct_rec(res, rc, rc == SHOAL_OK && memcmp(a, want, bytes) == 0, ct_fnv(a, bytes), ct_ms() - t0);
    memcpy(b, in, bytes);
    t0 = ct_ms();
    rc = comm_allreduce_sum_f32(c, b, n, 2);
    ct_rec(res, rc, rc == SHOAL_OK && memcmp(b, a, bytes) == 0, ct_fnv(b, bytes), ct_ms() - t0);
    free(in);
    free(want);
    free(a);
    free(b);
    comm_destroy(&c);
}

static void test_allreduce_16mb(void **state)
{
    (void)state;
    size_t n = (16u << 20) / 4 - 1; /* odd, not divisible by 3 */
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_large, &n, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 3);
    printf("  16 MB all-reduce, 3 ranks: %.1f ms, then %.1f ms\n", res[0].ms[0], res[0].ms[1]);
}

/* Every rank leaves right after a large all-reduce. A rank's last reduced pieces may still sit in
 * its queues when it returns; comm_destroy of a healthy comm must let them reach the peer (with
 * ZMQ_LINGER 0 here the peer lost them in 7 of 10 runs at 64 MiB and timed out). */
static void s_rank_exit_fast(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    size_t n = (64u << 20) / 4;
    comm_t *c = ct_comm(ctx, 1, 3000, 0);
    float *buf = malloc(n * sizeof *buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(ctx->rank + 1);
    int rc = comm_allreduce_sum_f32(c, buf, n, 1);
    comm_destroy(&c);
    int ok = rc == SHOAL_OK;
    for (size_t i = 0; ok && i < n; i++)
        ok = buf[i] == 3.0f;
    ct_rec(res, rc, ok, 0, 0);
    free(buf);
}

static void test_last_op_then_exit(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    for (int rep = 0; rep < 2; rep++) {
        ct_run_group(2, s_rank_exit_fast, NULL, NULL, NULL, res, got, status);
        ct_check_all(res, got, status, 2);
    }
}

/* ------------------------------------------------------------------------------------------- */

/* Interleaved all-reduces, broadcasts (every root, sizes around the chunk) and barriers with
 * rank-dependent delays, so that ranks run ahead of one another by an op. */
static void s_rank_sequence(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 3, 5000, 64);
    unsigned char bc[1000], want[1000];
    for (int it = 0; it < 21; it++) {
        uint64_t step = 10 + (uint64_t)it;
        if ((it + ctx->rank) % 4 == 0)
            usleep(2000);
        if (it % 3 == 0 && ctx->rank == (it / 3) % ctx->nranks)
            usleep(30000); /* one rank lags into an all-reduce that precedes a broadcast */
        switch (it % 3) {
        case 0:
            s_allreduce_check(c, ctx, res, (size_t)(1 + it * 13), 500 + (uint64_t)it, step, NULL);
            break;
        case 1: {
            int root = it % ctx->nranks;
            size_t bytes = (size_t)(it * 47) % sizeof bc;
            for (size_t i = 0; i < sizeof bc; i++)
                want[i] = (unsigned char)(i * 7 + (size_t)it);
            if (ctx->rank == root)
                memcpy(bc, want, sizeof bc);
            else
                memset(bc, 0xEE, sizeof bc);
            int rc = comm_broadcast(c, bc, bytes, root, step);
            int ok = rc == SHOAL_OK && memcmp(bc, want, bytes) == 0 &&
                     (ctx->rank == root || bytes == sizeof bc || bc[bytes] == 0xEE);
            ct_rec(res, rc, ok, ct_fnv(bc, bytes), 0);
            break;
        }
        default:
            ct_rec(res, comm_barrier(c, step), 1, 0, 0);
        }
    }
    comm_destroy(&c);
}

static void test_op_sequence(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_sequence, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 3);
    assert_int_equal(res[0].nrec, 21);
}

/* ------------------------------------------------------------------------------------------- */

#define DEAD_TIMEOUT_MS 400

/* Rank 2 is SIGKILLed after joining; ranks 0 and 1 must time out naming it, then carry on with a
 * new generation without it. */
static void s_rank_dead(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    if (ctx->rank == 2)
        raise(SIGKILL);
    float buf[1000];
    ct_fill(buf, 1000, 9, ctx->rank);
    double t0 = ct_ms();
    int rc = comm_allreduce_sum_f32(c, buf, 1000, 1);
    double ms = ct_ms() - t0;
    ct_rec(res, rc,
          rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), "no message from rank 2") &&
              ms >= DEAD_TIMEOUT_MS - 5 && ms < DEAD_TIMEOUT_MS + 1500,
          0, ms);
    rc = comm_barrier(c, 2);
    ct_rec(res, rc, rc == SHOAL_ERR_STATE, 0, 0); /* broken comm stays broken */
    comm_destroy(&c);
    /* The survivors' next generation. */
    ctx->nranks = 2;
    c = ct_comm(ctx, 2, 5000, 0);
    s_allreduce_check(c, ctx, res, 1000, 9, 1, NULL);
    comm_destroy(&c);
}

static void test_dead_peer(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_killed(3, s_rank_dead, NULL, 2, res);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(res[r].nrec, 3);
        if (!res[r].ok[0])
            fail_msg("rank %d: rc %d after %.0f ms: %s", r, res[r].rc[0], res[r].ms[0],
                     res[r].msg[0]);
        assert_int_equal(res[r].ok[1], 1);
        assert_int_equal(res[r].rc[2], SHOAL_OK);
        assert_int_equal(res[r].ok[2], 1);
    }
    assert_int_equal(res[0].digest[2], res[1].digest[2]);
    printf("  rank 0: %s\n", res[0].msg[0]);
}

static void s_kill_self(int sig)
{
    (void)sig;
    raise(SIGKILL); /* async-signal-safe */
}

/* Rank 2 is SIGKILLed from a timer while all-reduces stream: the others fail within the timeout
 * (plus the op's own transfer time) with rank 2 among those they wait on, never hang. Rank 2
 * arms the timer once it has completed op 1, which needs the others' op-1 data: they are past
 * op 0 whatever the machine's speed (ops > 1 below is an order, not a race). */
static void s_rank_killed_mid_op(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    size_t n = 1u << 18;
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    float *buf = calloc(n, sizeof *buf);
    if (ctx->rank == 2) {
        struct sigaction sa = {.sa_handler = s_kill_self};
        sigaction(SIGALRM, &sa, NULL);
    }
    int rc = SHOAL_OK, ops = 0;
    double ms = 0;
    for (; ops < 2000 && rc == SHOAL_OK; ops++) {
        double t0 = ct_ms();
        rc = comm_allreduce_sum_f32(c, buf, n, (uint64_t)ops);
        ms = ct_ms() - t0;
        if (ctx->rank == 2 && ops == 1 && rc == SHOAL_OK) {
            struct itimerval it = {.it_value = {.tv_usec = 50 * 1000}};
            setitimer(ITIMER_REAL, &it, NULL);
        }
    }
    const char *w = strstr(shoal_errmsg(), "waiting on rank(s) ");
    ct_rec(res, SHOAL_OK,
          rc == SHOAL_ERR_TIMEOUT && ops > 1 && ms < DEAD_TIMEOUT_MS + 2000 && w &&
              strchr(w + 19, '2') != NULL,
          0, ms);
    snprintf(res->msg[0], sizeof res->msg[0], "rc %d in op %d after %.0f ms: %s", rc, ops, ms,
             shoal_errmsg());
    free(buf);
    comm_destroy(&c);
}

static void test_killed_mid_op(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_killed(3, s_rank_killed_mid_op, NULL, 2, res);
    for (int r = 0; r < 2; r++) {
        if (!res[r].ok[0])
            fail_msg("rank %d: %s", r, res[r].msg[0]);
    }
    printf("  rank 0: %s\n", res[0].msg[0]);
}

/* The root of a broadcast never joins: the receivers time out naming it. */
static void s_rank_dead_root(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    if (ctx->rank == 1) {
        comm_destroy(&c);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        return;
    }
    char buf[64];
    int rc = comm_broadcast(c, buf, sizeof buf, 1, 1);
    ct_rec(res, SHOAL_OK,
          rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), "no message from rank 1") != NULL, 0,
          0);
    comm_destroy(&c);
}

static void test_dead_root(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_dead_root, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 3);
}

/* A receiver of a broadcast never joins. The root times out naming it; the other receiver does not
 * complete either (it waits for the root's DONE): otherwise it could run two ops ahead of the
 * missing rank, whose later messages would then fall outside the one-op window. */
static void s_rank_dead_receiver(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    if (ctx->rank == 2) {
        comm_destroy(&c);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        return;
    }
    char buf[5000] = {0};
    int rc = comm_broadcast(c, buf, sizeof buf, 0, 1);
    const char *want = ctx->rank == 0 ? "no message from rank 2" : "waiting on rank(s) 0";
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), want) != NULL, 0, 0);
    if (!res->ok[0])
        snprintf(res->msg[0], sizeof res->msg[0], "rc %d: %s", rc, shoal_errmsg());
    comm_destroy(&c);
}

static void test_dead_receiver(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_dead_receiver, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 3);
}

/* ------------------------------------------------------------------------------------------- */

/* Rank 1 never calls the collective: rank 0 is aborted from a signal handler, then from another
 * thread, 0.1 s in; each call ends ABORTED, before its own 20 s timeout could end it (no tighter
 * bound: a loaded machine may run the abort late, never wrongly). */
static void s_rank_abort(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    if (ctx->rank == 1) {
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        return;
    }
    comm_t *c = ct_comm(ctx, 1, 20000, 0);
    ct_abort_on_alarm(c, 100 * 1000);
    float buf[100] = {0};
    double t0 = ct_ms();
    int rc = comm_allreduce_sum_f32(c, buf, 100, 1);
    double ms = ct_ms() - t0;
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_ABORTED && ms < 20000, 0, ms);
    ct_rec(res, SHOAL_OK, comm_barrier(c, 2) == SHOAL_ERR_ABORTED, 0, 0);
    comm_destroy(&c);

    c = ct_comm(ctx, 2, 20000, 0);
    pthread_t th;
    pthread_create(&th, NULL, ct_abort_thread, c);
    t0 = ct_ms();
    rc = comm_barrier(c, 3);
    ms = ct_ms() - t0;
    pthread_join(th, NULL);
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_ABORTED && ms < 20000, 0, ms);
    comm_destroy(&c);
}

static void test_abort(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(2, s_rank_abort, NULL, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, 2);
}

/* ------------------------------------------------------------------------------------------- */

#define GEN_N 777

/* Generation change with stray messages both ways (t in ms after all-reduce A):
 * - rank 0 (timeout 400): at t=0 an extra generation-1 all-reduce of poison values that nobody
 *   joins; it times out at t~400; then generation 2's all-reduce B at once;
 * - rank 1: sleeps until t~300, then generation 2's B: rank 0's poison (generation 1) lies in its
 *   queue and must be dropped as an older generation;
 * - rank 2 (timeout 800): from t~100 a generation-1 barrier nobody joins: it drops the poison
 *   (another op), and keeps ranks 1's and 0's generation-2 contributions that arrive meanwhile;
 *   the barrier times out naming ranks 0 and 1; then B must complete from what was kept.
 * B is checked bitwise on every rank: a kept message lost, or poison mixed in, fails it. */
static void s_rank_generation(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, ctx->rank == 2 ? 800 : 400, 0);
    s_allreduce_check(c, ctx, res, GEN_N, 11, 1, NULL); /* A: generation 1, op 1 */
    if (ctx->rank == 0) {
        float poison[GEN_N];
        for (int i = 0; i < GEN_N; i++)
            poison[i] = 1e30f;
        int rc = comm_allreduce_sum_f32(c, poison, GEN_N, 2);
        ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_TIMEOUT, 0, 0);
    } else if (ctx->rank == 1) {
        usleep(300 * 1000);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
    } else {
        usleep(100 * 1000);
        int rc = comm_barrier(c, 2);
        ct_rec(res, SHOAL_OK,
              rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), "no message from rank 0,1"), 0, 0);
        if (rc != SHOAL_ERR_TIMEOUT || !strstr(shoal_errmsg(), "no message from rank 0,1"))
            snprintf(res->msg[res->nrec - 1], sizeof res->msg[0], "%s", shoal_errmsg());
    }
    comm_destroy(&c);
    c = ct_comm(ctx, 2, 5000, 0);
    s_allreduce_check(c, ctx, res, GEN_N, 12, 2, NULL); /* B: generation 2, op 1 */
    s_allreduce_check(c, ctx, res, GEN_N, 13, 3, NULL); /* and the next op */
    comm_destroy(&c);
}

static void test_generation_change(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_generation, NULL, NULL, NULL, res, got, status);
    for (int r = 0; r < 3; r++)
        if (got[r] && res[r].nrec > 1 && !res[r].ok[1])
            fail_msg("rank %d: %s", r, res[r].msg[1]);
    ct_check_all(res, got, status, 3);
    assert_int_equal(res[0].nrec, 4);
}

/* ------------------------------------------------------------------------------------------- */

/* The wire header as ops/COMM.md documents it (72 bytes, little-endian). */
typedef struct {
    uint32_t magic;
    uint8_t version, kind;
    uint16_t flags;
    uint32_t src, nranks;
    uint64_t generation, step, seq, total, offset;
    uint32_t count, root, chunk, group;
} wire_t;

static wire_t s_wire(int kind, uint32_t src, uint64_t gen, uint64_t seq, uint64_t step,
                     uint64_t total, uint64_t offset, uint32_t count)
{
    return (wire_t){.magic = 0x4d434853u,
                    .version = 2,
                    .kind = (uint8_t)kind,
                    .src = src,
                    .nranks = 3,
                    .generation = gen,
                    .step = step,
                    .seq = seq,
                    .total = total,
                    .offset = offset,
                    .count = count,
                    .chunk = COMM_CHUNK_DEFAULT};
}

static void s_send2(void *s, const void *a, size_t na, const void *b, size_t nb)
{
    unsigned char *m = malloc(na + nb + 1);
    memcpy(m, a, na);
    if (nb)
        memcpy(m + na, b, nb);
    zmq_send(s, m, na + nb, 0);
    free(m);
}

#define GARBAGE_N 1001

/* Hostile and broken frames to every listener: short, random, wrong version, lying sizes,
 * multipart, impossible ranks, an old generation and an op far ahead (both with poison that
 * would show in the sum), a frame over the size limit, raw TCP junk, a wrong socket type. */
static void s_send_garbage(char eps[][EP_LEN], int nranks, void *arg)
{
    (void)arg;
    void *ctx = zmq_ctx_new();
    static float poison[GARBAGE_N];
    for (int i = 0; i < GARBAGE_N; i++)
        poison[i] = 1e30f;
    for (int r = 0; r < nranks; r++) {
        void *s = zmq_socket(ctx, ZMQ_PUSH);
        assert_int_equal(zmq_connect(s, eps[r]), 0);
        unsigned char rnd[72];
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)(i * 37 + 11);
        zmq_send(s, "", 0, 0);
        zmq_send(s, "abc", 3, 0);
        zmq_send(s, rnd, sizeof rnd, 0);
        size_t lo = (GARBAGE_N / 3) * (size_t)r + ((size_t)r < GARBAGE_N % 3 ? (size_t)r : 0);
        size_t cnt = GARBAGE_N / 3 + ((size_t)r < GARBAGE_N % 3);
        uint32_t src = (uint32_t)((r + 1) % nranks);
        wire_t h = s_wire(1, src, 1, 1, 1, GARBAGE_N, lo, (uint32_t)cnt);
        h.version = 9;
        s_send2(s, &h, sizeof h, poison, cnt * 4);
        h = s_wire(1, src, 1, 1, 1, GARBAGE_N, lo, (uint32_t)cnt);
        s_send2(s, &h, sizeof h, poison, 12); /* size lies */
        h.count = 1u << 31;
        s_send2(s, &h, sizeof h, NULL, 0);
        h = s_wire(1, src, 1, 1, 1, GARBAGE_N, lo, (uint32_t)cnt);
        zmq_send(s, &h, sizeof h, ZMQ_SNDMORE); /* multipart */
        zmq_send(s, poison, cnt * 4, 0);
        h.src = 7;
        s_send2(s, &h, sizeof h, poison, cnt * 4);
        h = s_wire(1, src, 0, 1, 1, GARBAGE_N, lo, (uint32_t)cnt); /* old generation */
        s_send2(s, &h, sizeof h, poison, cnt * 4);
        h = s_wire(1, src, 1, 5, 1, GARBAGE_N, lo, (uint32_t)cnt); /* op far ahead */
        s_send2(s, &h, sizeof h, poison, cnt * 4);
        h = s_wire(1, src, 1, 1, 1, GARBAGE_N, lo + 1, (uint32_t)cnt - 1); /* misaligned piece */
        s_send2(s, &h, sizeof h, poison, (cnt - 1) * 4);
        int linger = 2000;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s);

        void *big = zmq_socket(ctx, ZMQ_PUSH);
        zmq_connect(big, eps[r]);
        size_t nbig = COMM_CHUNK_MAX + 4096;
        char *b = calloc(1, nbig);
        zmq_send(big, b, nbig, 0);
        free(b);
        zmq_setsockopt(big, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(big);

        void *dealer = zmq_socket(ctx, ZMQ_DEALER);
        zmq_connect(dealer, eps[r]);
        zmq_send(dealer, rnd, sizeof rnd, ZMQ_DONTWAIT);
        zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(dealer);

        int port = atoi(strrchr(eps[r], ':') + 1);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            char junk[3000];
            for (size_t i = 0; i < sizeof junk; i++)
                junk[i] = (char)(i * 13 + 5);
            ssize_t w = write(fd, junk, sizeof junk);
            (void)w;
        }
        close(fd);
    }
    zmq_ctx_term(ctx); /* flushes the frames above */
    usleep(100 * 1000);
}

/* Keeps sending near-valid random frames while the ranks run. */
typedef struct {
    char eps[MAX_RANKS][EP_LEN];
    int nranks;
    double until_ms;
} fuzz_t;

static void *s_fuzz_thread(void *arg)
{
    fuzz_t *f = arg;
    void *ctx = zmq_ctx_new();
    void *s[MAX_RANKS];
    for (int r = 0; r < f->nranks; r++) {
        s[r] = zmq_socket(ctx, ZMQ_PUSH);
        int linger = 0;
        zmq_setsockopt(s[r], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(s[r], f->eps[r]);
    }
    uint64_t x = 12345;
    unsigned char payload[256] = {0};
    while (ct_ms() < f->until_ms) {
        for (int r = 0; r < f->nranks; r++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            /* Never a frame that is valid for the op the ranks run: generation 1 only with an
             * op number outside the window, or another generation. */
            uint64_t gens[] = {0, 1, 2, 9, UINT64_MAX};
            uint64_t gen = gens[(x >> 33) % 5];
            uint64_t seq = gen == 1 ? 4 + (x >> 20) % 5 : (x >> 20) % 3;
            wire_t h =
                s_wire(1 + (int)((x >> 40) % 5), (uint32_t)((x >> 45) % 4), gen, seq, (x >> 50) % 3,
                       (x >> 10) % 2000, (x >> 5) % 700, (uint32_t)((x >> 13) % 64));
            size_t unit = h.kind <= 2 ? 4 : h.kind == 3 ? 1 : 0;
            size_t n = (x & 1) ? h.count * unit : (x >> 7) % 256;
            s_send2(s[r], &h, sizeof h, payload, n > sizeof payload ? sizeof payload : n);
        }
        usleep(200);
    }
    for (int r = 0; r < f->nranks; r++)
        zmq_close(s[r]);
    zmq_ctx_term(ctx);
    return NULL;
}

static pthread_t s_fuzz_th;
static fuzz_t s_fuzz;

static void s_garbage_then_fuzz(char eps[][EP_LEN], int nranks, void *arg)
{
    s_send_garbage(eps, nranks, arg);
    memcpy(s_fuzz.eps, eps, sizeof s_fuzz.eps[0] * (size_t)nranks);
    s_fuzz.nranks = nranks;
    s_fuzz.until_ms = ct_ms() + 400;
    assert_int_equal(pthread_create(&s_fuzz_th, NULL, s_fuzz_thread, &s_fuzz), 0);
}

static void s_rank_garbage(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm(ctx, 1, 5000, 0);
    for (int i = 0; i < 6; i++) {
        s_allreduce_check(c, ctx, res, GARBAGE_N, 21 + (uint64_t)i, 1 + (uint64_t)i, NULL);
        usleep(50 * 1000); /* let the fuzzer's frames pile up between ops too */
    }
    comm_destroy(&c);
}

static void test_garbage_frames(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(3, s_rank_garbage, NULL, s_garbage_then_fuzz, NULL, res, got, status);
    pthread_join(s_fuzz_th, NULL);
    ct_check_all(res, got, status, 3);
    assert_int_equal(res[0].nrec, 6);
}

/* ------------------------------------------------------------------------------------------- */

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    if (getenv("TEST_COMM_FILTER"))
        cmocka_set_test_filter(getenv("TEST_COMM_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_matters),     cmocka_unit_test(test_listener_and_config),
        cmocka_unit_test(test_allreduce_1_rank),  cmocka_unit_test(test_allreduce_2_ranks),
        cmocka_unit_test(test_allreduce_3_ranks), cmocka_unit_test(test_allreduce_4_ranks),
        cmocka_unit_test(test_allreduce_16mb),    cmocka_unit_test(test_op_sequence),
        cmocka_unit_test(test_last_op_then_exit), cmocka_unit_test(test_dead_peer),
        cmocka_unit_test(test_killed_mid_op),     cmocka_unit_test(test_dead_root),
        cmocka_unit_test(test_dead_receiver),     cmocka_unit_test(test_abort),
        cmocka_unit_test(test_generation_change), cmocka_unit_test(test_garbage_frames),
        cmocka_unit_test(test_allreduce_i64),     cmocka_unit_test(test_allreduce_type_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
