/* bench_allreduce: bandwidth of the ZeroMQ comm backend (all-reduce, broadcast, alltoallv,
 * send/recv), 2 and 4 forked ranks over TCP loopback, over the same-host ipc socket with shared
 * memory off ("ipc"), and with the same-host shared-memory path on ("shm": all-reduce and
 * broadcast go through it; alltoallv and send/recv still use the ipc socket), 1/16/64 MiB, against
 * a plain memcpy of the same bytes measured in the same run.
 * Run: build/bin/bench_allreduce [chunk_bytes [vias [ranks]]]   e.g. `bench_allreduce 0 shm,ipc 2`
 * (vias: a comma list of tcp, ipc, shm, curve (tcp with CURVE keys); ranks: 2 or 4; default
 * tcp,ipc,shm; label bench: not part of the default ctest).
 * `bench_allreduce --curve`: tcp and curve in one run, and CURVE's all-reduce bandwidth as a
 * fraction of plaintext TCP's per size and rank count.
 * algbw = bytes / time; busbw = algbw * 2 (n-1) / n (as nccl-tests): the bytes each rank moves.
 * For scale, a 2-rank broadcast of the same bytes gives the one-way stream rate of the transport.
 *
 * Over a real link instead of loopback: SHOAL_BENCH_NETNS="ns0,ns1,..." puts rank r's process
 * into network namespace nsR (/run/netns, `ip netns add`) and SHOAL_BENCH_HOSTS="ip0,ip1,..."
 * binds it on ipR. tests/bench/bench_curve_link.sh sets that up: two namespaces joined by a veth
 * pair shaped with tc to a given rate.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* setns */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "comm.h"
#include "log.h"
#include "zsec.h"

#define MAX_RANKS 4
#define NSIZES 3
#define NOPS 4 /* all-reduce, broadcast, alltoallv, send/recv */
#define EP_LEN 128

static const size_t s_sizes[NSIZES] = {1u << 20, 16u << 20, 64u << 20};
static const int s_iters[NSIZES] = {30, 6, 3};
static const char *const s_ops[NOPS] = {"allreduce", "broadcast", "alltoallv", "send/recv"};
enum { VIA_TCP, VIA_IPC, VIA_SHM, VIA_CURVE, NVIAS };
static const char *const s_vias[NVIAS] = {"tcp", "ipc", "shm", "curve"};
/* VIA_CURVE: every rank's key pair, made before the ranks fork */
static zsec_keys_t s_keys[MAX_RANKS];

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

/* Seconds per op of `size` bytes on comm c, iters times (after one warm-up); negative on a wrong
 * result. op: 0 all-reduce, 1 broadcast from 0, 2 alltoallv of size/nranks per block, 3 rank 0
 * streams messages to rank 1 (which acknowledges the last). */
static double s_time_op(comm_t *c, int op, unsigned char *buf, unsigned char *out, size_t size,
                        int iters, uint64_t *step)
{
    int rank = comm_rank(c), R = comm_nranks(c);
    size_t n = size / 4, blk = size / (size_t)R;
    size_t bytes[MAX_RANKS], offs[MAX_RANKS];
    for (int j = 0; j < R; j++) {
        bytes[j] = blk;
        offs[j] = blk * (size_t)j;
    }
    double t0 = 0, secs = 0, fill = 0;
    for (int it = -1; it < iters; it++) {
        if (it == 0) {
            if (comm_barrier(c, ++*step) != SHOAL_OK)
                return -2;
            t0 = clock_mono_s();
        }
        shoal_err_t rc = SHOAL_OK;
        switch (op) {
        case 0:
            /* Small integers: every order of summation gives the same, checkable result. Every
             * rank fills at the same op, so the fill is taken out of the time. */
            if (it == iters - 1) {
                double f0 = clock_mono_s();
                for (size_t i = 0; i < n; i++)
                    ((float *)buf)[i] = (float)(rank + 1);
                fill = clock_mono_s() - f0;
            }
            rc = comm_allreduce_sum_f32(c, (float *)buf, n, ++*step);
            break;
        case 1:
            rc = comm_broadcast(c, buf, size, 0, ++*step);
            break;
        case 2:
            rc = comm_alltoallv(c, buf, bytes, offs, out, bytes, offs, ++*step);
            break;
        default:
            ++*step;
            if (rank == 0)
                rc = comm_send(c, 1, buf, size, *step);
            else if (rank == 1)
                rc = comm_recv(c, 0, out, size, *step);
            if (rc == SHOAL_OK && it == iters - 1 && rank < 2)
                rc = rank ? comm_send(c, 0, out, 1, *step) : comm_recv(c, 1, out, 1, *step);
        }
        if (rc != SHOAL_OK)
            return -2;
    }
    secs = (clock_mono_s() - t0 - fill) / iters;
    if (op == 0)
        for (size_t i = 0; i < n; i += 4093)
            if (((float *)buf)[i] != (float)(R * (R + 1) / 2))
                secs = -1;
    return secs;
}

