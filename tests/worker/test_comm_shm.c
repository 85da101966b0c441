/* test_comm_shm: the same-host shared-memory path of the comm (comm_zmq_shm.c) against the socket
 * path, with real forked ranks on 127.0.0.1: the same ops of awkward sizes over 2, 3 and 4 ranks
 * with shm on and with it off give bitwise the same outputs (and the documented rank-ordered
 * sum; int64 sums and maxima exact); segments grow and are removed; a rank with shm off among ranks
 * with it on fails the op saying so; a dead peer is a timeout naming it; abort from a signal
 * handler and from a thread; the segment module: sizes checked on open, a dead holder's leftovers
 * swept. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "comm.h"
#include "comm_shm.h"
#include "test_comm_lib.h"

#define ALL_OFF 0xFu
#define DEAD_TIMEOUT_MS 400

/* Floats of the reductions: above COMM_SHM_MIN_BYTES, not a multiple of the ranks or the chunk;
 * the segment grows, then serves a smaller op; the largest has ranges of several times the
 * reduction and all-gather rings (2 and 8 MiB), so their slots are reused within one op. */
#define MAX_FLOATS 3000017
static const size_t s_nfloats[] = {65537, 400009, 99991, MAX_FLOATS};
/* Bytes of the broadcasts (the last wraps the 8 MiB ring). */
#define MAX_BYTES ((size_t)(19 << 20) + 7)
static const size_t s_nbytes[] = {262147, 1000003, MAX_BYTES};
/* chunk_bytes: the default, and one that cuts ranges into many odd pieces. */
static const size_t s_chunks[] = {0, 65540};

/* Rank 0 enters the largest ops late: the others run ahead until the rings' flow control stops
 * them, and a slot rewritten too early would show in rank 0's output. */
static void s_lag(int rank, bool largest)
{
    if (rank == 0 && largest)
        usleep(50 * 1000);
}

/* The ops of one rank, each recorded with its output digest (the same on every rank):
 * all-reduce, reduce-scatter then all-gather (== all-reduce), all-gather of ranges filled by
 * their owners, broadcast from the last rank. */
