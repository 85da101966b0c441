/* test_comm_lib.c: the forked-rank harness of the comm tests (see test_comm_lib.h). */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "test_comm_lib.h"

/* Milliseconds with the sub-millisecond part: collectives of small buffers take less than 1 ms. */
double ct_ms(void)
{
    return clock_mono_s() * 1e3;
}

uint64_t ct_fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Input of (seed, rank, index): mantissas and exponents spread so that the order of additions
 * changes the rounded sum. */
float ct_input(uint64_t seed, int rank, size_t i)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + (uint64_t)(rank + 1) * 0xC2B2AE3D27D4EB4Full +
                 (uint64_t)i * 0x165667B19E3779F9ull;
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    static const float pow2[16] = {1.f / 64, 1.f / 32, 1.f / 16, 1.f / 8, 1.f / 4, 1.f / 2,
                                   1,        2,        4,        8,       16,      32,
                                   64,       128,      256,      512};
    float mant = (float)((x >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
    return mant * pow2[(x >> 8) & 15]; /* exact: scaling by a power of two */
}

void ct_fill(float *buf, size_t n, uint64_t seed, int rank)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = ct_input(seed, rank, i);
}

/* The documented order: ((x_0 + x_1) + x_2) + ... */
void ct_expected(float *out, size_t n, uint64_t seed, int nranks)
{
    for (size_t i = 0; i < n; i++) {
        float acc = ct_input(seed, 0, i);
        for (int r = 1; r < nranks; r++)
            acc += ct_input(seed, r, i);
        out[i] = acc;
    }
}

void ct_rec(result_t *res, int rc, int ok, uint64_t digest, double ms)
{
    if (res->nrec >= MAX_REC)
        return;
    int k = res->nrec++;
    res->rc[k] = rc;
    res->ok[k] = ok;
    res->digest[k] = digest;
    res->ms[k] = ms;
    snprintf(res->msg[k], sizeof res->msg[k], "%s", rc ? shoal_errmsg() : "");
}

/* The comm of one generation for this rank over the given ranks of the group (NULL: all). */
comm_t *ct_comm(rank_ctx_t *ctx, uint64_t gen, int timeout_ms, size_t chunk)
{
    comm_config_t cfg = {.rank = ctx->rank,
                         .nranks = ctx->nranks,
                         .endpoints = ctx->eps,
                         .generation = gen,
                         .timeout_ms = timeout_ms,
                         .chunk_bytes = chunk};
    comm_t *c = NULL;
    if (comm_new(ctx->l, &cfg, &c) != SHOAL_OK) {
        fprintf(stderr, "rank %d: comm_new: %s\n", ctx->rank, shoal_errmsg());
        _exit(3);
    }
    return c;
}

static bool s_read_all(int fd, void *buf, size_t n, double deadline_ms)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        double left = deadline_ms - ct_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t k = read(fd, p + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        got += (size_t)k;
    }
    return true;
}

static bool s_write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

unsigned ct_no_shm_mask;

static comm_t *volatile s_abort_target;

static void s_on_alarm(int sig)
{
    (void)sig;
    comm_abort(s_abort_target); /* async-signal-safe */
}