/* Seconds per op and size on this rank (secs[op * NSIZES + s]); negative on error or wrong
 * result. */
/* Field `i` of the comma list in environment variable `name` into buf; 0 when there is none. */
static int s_env_field(const char *name, int i, char *buf, size_t cap)
{
    const char *v = getenv(name);
    for (; v && *v && i > 0; i--) {
        v = strchr(v, ',');
        v = v ? v + 1 : NULL;
    }
    if (!v || !*v)
        return 0;
    size_t n = strcspn(v, ",");
    if (n == 0 || n >= cap)
        return 0;
    memcpy(buf, v, n);
    buf[n] = 0;
    return 1;
}

/* Rank `rank`'s bind endpoint: its namespace (SHOAL_BENCH_NETNS) entered, its address
 * (SHOAL_BENCH_HOSTS, default 127.0.0.1). */
static void s_rank_net(int rank, char *bind, size_t cap)
{
    char ns[64], path[128], host[64] = "127.0.0.1";
    if (s_env_field("SHOAL_BENCH_NETNS", rank, ns, sizeof ns)) {
        snprintf(path, sizeof path, "/run/netns/%s", ns);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            fprintf(stderr, "rank %d: network namespace %s: %s\n", rank, path, strerror(errno));
            _exit(2);
        }
        close(fd);
    }
    (void)s_env_field("SHOAL_BENCH_HOSTS", rank, host, sizeof host);
    snprintf(bind, cap, "tcp://%s:0", host);
}

static void s_rank(int rank, int nranks, int up, int down, size_t chunk, int via)
{
    comm_listener_t *l = NULL;
    char bind[96];
    s_rank_net(rank, bind, sizeof bind);
    comm_listener_opts_t o = {
        .bind_endpoint = bind, .no_ipc = via == VIA_TCP || via == VIA_CURVE,
        .no_shm = via != VIA_SHM, .keys = via == VIA_CURVE ? &s_keys[rank] : NULL};
    if (comm_listener_new_opts(&o, &l) != SHOAL_OK)
        _exit(2);
    char ep[EP_LEN] = {0}, eps[MAX_RANKS][EP_LEN];
    snprintf(ep, sizeof ep, "%s", comm_listener_endpoint(l));
    if (s_io(up, ep, sizeof ep, 1) || s_io(down, eps, sizeof eps[0] * (size_t)nranks, 0))
        _exit(2);
    const char *ptrs[MAX_RANKS], *pubs[MAX_RANKS];
    for (int r = 0; r < nranks; r++) {
        ptrs[r] = eps[r];
        pubs[r] = s_keys[r].public_key;
    }
    if (via == VIA_CURVE && comm_listener_peer_keys(l, ptrs, pubs, nranks) != SHOAL_OK)
        _exit(2);
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
    double secs[NOPS * NSIZES];
    uint64_t step = 0;
    for (int s = 0; s < NSIZES; s++) {
        unsigned char *buf = malloc(s_sizes[s]), *out = malloc(s_sizes[s]);
        memset(buf, 1, s_sizes[s]);
        memset(out, 2, s_sizes[s]);
        for (int op = 0; op < NOPS; op++) {
            secs[op * NSIZES + s] = s_time_op(c, op, buf, out, s_sizes[s], s_iters[s], &step);
            if (secs[op * NSIZES + s] < -1.5)
                goto fail;
        }
        free(buf);
        free(out);
    }
    s_io(up, secs, sizeof secs, 1);
    comm_destroy(&c);
    comm_listener_destroy(&l);
    _exit(0);
fail:
    fprintf(stderr, "rank %d: %s\n", rank, shoal_errmsg());
    _exit(1);
}