static void s_rank_ops(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    int R = ctx->nranks, me = ctx->rank;
    uint64_t gen = 1, step = 0;
    float *buf = malloc(MAX_FLOATS * 4), *want = malloc(MAX_FLOATS * 4);
    unsigned char *bc = malloc(MAX_BYTES), *bwant = malloc(MAX_BYTES);
    for (size_t k = 0; k < sizeof s_chunks / sizeof s_chunks[0]; k++) {
        comm_t *c = ct_comm(ctx, gen++, 20000, s_chunks[k]);
        for (size_t s = 0; s < sizeof s_nfloats / sizeof s_nfloats[0]; s++) {
            size_t n = s_nfloats[s], lo, hi;
            uint64_t seed = 1000 * k + s;
            ct_expected(want, n, seed, R);
            ct_fill(buf, n, seed, me);
            s_lag(me, n == MAX_FLOATS);
            int rc = comm_allreduce_sum_f32(c, buf, n, ++step);
            ct_rec(res, rc, rc == SHOAL_OK && memcmp(buf, want, n * 4) == 0, ct_fnv(buf, n * 4), 0);

            ct_fill(buf, n, seed, me);
            s_lag(me, n == MAX_FLOATS);
            rc = comm_reduce_scatter_sum_f32(c, buf, n, ++step);
            comm_chunk_range(n, R, me, &lo, &hi);
            int ok = rc == SHOAL_OK && memcmp(buf + lo, want + lo, (hi - lo) * 4) == 0;
            if (rc == SHOAL_OK)
                rc = comm_allgather_f32(c, buf, n, ++step);
            ct_rec(res, rc, ok && rc == SHOAL_OK && memcmp(buf, want, n * 4) == 0,
                   ct_fnv(buf, n * 4), 0);

            /* All-gather alone: each owner's range holds its own input, the rest garbage. */
            ct_fill(buf, n, seed, 7);
            for (int r = 0; r < R; r++) {
                comm_chunk_range(n, R, r, &lo, &hi);
                for (size_t i = lo; i < hi; i++) {
                    want[i] = ct_input(seed, r, i);
                    if (r == me)
                        buf[i] = want[i];
                }
            }
            s_lag(me, n == MAX_FLOATS);
            rc = comm_allgather_f32(c, buf, n, ++step);
            ct_rec(res, rc, rc == SHOAL_OK && memcmp(buf, want, n * 4) == 0, ct_fnv(buf, n * 4), 0);

            /* int64 sum and maximum of n / 2 elements (the same bytes as the floats): values
             * whose sum needs carries across 32 bits; exact, so checked element by element */
            const size_t ni = n / 2;
            int64_t *ib = (int64_t *)buf;
            for (size_t i = 0; i < ni; i++)
                ib[i] = ((int64_t)(me + 1) << 40) + (int64_t)(i * 2654435761u % 1000003u) - me;
            s_lag(me, n == MAX_FLOATS);
            rc = comm_allreduce_sum_i64(c, ib, ni, ++step);
            ok = rc == SHOAL_OK;
            for (size_t i = 0; ok && i < ni; i++)
                ok = ib[i] == (((int64_t)R * (R + 1) / 2) << 40) +
                                  R * (int64_t)(i * 2654435761u % 1000003u) -
                                  (int64_t)R * (R - 1) / 2;
            ct_rec(res, rc, ok, ct_fnv(ib, ni * 8), 0);
            for (size_t i = 0; i < ni; i++)
                ib[i] = (int64_t)((i + (size_t)me * 7919u) % 65521u) - 30000;
            rc = comm_allreduce_max_i64(c, ib, ni, ++step);
            ok = rc == SHOAL_OK;
            for (size_t i = 0; ok && i < ni; i++) {
                int64_t m = INT64_MIN;
                for (int r = 0; r < R; r++) {
                    int64_t v = (int64_t)((i + (size_t)r * 7919u) % 65521u) - 30000;
                    m = v > m ? v : m;
                }
                ok = ib[i] == m;
            }
            ct_rec(res, rc, ok, ct_fnv(ib, ni * 8), 0);
        }
        for (size_t s = 0; s < sizeof s_nbytes / sizeof s_nbytes[0]; s++) {
            size_t n = s_nbytes[s];
            for (size_t i = 0; i < n; i++)
                bwant[i] = (unsigned char)(((i + s + k) * 2654435761u) >> 13); /* no period */
            if (me == R - 1)
                memcpy(bc, bwant, n);
            else
                memset(bc, 0xa5, n);
            s_lag(me, n == MAX_BYTES);
            int rc = comm_broadcast(c, bc, n, R - 1, ++step);
            ct_rec(res, rc, rc == SHOAL_OK && memcmp(bc, bwant, n) == 0, ct_fnv(bc, n), 0);
        }
        comm_destroy(&c);
    }
    free(buf);
    free(want);
    free(bc);
    free(bwant);
}

/* The ports of the endpoints, for s_no_segments_left. */
typedef struct {
    char ports[MAX_RANKS][16];
    int nranks;
} ports_t;

static void s_keep_ports(char eps[][EP_LEN], int nranks, void *arg)
{
    ports_t *p = arg;
    p->nranks = nranks;
    for (int r = 0; r < nranks; r++) {
        const char *colon = strrchr(eps[r], ':');
        snprintf(p->ports[r], sizeof p->ports[r], "-%s-", colon ? colon + 1 : "?");
    }
}

/* No segment of these ranks' listeners is left in /dev/shm ("shoal-comm-<host>-<port>-..."). */
static void s_no_segments_left(const ports_t *p)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "shoal-comm-", 11) != 0)
            continue;
        const char *after = strchr(e->d_name + 11, '-'); /* after the host hash */
        for (int r = 0; after && r < p->nranks; r++)
            if (strncmp(after, p->ports[r], strlen(p->ports[r])) == 0)
                fail_msg("segment /dev/shm/%s left behind", e->d_name);
    }
    closedir(d);
}