void ct_abort_on_alarm(comm_t *c, long usec)
{
    s_abort_target = c;
    struct sigaction sa = {.sa_handler = s_on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {.it_value = {.tv_sec = usec / 1000000, .tv_usec = usec % 1000000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

void *ct_abort_thread(void *arg)
{
    usleep(100 * 1000);
    comm_abort(arg);
    return NULL;
}

/* Forks nranks ranks; each binds a listener, the parent relays the endpoint list (as the
 * coordinator does), runs `before`, then collects one result per rank. got[r] tells whether rank
 * r reported (a rank killed on purpose does not); status[r] is its wait status. */
void ct_run_group(int nranks, rank_fn fn, void *arg, before_fn before, void *before_arg,
                        result_t *res, bool *got, int *status)
{
    int up[MAX_RANKS][2], down[MAX_RANKS][2];
    pid_t pid[MAX_RANKS];
    for (int r = 0; r < nranks; r++) {
        assert_int_equal(pipe(up[r]), 0);
        assert_int_equal(pipe(down[r]), 0);
    }
    fflush(stdout); /* ranks leave with exit() (so LeakSanitizer checks them): no double output */
    fflush(stderr);
    for (int r = 0; r < nranks; r++) {
        pid[r] = fork();
        assert_true(pid[r] >= 0);
        if (pid[r] == 0) {
            for (int k = 0; k < nranks; k++) {
                if (k != r) {
                    close(up[k][1]);
                    close(down[k][0]);
                }
                close(up[k][0]);
                close(down[k][1]);
            }
            rank_ctx_t ctx = {.rank = r, .nranks = nranks};
            if (ct_no_shm_mask & (1u << r))
                setenv("SHOAL_COMM_NO_SHM", "1", 1);
            if (comm_listener_new("tcp://127.0.0.1:0", &ctx.l) != SHOAL_OK) {
                fprintf(stderr, "rank %d: %s\n", r, shoal_errmsg());
                _exit(2);
            }
            char ep[EP_LEN] = {0};
            snprintf(ep, sizeof ep, "%s", comm_listener_endpoint(ctx.l));
            if (!s_write_all(up[r][1], ep, sizeof ep) ||
                !s_read_all(down[r][0], ctx.ep, sizeof ctx.ep[0] * (size_t)nranks, ct_ms() + 20000))
                _exit(2);
            for (int k = 0; k < nranks; k++)
                ctx.eps[k] = ctx.ep[k];
            result_t *out = calloc(1, sizeof *out);
            fn(&ctx, out, arg);
            out->finished = 1;
            s_write_all(up[r][1], out, sizeof *out);
            comm_listener_destroy(&ctx.l);
            free(out);
            exit(0);
        }
    }
    char eps[MAX_RANKS][EP_LEN];
    double deadline = ct_ms() + 30000;
    for (int r = 0; r < nranks; r++) {
        close(up[r][1]);
        close(down[r][0]);
        assert_true(s_read_all(up[r][0], eps[r], EP_LEN, deadline));
    }
    if (before)
        before(eps, nranks, before_arg);
    for (int r = 0; r < nranks; r++) {
        assert_true(s_write_all(down[r][1], eps, sizeof eps[0] * (size_t)nranks));
        close(down[r][1]);
    }
    for (int r = 0; r < nranks; r++) {
        memset(&res[r], 0, sizeof res[r]);
        got[r] = s_read_all(up[r][0], &res[r], sizeof res[r], deadline) && res[r].finished;
        close(up[r][0]);
    }
    for (int r = 0; r < nranks; r++) {
        if (!got[r])
            kill(pid[r], SIGKILL); /* never leave a rank behind */
        assert_int_equal(waitpid(pid[r], &status[r], 0), pid[r]);
    }
}

/* Asserts every rank reported, every record passed, and digests agree across ranks. */
void ct_check_all(const result_t *res, const bool *got, const int *status, int nranks)
{
    for (int r = 0; r < nranks; r++)
        for (int k = 0; got[r] && k < res[r].nrec; k++)
            if (res[r].rc[k] != SHOAL_OK || !res[r].ok[k])
                printf("  rank %d record %d: rc %d ok %d: %s\n", r, k, res[r].rc[k], res[r].ok[k],
                       res[r].msg[k]);
    for (int r = 0; r < nranks; r++) {
        assert_true(got[r]);
        assert_true(WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0);
        assert_int_equal(res[r].nrec, res[0].nrec);
        for (int k = 0; k < res[r].nrec; k++) {
            if (res[r].rc[k] != SHOAL_OK || !res[r].ok[k])
                fail_msg("rank %d record %d: rc %d ok %d: %s", r, k, res[r].rc[k], res[r].ok[k],
                         res[r].msg[k]);
            if (res[r].digest[k] != res[0].digest[k])
                fail_msg("rank %d record %d: digest differs from rank 0", r, k);
        }
    }
}

comm_t *ct_comm_group(rank_ctx_t *ctx, uint64_t gen, uint32_t group, const int *members,
                      int nmembers, int timeout_ms)
{
    const char *eps[MAX_RANKS];
    int me = -1;
    for (int k = 0; k < nmembers; k++) {
        eps[k] = ctx->eps[members[k]];
        if (members[k] == ctx->rank)
            me = k;
    }
    if (me < 0)
        return NULL;
    comm_config_t cfg = {.rank = me,
                         .nranks = nmembers,
                         .endpoints = eps,
                         .generation = gen,
                         .group = group,
                         .timeout_ms = timeout_ms};
    comm_t *c = NULL;
    if (comm_new(ctx->l, &cfg, &c) != SHOAL_OK) {
        fprintf(stderr, "rank %d: comm_new group %u: %s\n", ctx->rank, group, shoal_errmsg());
        _exit(3);
    }
    return c;
}

void ct_run_all(int nranks, rank_fn fn, void *arg, result_t *res)
{
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(nranks, fn, arg, NULL, NULL, res, got, status);
    ct_check_all(res, got, status, nranks);
}

void ct_run_killed(int nranks, rank_fn fn, void *arg, int killed, result_t *res)
{
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(nranks, fn, arg, NULL, NULL, res, got, status);
    assert_false(got[killed]);
    assert_true(WIFSIGNALED(status[killed]) && WTERMSIG(status[killed]) == SIGKILL);
    for (int r = 0; r < nranks; r++)
        assert_true(r == killed || got[r]);
}