static int s_group(int nranks, size_t chunk, int via, double secs[NOPS * NSIZES])
{
    int up[MAX_RANKS][2], down[MAX_RANKS][2];
    pid_t pid[MAX_RANKS];
    char eps[MAX_RANKS][EP_LEN];
    for (int r = 0; r < nranks && via == VIA_CURVE; r++)
        if (zsec_keys_generate(&s_keys[r]) != SHOAL_OK)
            return -1;
    for (int r = 0; r < nranks; r++) {
        if (pipe(up[r]) || pipe(down[r]))
            return -1;
        pid[r] = fork();
        if (pid[r] == 0)
            s_rank(r, nranks, up[r][1], down[r][0], chunk, via);
        close(up[r][1]);
        close(down[r][0]);
    }
    int rc = 0;
    for (int r = 0; r < nranks; r++)
        rc |= s_io(up[r][0], eps[r], EP_LEN, 0);
    for (int r = 0; r < nranks && !rc; r++)
        rc |= s_io(down[r][1], eps, sizeof eps[0] * (size_t)nranks, 1);
    for (int s = 0; s < NOPS * NSIZES; s++)
        secs[s] = 0;
    for (int r = 0; r < nranks; r++) {
        double mine[NOPS * NSIZES];
        if (rc || s_io(up[r][0], mine, sizeof mine, 0)) {
            rc = -1;
            continue;
        }
        for (int s = 0; s < NOPS * NSIZES; s++) {
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
    const int curve = argc > 1 && strcmp(argv[argc - 1], "--curve") == 0;
    if (curve)
        argc--;
    size_t chunk = argc > 1 ? strtoul(argv[1], NULL, 0) : 0;
    const char *vias = curve ? "tcp,curve" : argc > 2 ? argv[2] : "tcp,ipc,shm";
    double ar_bw[NVIAS][2][NSIZES] = {{{0}}}; /* all-reduce algbw by via, ranks 2/4, size */
    int only_ranks = argc > 3 ? atoi(argv[3]) : 0;
    double mbw[NSIZES];
    for (int s = 0; s < NSIZES; s++)
        mbw[s] = s_memcpy_bw(s_sizes[s]);
    if (getenv("SHOAL_BENCH_NETNS"))
        printf("# ranks in network namespaces %s at %s\n", getenv("SHOAL_BENCH_NETNS"),
               getenv("SHOAL_BENCH_HOSTS") ? getenv("SHOAL_BENCH_HOSTS") : "127.0.0.1");
    printf("# ZeroMQ comm, loopback (shm: same-host shared memory from %zu bytes), chunk %zu bytes; %ld CPUs online; algbw = bytes / time "
           "(alltoallv: bytes sent per rank; send/recv: one-way stream)\n",
           (size_t)COMM_SHM_MIN_BYTES, chunk ? chunk : (size_t)COMM_CHUNK_DEFAULT, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%4s %5s %-10s %8s %10s %12s %12s %12s %10s\n", "via", "ranks", "op", "size",
           "time/op", "algbw", "busbw", "memcpy", "algbw/mcpy");
    int status = 0;
    for (int via = 0; via < NVIAS; via++) {
        if (!strstr(vias, s_vias[via]))
            continue;
        for (int nranks = 2; nranks <= 4; nranks += 2) {
            double secs[NOPS * NSIZES];
            if (only_ranks && nranks != only_ranks)
                continue;
            if (s_group(nranks, chunk, via, secs) != 0) {
                fprintf(stderr, "bench_allreduce: %d ranks over %s failed\n", nranks,
                        s_vias[via]);
                status = 1;
                continue;
            }
            for (int op = 0; op < NOPS; op++) {
                for (int s = 0; s < NSIZES; s++) {
                    double t = secs[op * NSIZES + s], alg = (double)s_sizes[s] / t;
                    double bus = op == 0 ? alg * 2.0 * (nranks - 1) / nranks : alg;
                    if (op == 0)
                        ar_bw[via][nranks / 2 - 1][s] = alg;
                    printf("%4s %5d %-10s %4zu MiB %7.2f ms %7.3f GB/s %7.3f GB/s %7.2f GB/s "
                           "%10.4f\n",
                           s_vias[via], nranks, s_ops[op], s_sizes[s] >> 20, t * 1e3,
                           alg / 1e9, bus / 1e9, mbw[s] / 1e9, alg / mbw[s]);
                }
            }
        }
    }
    for (int k = 0; curve && k < 2; k++)
        for (int s = 0; s < NSIZES; s++)
            if (ar_bw[VIA_TCP][k][s] > 0 && ar_bw[VIA_CURVE][k][s] > 0)
                printf("curve/tcp all-reduce, %d ranks, %4zu MiB: %.2f (target >= 0.5)\n",
                       2 * (k + 1), s_sizes[s] >> 20,
                       ar_bw[VIA_CURVE][k][s] / ar_bw[VIA_TCP][k][s]);
    return status;
}