/* Runs s_rank_ops with shm on and off; each run checks itself, and the two agree bitwise. */
static void s_shm_vs_sockets(int nranks)
{
    result_t on[MAX_RANKS], off[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ports_t ports;
    ct_no_shm_mask = 0;
    ct_run_group(nranks, s_rank_ops, NULL, s_keep_ports, &ports, on, got, status);
    ct_check_all(on, got, status, nranks);
    s_no_segments_left(&ports);
    ct_no_shm_mask = ALL_OFF;
    ct_run_group(nranks, s_rank_ops, NULL, NULL, NULL, off, got, status);
    ct_no_shm_mask = 0;
    ct_check_all(off, got, status, nranks);
    assert_int_equal(on[0].nrec, off[0].nrec);
    assert_int_equal(on[0].nrec, 2 * (4 * 5 + 3));
    for (int k = 0; k < on[0].nrec; k++)
        if (on[0].digest[k] != off[0].digest[k])
            fail_msg("record %d: shm and socket outputs differ", k);
}

/* The state: the number of ranks. */
static void test_shm_vs_sockets(void **state)
{
    s_shm_vs_sockets(*(const int *)*state);
}

/* ------------------------------------------------------------------------------------------- */

#define BIG 300001

/* Rank 1 has shm off, rank 0 on: a large all-reduce fails with SHOAL_ERR_INVALID saying why on
 * the rank that sees the other's frame first; the other fails the same way or, when the failed
 * rank's frames were dropped with its comm, times out (never hangs). Small ops, which never use
 * shm, still work on the next generation (its timeout covers the first one's). */
static void s_rank_mismatch(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    float *buf = calloc(BIG, 4);
    comm_t *c = ct_comm(ctx, 1, 1000, 0);
    int rc = comm_allreduce_sum_f32(c, buf, BIG, 1);
    bool said = rc == SHOAL_ERR_INVALID && strstr(shoal_errmsg(), "over shared memory") != NULL;
    ct_rec(res, rc, said || rc == SHOAL_ERR_TIMEOUT, (uint64_t)said, 0);
    comm_destroy(&c);
    c = ct_comm(ctx, 2, 10000, 0);
    ct_fill(buf, 1000, 3, ctx->rank);
    rc = comm_allreduce_sum_f32(c, buf, 1000, 1);
    ct_rec(res, rc, rc == SHOAL_OK, ct_fnv(buf, 1000 * 4), 0);
    comm_destroy(&c);
    free(buf);
}

static void test_shm_mismatch(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_no_shm_mask = 1u << 1;
    ct_run_group(2, s_rank_mismatch, NULL, NULL, NULL, res, got, status);
    ct_no_shm_mask = 0;
    for (int r = 0; r < 2; r++) {
        assert_true(got[r]);
        assert_int_equal(res[r].nrec, 2);
        if (!res[r].ok[0] || !res[r].ok[1])
            fail_msg("rank %d: %s / %s", r, res[r].msg[0], res[r].msg[1]);
    }
    assert_true(res[0].digest[0] || res[1].digest[0]); /* one rank said why */
    assert_int_equal(res[0].digest[1], res[1].digest[1]);
    printf("  rank %d: %s\n", res[0].digest[0] ? 0 : 1, res[res[0].digest[0] ? 0 : 1].msg[0]);
}

/* ------------------------------------------------------------------------------------------- */

/* Rank 2 dies once every rank has created both comms (same-host peers, so both use shm) and
 * finished a small all-reduce (it waits for a message from each survivor sent after it). The
 * survivors' large all-reduce on the first comm, then their large broadcast from rank 0 on the
 * second, time out naming rank 2 (the broadcast's other receiver waits on the root's DONE); no
 * segment is left. */
static void s_rank_dead(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    const int all[] = {0, 1, 2};
    comm_t *c = ct_comm(ctx, 1, DEAD_TIMEOUT_MS, 0);
    comm_t *c2 = ct_comm_group(ctx, 1, 1, all, 3, DEAD_TIMEOUT_MS);
    float *buf = calloc(BIG, 4);
    int rc = comm_allreduce_sum_f32(c, buf, 100, 1);
    if (ctx->rank == 2) {
        char x;
        if (rc == SHOAL_OK && comm_recv(c, 0, &x, 1, 2) == SHOAL_OK &&
            comm_recv(c, 1, &x, 1, 2) == SHOAL_OK)
            raise(SIGKILL);
        _exit(4);
    }
    if (rc == SHOAL_OK)
        rc = comm_send(c, 2, "x", 1, 2);
    ct_rec(res, rc, rc == SHOAL_OK, 0, 0);
    double t0 = ct_ms();
    rc = comm_allreduce_sum_f32(c, buf, BIG, 3);
    double ms = ct_ms() - t0;
    ct_rec(res, SHOAL_OK,
           rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), "no message from rank 2") &&
               ms >= DEAD_TIMEOUT_MS - 5 && ms < DEAD_TIMEOUT_MS + 1500,
           0, ms);
    snprintf(res->msg[1], sizeof res->msg[1], "rc %d: %s", rc, shoal_errmsg());
    comm_destroy(&c);
    rc = comm_broadcast(c2, buf, BIG * 4, 0, 1);
    const char *want = ctx->rank == 0 ? "no message from rank 2" : "waiting on rank(s) 0";
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_TIMEOUT && strstr(shoal_errmsg(), want) != NULL, 0, 0);
    snprintf(res->msg[2], sizeof res->msg[2], "rc %d: %s", rc, shoal_errmsg());
    comm_destroy(&c2);
    free(buf);
}

