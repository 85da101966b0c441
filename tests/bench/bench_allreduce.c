/* bench_allreduce: all-reduce bandwidth of the ZeroMQ comm backend, 2 and 3 forked ranks over TCP
 * loopback, 1/16/64 MiB, against a plain memcpy of the same bytes measured in the same run.
 * Run: build/bin/bench_allreduce [chunk_bytes]   (label bench: not part of the default ctest)
 * algbw = bytes / time; busbw = algbw * 2 (n-1) / n (as nccl-tests): the bytes each rank moves.
 * For scale, a 2-rank broadcast of the same bytes gives the one-way stream rate of the transport.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "comm.h"
#include "log.h"

#define MAX_RANKS 3
#define NSIZES 3
#define EP_LEN 128

static const size_t s_sizes[NSIZES] = {1u << 20, 16u << 20, 64u << 20};
static const int s_iters[NSIZES] = {30, 6, 3};

static int s_io(int fd, void *buf, size_t n, int writing)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t k = writing ? write(fd, p, n) : read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Seconds per all-reduce (then per broadcast) on this rank for each size; negative on error or
 * wrong result. */
static void s_rank(int rank, int nranks, int up, int down, size_t chunk)
{
    comm_listener_t *l = NULL;
    if (comm_listener_new("tcp://127.0.0.1:0", &l) != SHOAL_OK)
        _exit(2);
    char ep[EP_LEN] = {0}, eps[MAX_RANKS][EP_LEN];
    snprintf(ep, sizeof ep, "%s", comm_listener_endpoint(l));
    if (s_io(up, ep, sizeof ep, 1) || s_io(down, eps, sizeof eps[0] * (size_t)nranks, 0))
        _exit(2);
    const char *ptrs[MAX_RANKS];
    for (int r = 0; r < nranks; r++)
        ptrs[r] = eps[r];
    comm_config_t cfg = {.rank = rank,
                         .nranks = nranks,
                         .endpoints = ptrs,
                         .generation = 1,
                         .timeout_ms = 30000,
                         .chunk_bytes = chunk};
    comm_t *c = NULL;
    if (comm_new(l, &cfg, &c) != SHOAL_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, shoal_errmsg());
        _exit(2);
    }
    double secs[2 * NSIZES];
    uint64_t step = 0;
    for (int s = 0; s < NSIZES; s++) {
        size_t n = s_sizes[s] / 4;
        float *buf = malloc(s_sizes[s]);
        /* Small integers: every order of summation gives the exact same, checkable result. */
        for (size_t i = 0; i < n; i++)
            buf[i] = (float)(rank + 1);
        if (comm_allreduce_sum_f32(c, buf, n, ++step) != SHOAL_OK) /* warm-up */
            goto fail;
        if (comm_barrier(c, ++step) != SHOAL_OK)
            goto fail;
        double t0 = clock_mono_s();
        for (int it = 0; it < s_iters[s]; it++) {
            if (comm_allreduce_sum_f32(c, buf, n, ++step) != SHOAL_OK)
                goto fail;
        }
        secs[s] = (clock_mono_s() - t0) / s_iters[s];
        /* After 1 + iters reductions of (r+1) values: sum * nranks^iters. */
        float want = (float)(nranks * (nranks + 1) / 2);
        for (int it = 0; it < s_iters[s]; it++)
            want *= (float)nranks;
        for (size_t i = 0; i < n; i += 4093)
            if (buf[i] != want)
                secs[s] = -1;
        if (comm_barrier(c, ++step) != SHOAL_OK)
            goto fail;
        t0 = clock_mono_s();
        for (int it = 0; it < s_iters[s]; it++) {
            if (comm_broadcast(c, buf, s_sizes[s], 0, ++step) != SHOAL_OK)
                goto fail;
        }
        secs[NSIZES + s] = (clock_mono_s() - t0) / s_iters[s];
        free(buf);
    }
    s_io(up, secs, sizeof secs, 1);
    comm_destroy(&c);
    comm_listener_destroy(&l);
    _exit(0);
fail:
    fprintf(stderr, "rank %d: %s\n", rank, shoal_errmsg());
    _exit(1);
}