static void test_shm_dead_peer(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ports_t ports;
    ct_run_group(3, s_rank_dead, NULL, s_keep_ports, &ports, res, got, status);
    assert_false(got[2]);
    for (int r = 0; r < 2; r++) {
        assert_true(got[r]);
        assert_int_equal(res[r].nrec, 3);
        for (int k = 0; k < 3; k++)
            if (!res[r].ok[k])
                fail_msg("rank %d record %d: %s", r, k, res[r].msg[k]);
    }
    s_no_segments_left(&ports);
    printf("  rank 0: %s\n  rank 1: %s\n", res[0].msg[1], res[1].msg[2]);
}

/* ------------------------------------------------------------------------------------------- */

/* Both comms are created up front (rank 1's listener is gone later, and a comm with a peer not
 * reachable over ipc would not use shm). Rank 1 joins only the first large all-reduce: rank 0's
 * second one is aborted from a signal handler, a large broadcast on the other comm from a thread;
 * both end ABORTED long before the 20 s timeout. */
static void s_rank_abort(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    const int both[] = {0, 1};
    float *buf = calloc(BIG, 4);
    comm_t *c = ct_comm(ctx, 1, 20000, 0);
    comm_t *c2 = ct_comm_group(ctx, 1, 1, both, 2, 20000);
    int rc = comm_allreduce_sum_f32(c, buf, BIG, 1);
    ct_rec(res, rc, rc == SHOAL_OK, 0, 0);
    if (ctx->rank == 1) {
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
        goto out;
    }
    ct_abort_on_alarm(c, 100 * 1000);
    double t0 = ct_ms();
    rc = comm_allreduce_sum_f32(c, buf, BIG, 2);
    double ms = ct_ms() - t0;
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_ABORTED && ms < 10000, 0, ms);

    pthread_t th;
    pthread_create(&th, NULL, ct_abort_thread, c2);
    t0 = ct_ms();
    rc = comm_broadcast(c2, buf, BIG * 4, 0, 1);
    ms = ct_ms() - t0;
    pthread_join(th, NULL);
    ct_rec(res, SHOAL_OK, rc == SHOAL_ERR_ABORTED && ms < 10000, 0, ms);
out:
    comm_destroy(&c);
    comm_destroy(&c2);
    free(buf);
}

static void test_shm_abort(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_all(2, s_rank_abort, NULL, res);
}

/* comm_shm directly: create, open (too small, absent, another nonce, a wider mode, another
 * owner), unlink, and the sweep of exactly one identity's leftovers. */