static int s_group(int nranks, size_t chunk, double secs[2 * NSIZES])
{
    int up[MAX_RANKS][2], down[MAX_RANKS][2];
    pid_t pid[MAX_RANKS];
    char eps[MAX_RANKS][EP_LEN];
    for (int r = 0; r < nranks; r++) {
        if (pipe(up[r]) || pipe(down[r]))
            return -1;
        pid[r] = fork();
        if (pid[r] == 0)
            s_rank(r, nranks, up[r][1], down[r][0], chunk);
        close(up[r][1]);
        close(down[r][0]);
    }
    int rc = 0;
    for (int r = 0; r < nranks; r++)
        rc |= s_io(up[r][0], eps[r], EP_LEN, 0);
    for (int r = 0; r < nranks && !rc; r++)
        rc |= s_io(down[r][1], eps, sizeof eps[0] * (size_t)nranks, 1);
    for (int s = 0; s < 2 * NSIZES; s++)
        secs[s] = 0;
    for (int r = 0; r < nranks; r++) {
        double mine[2 * NSIZES];
        if (rc || s_io(up[r][0], mine, sizeof mine, 0)) {
            rc = -1;
            continue;
        }
        for (int s = 0; s < 2 * NSIZES; s++) {
            if (mine[s] < 0)
                rc = -1;
            if (mine[s] > secs[s])
                secs[s] = mine[s]; /* the op is done when the slowest rank has it */
        }
    }
    for (int r = 0; r < nranks; r++) {
        int st;
        close(up[r][0]);
        close(down[r][1]);
        waitpid(pid[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = -1;
    }
    return rc;
}

/* Best of several memcpy runs of `bytes` between two pre-touched buffers, in bytes/s. */
static double s_memcpy_bw(size_t bytes)
{
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 1e30;
    int reps = bytes <= (1u << 20) ? 200 : 10;
    for (int k = 0; k < 5; k++) {
        double t0 = clock_mono_s();
        for (int i = 0; i < reps; i++) {
            memcpy(b, a, bytes);
            __asm__ __volatile__("" : : "r"(b) : "memory");
        }
        double t = (clock_mono_s() - t0) / reps;
        if (t < best)
            best = t;
    }
    free(a);
    free(b);
    return (double)bytes / best;
}

int main(int argc, char **argv)
{
    log_set_level(LOG_LVL_WARN);
    size_t chunk = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
    double mbw[NSIZES];
    for (int s = 0; s < NSIZES; s++)
        mbw[s] = s_memcpy_bw(s_sizes[s]);
    printf("# ZeroMQ comm all-reduce, TCP loopback, chunk %zu bytes; %ld CPUs online\n",
           chunk ? chunk : (size_t)COMM_CHUNK_DEFAULT, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%5s %8s %10s %12s %12s %12s %10s\n", "ranks", "size", "time/op", "algbw", "busbw",
           "memcpy", "algbw/mcpy");
    int status = 0;
    for (int nranks = 2; nranks <= 3; nranks++) {
        double secs[2 * NSIZES];
        if (s_group(nranks, chunk, secs) != 0) {
            fprintf(stderr, "bench_allreduce: %d ranks failed\n", nranks);
            status = 1;
            continue;
        }
        for (int s = 0; s < NSIZES; s++) {
            double alg = (double)s_sizes[s] / secs[s];
            double bus = alg * 2.0 * (nranks - 1) / nranks;
            printf("%5d %5zu MiB %8.2f ms %7.3f GB/s %7.3f GB/s %7.2f GB/s %10.4f\n", nranks,
                   s_sizes[s] >> 20, secs[s] * 1e3, alg / 1e9, bus / 1e9, mbw[s] / 1e9,
                   alg / mbw[s]);
        }
        if (nranks == 2)
            for (int s = 0; s < NSIZES; s++)
                printf("#  2-rank broadcast %2zu MiB (one-way stream): %.2f ms, %.3f GB/s\n",
                       s_sizes[s] >> 20, secs[NSIZES + s] * 1e3,
                       (double)s_sizes[s] / secs[NSIZES + s] / 1e9);
    }
    return status;
}