static void test_segments(void **state)
{
    (void)state;
    char id[64], other[64], a[96], b[96];
    snprintf(id, sizeof id, "shoal-test-%d", (int)getpid());
    snprintf(other, sizeof other, "shoal-test-%d1", (int)getpid());
    snprintf(a, sizeof a, "/%s-1-0-1", id);
    snprintf(b, sizeof b, "/%s-1-0-1", other);
    comm_shm_seg_t w, w2, r;
    assert_int_equal(comm_shm_create(&w, a, 8192), SHOAL_OK);
    assert_int_equal(comm_shm_create(&w2, b, 4096), SHOAL_OK);
    /* each segment its own random nonce */
    assert_memory_not_equal(w.nonce, w2.nonce, COMM_SHM_NONCE_BYTES);
    memset(w.base, 0x5a, 8192);
    assert_int_equal(comm_shm_open(&r, a, 8193, w.nonce), SHOAL_ERR_INVALID);
    assert_int_equal(comm_shm_open(&r, a, 8192, w.nonce), SHOAL_OK);
    assert_int_equal(r.base[8191], 0x5a);
    assert_int_equal(r.base[0], 0x5a);
    comm_shm_close(&r);
    /* the nonce of another segment (a stale or planted one under the announced name): refused */
    assert_int_equal(comm_shm_open(&r, a, 8192, w2.nonce), SHOAL_ERR_INVALID);
    assert_null(r.base);
    unsigned char flipped[COMM_SHM_NONCE_BYTES];
    memcpy(flipped, w.nonce, sizeof flipped);
    flipped[COMM_SHM_NONCE_BYTES - 1] ^= 1;
    assert_int_equal(comm_shm_open(&r, a, 8192, flipped), SHOAL_ERR_INVALID);
    /* created 0600; a segment group or others may touch is refused */
    int fd = shm_open(a, O_RDWR, 0);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(fchmod(fd, 0640), 0);
    assert_int_equal(comm_shm_open(&r, a, 8192, w.nonce), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "mode 640"));
    assert_int_equal(fchmod(fd, 0600), 0);
    /* another user's segment (only root can make one here) */
    if (geteuid() == 0) {
        assert_int_equal(fchown(fd, 65534, (gid_t)-1), 0);
        assert_int_equal(comm_shm_open(&r, a, 8192, w.nonce), SHOAL_ERR_INVALID);
        assert_non_null(strstr(shoal_errmsg(), "uid 65534"));
        assert_int_equal(fchown(fd, 0, (gid_t)-1), 0);
    }
    close(fd);
    assert_int_equal(comm_shm_open(&r, a, 8192, w.nonce), SHOAL_OK);
    comm_shm_close(&r);
    /* A leftover of our identity is replaced on create, and swept; another identity's is not. */
    comm_shm_seg_t again;
    assert_int_equal(comm_shm_create(&again, a, 4096), SHOAL_OK);
    comm_shm_sweep(id);
    assert_int_equal(comm_shm_open(&r, a, 1, again.nonce), SHOAL_ERR_IO);
    assert_int_equal(comm_shm_open(&r, b, 4096, w2.nonce), SHOAL_OK);
    comm_shm_close(&r);
    comm_shm_unlink(&w2);
    assert_int_equal(comm_shm_open(&r, b, 1, w2.nonce), SHOAL_ERR_IO);
    assert_int_equal(comm_shm_create(&r, "/no/slash", 4096), SHOAL_ERR_INVALID);
    again.linked = false; /* swept already */
    comm_shm_close(&again);
    w.linked = false;
    comm_shm_close(&w);
    comm_shm_close(&w2);
    assert_null(w2.base);
}

/* Shm on in every rank (a failed test may have left ct_no_shm_mask set). */
static int s_shm_on(void **state)
{
    (void)state;
    ct_no_shm_mask = 0;
    return 0;
}

int main(void)
{
    static int s_nranks[] = {2, 3, 4};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_shm_vs_sockets, &s_nranks[0]),
        cmocka_unit_test_prestate(test_shm_vs_sockets, &s_nranks[1]),
        cmocka_unit_test_prestate(test_shm_vs_sockets, &s_nranks[2]),
        cmocka_unit_test(test_shm_mismatch),
        cmocka_unit_test_setup(test_shm_dead_peer, s_shm_on),
        cmocka_unit_test_setup(test_shm_abort, s_shm_on),
        cmocka_unit_test(test_segments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
