/* test_nccl_comm: the NCCL backend (worker/comm_nccl.h) with 2 ranks as 2 processes on 2 GPUs,
 * the unique id passed through a pipe (the coordinator's relay of CommId is tested in
 * tests/coordinator/test_coord_comm_id.c). Checks, each rank its own output from inputs that are
 * a function of (rank, index): all-reduce f32 and int64 bitwise against a CPU sum,
 * reduce-scatter, all-gather, broadcast, send/recv, all-to-all-v with uneven blocks, barrier;
 * then the failures: a creation nobody joins, a peer that never calls (TIMEOUT within timeout +
 * 2 s, the comm broken after), an abort from another thread, and a peer process that exits.
 * Exits 77 with "needs 2 GPUs, found N" where fewer than 2 GPUs are usable.
 * Run: build-gpu/bin/test_nccl_comm */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "clock.h"
#include "comm_nccl.h"

#define S_TIMEOUT_MS 20000
#define S_SHORT_MS 1500 /* the watchdog cases */

static int s_rank;
static int s_failures;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", s_rank, __FILE__, __LINE__, \
                    #cond);                                                                   \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            s_failures++;                                                                     \
        }                                                                                     \
    } while (0)

/* Fatal: the rest of the test depends on it. */
#define MUST(call)                                                                            \
    do {                                                                                      \
        shoal_err_t must_rc_ = (call);                                                        \
        if (must_rc_ != SHOAL_OK) {                                                           \
            fprintf(stderr, "rank %d: %s:%d: %s: %s\n", s_rank, __FILE__, __LINE__, #call,    \
                    shoal_errmsg());                                                          \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#define CUDA_MUST(call)                                                                       \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "rank %d: %s:%d: %s: %s\n", s_rank, __FILE__, __LINE__, #call,    \
                    cudaGetErrorString(e_));                                                  \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static uint64_t s_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The input of `rank` at index i of test `t`: floats of every magnitude and sign. */
static float s_f32(int t, int rank, size_t i)
{
    uint64_t h = s_mix(((uint64_t)t << 56) ^ ((uint64_t)rank << 48) ^ i);
    float m = (float)(h >> 40) / (float)(1u << 24);              /* [0, 1) */
    return (h & 1 ? -m : m) * (float)(1u << (h >> 1 & 15)) / 256; /* 2^-8 .. 2^7 */
}

static int64_t s_i64(int rank, size_t i)
{
    return (int64_t)s_mix(((uint64_t)rank << 48) ^ i ^ 0xABCDull); /* wraps when summed */
}

/* Rank 0 makes the id and writes it; rank 1 reads it. */
static void s_id(int fd, uint8_t id[COMM_NCCL_ID_BYTES])
{
    if (s_rank == 0) {
        MUST(comm_nccl_id_new(id));
        if (write(fd, id, COMM_NCCL_ID_BYTES) != COMM_NCCL_ID_BYTES) {
            perror("write id");
            exit(1);
        }
    } else {
        size_t got = 0;
        while (got < COMM_NCCL_ID_BYTES) {
            ssize_t k = read(fd, id + got, COMM_NCCL_ID_BYTES - got);
            if (k <= 0) {
                fprintf(stderr, "rank 1: the id pipe closed\n");
                exit(1);
            }
            got += (size_t)k;
        }
    }
}

static comm_nccl_t *s_comm(int fd, uint64_t gen, int timeout_ms)
{
    uint8_t id[COMM_NCCL_ID_BYTES];
    s_id(fd, id);
    comm_nccl_config_t cfg = {.rank = s_rank, .nranks = 2, .id = id, .device = s_rank,
                              .generation = gen, .group = 7, .timeout_ms = timeout_ms};
    comm_nccl_t *c = NULL;
    MUST(comm_nccl_new(&cfg, &c));
    return c;
}

static void *s_dev(const void *host, size_t bytes)
{
    void *d = NULL;
    CUDA_MUST(cudaMalloc(&d, bytes ? bytes : 1));
    if (host)
        CUDA_MUST(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    CUDA_MUST(cudaDeviceSynchronize()); /* the comm's stream does not wait for the copy */
    return d;
}

static void s_get(void *host, const void *d, size_t bytes)
{
    CUDA_MUST(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost));
}

static void s_collectives(comm_nccl_t *c)
{
    /* all-reduce f32: 2 ranks, a + b in either order is the same float */
    const size_t n = (1u << 20) + 3;
    float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want), *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        x[i] = s_f32(1, s_rank, i);
        want[i] = s_f32(1, 0, i) + s_f32(1, 1, i);
    }
    float *d = s_dev(x, n * 4);
    MUST(comm_nccl_allreduce_sum_f32(c, d, n));
    s_get(got, d, n * 4);
    CHECK(memcmp(got, want, n * 4) == 0, "all-reduce f32 differs from the CPU sum");
    cudaFree(d);

    /* all-reduce int64: exact, wrapping */
    int64_t *xi = malloc(n * 8), *wi = malloc(n * 8), *gi = malloc(n * 8);
    for (size_t i = 0; i < n; i++) {
        xi[i] = s_i64(s_rank, i);
        wi[i] = (int64_t)((uint64_t)s_i64(0, i) + (uint64_t)s_i64(1, i));
    }
    int64_t *di = s_dev(xi, n * 8);
    MUST(comm_nccl_allreduce_sum_i64(c, di, n));
    s_get(gi, di, n * 8);
    CHECK(memcmp(gi, wi, n * 8) == 0, "all-reduce int64 differs from the CPU sum");
    cudaFree(di);

    /* reduce-scatter then all-gather == all-reduce, bitwise */
    const size_t m = 2 * 300001;
    for (size_t i = 0; i < m; i++) {
        x[i] = s_f32(2, s_rank, i);
        want[i] = s_f32(2, 0, i) + s_f32(2, 1, i);
    }
    d = s_dev(x, m * 4);
    MUST(comm_nccl_reduce_scatter_sum_f32(c, d, m));
    const size_t lo = (size_t)s_rank * (m / 2);
    s_get(got + lo, d + lo, m / 2 * 4);
    CHECK(memcmp(got + lo, want + lo, m / 2 * 4) == 0, "reduce-scatter: own piece wrong");
    MUST(comm_nccl_allgather_f32(c, d, m));
    s_get(got, d, m * 4);
    CHECK(memcmp(got, want, m * 4) == 0, "all-gather after reduce-scatter != the sum");
    CHECK(comm_nccl_allgather_f32(c, d, m + 1) == SHOAL_ERR_INVALID, "odd size accepted");
    cudaFree(d);

    /* broadcast from rank 1 */
    const size_t nb = 777777;
    uint8_t *b = malloc(nb), *bw = malloc(nb);
    for (size_t i = 0; i < nb; i++) {
        b[i] = (uint8_t)s_mix(i * 2 + (size_t)s_rank);
        bw[i] = (uint8_t)s_mix(i * 2 + 1);
    }
    uint8_t *db = s_dev(b, nb);
    MUST(comm_nccl_broadcast(c, db, nb, 1));
    s_get(b, db, nb);
    CHECK(memcmp(b, bw, nb) == 0, "broadcast from rank 1 wrong");
    cudaFree(db);

    /* send/recv: both ranks exchange blocks of different sizes at once */
    const size_t mine = 100000 + (size_t)s_rank * 333, theirs = 100000 + (size_t)(1 - s_rank) * 333;
    uint8_t *sb = malloc(mine), *rb = malloc(theirs);
    for (size_t i = 0; i < mine; i++)
        sb[i] = (uint8_t)s_mix(i ^ ((uint64_t)s_rank << 40));
    uint8_t *dsb = s_dev(sb, mine), *drb = s_dev(NULL, theirs);
    MUST(comm_nccl_sendrecv(c, 1 - s_rank, dsb, mine, 1 - s_rank, drb, theirs));
    s_get(rb, drb, theirs);
    int ok = 1;
    for (size_t i = 0; i < theirs; i++)
        ok &= rb[i] == (uint8_t)s_mix(i ^ ((uint64_t)(1 - s_rank) << 40));
    CHECK(ok, "send/recv: the peer's block is wrong");
    CHECK(comm_nccl_sendrecv(c, s_rank, dsb, 1, -1, NULL, 0) == SHOAL_ERR_INVALID,
          "a send to itself accepted");
    cudaFree(dsb);
    cudaFree(drb);

    /* all-to-all-v: rank r sends 1000 (r+1) + 17 j bytes to rank j (a zero block too) */
    size_t sbytes[2], soffs[2], rbytes[2], roffs[2], stot = 0, rtot = 0;
    for (int j = 0; j < 2; j++) {
        sbytes[j] = (s_rank == 1 && j == 0) ? 0 : 1000u * (unsigned)(s_rank + 1) + 17u * (unsigned)j;
        rbytes[j] = (j == 1 && s_rank == 0) ? 0 : 1000u * (unsigned)(j + 1) + 17u * (unsigned)s_rank;
        soffs[j] = stot;
        roffs[j] = rtot + 5; /* gaps: offsets are honoured */
        stot += sbytes[j];
        rtot += rbytes[j] + 5;
    }
    uint8_t *as = malloc(stot + 1), *ar = calloc(rtot + 1, 1);
    for (int j = 0; j < 2; j++)
        for (size_t k = 0; k < sbytes[j]; k++)
            as[soffs[j] + k] = (uint8_t)s_mix(((uint64_t)s_rank << 32) ^ ((uint64_t)j << 24) ^ k);
    uint8_t *das = s_dev(as, stot), *dar = s_dev(ar, rtot);
    MUST(comm_nccl_alltoallv(c, das, sbytes, soffs, dar, rbytes, roffs));
    s_get(ar, dar, rtot);
    ok = 1;
    for (int i = 0; i < 2; i++)
        for (size_t k = 0; k < rbytes[i]; k++)
            ok &= ar[roffs[i] + k] ==
                  (uint8_t)s_mix(((uint64_t)i << 32) ^ ((uint64_t)s_rank << 24) ^ k);
    CHECK(ok, "all-to-all-v: a received block is wrong");
    cudaFree(das);
    cudaFree(dar);

    MUST(comm_nccl_barrier(c));
    free(x), free(want), free(got), free(xi), free(wi), free(gi), free(b), free(bw), free(sb);
    free(rb), free(as), free(ar);
}

static void *s_abort_later(void *arg)
{
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    comm_nccl_abort(arg);
    return NULL;
}

static void s_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int s_rank_main(int fd)
{
    CUDA_MUST(cudaSetDevice(s_rank));
    /* 1. the collectives */
    comm_nccl_t *c = s_comm(fd, 1, S_TIMEOUT_MS);
    CHECK(comm_nccl_rank(c) == s_rank && comm_nccl_nranks(c) == 2, "rank/nranks");
    s_collectives(c);
    comm_nccl_destroy(&c);
    CHECK(c == NULL, "destroy nulls the pointer");

    /* 2. a peer that never calls: rank 0 times out within timeout + 2 s, the comm is broken */
    c = s_comm(fd, 2, S_SHORT_MS);
    float *d = s_dev(NULL, 4096 * 4);
    if (s_rank == 0) {
        const int64_t t0 = clock_mono_ms();
        shoal_err_t rc = comm_nccl_allreduce_sum_f32(c, d, 4096);
        const int64_t took = clock_mono_ms() - t0;
        CHECK(rc == SHOAL_ERR_TIMEOUT, "silent peer: %d (%s)", (int)rc, shoal_errmsg());
        CHECK(strstr(shoal_errmsg(), "no progress for") &&
                  strstr(shoal_errmsg(), "group 7 gen 2"),
              "message: %s", shoal_errmsg());
        CHECK(took < S_SHORT_MS + 2000, "the timeout took %lld ms", (long long)took);
        CHECK(comm_nccl_barrier(c) == SHOAL_ERR_STATE, "a broken comm accepted an op");
    } else {
        s_sleep_ms(S_SHORT_MS + 2500); /* alive but silent until rank 0 has given up */
        comm_nccl_abort(c);            /* its own half is useless now */
    }
    comm_nccl_destroy(&c);

    /* 3. abort from another thread while rank 0 waits on a peer that never calls */
    c = s_comm(fd, 3, 60000);
    if (s_rank == 0) {
        pthread_t th;
        pthread_create(&th, NULL, s_abort_later, c);
        const int64_t t0 = clock_mono_ms();
        shoal_err_t rc = comm_nccl_allreduce_sum_f32(c, d, 4096);
        pthread_join(th, NULL);
        CHECK(rc == SHOAL_ERR_ABORTED, "abort: %d (%s)", (int)rc, shoal_errmsg());
        CHECK(clock_mono_ms() - t0 < 5000, "abort took %lld ms",
              (long long)(clock_mono_ms() - t0));
        CHECK(comm_nccl_barrier(c) == SHOAL_ERR_ABORTED, "an aborted comm accepted an op");
    } else {
        s_sleep_ms(1500);
        comm_nccl_abort(c);
    }
    comm_nccl_destroy(&c);

    /* 4. creation that nobody joins: rank 0 alone with a fresh id */
    if (s_rank == 0) {
        uint8_t id[COMM_NCCL_ID_BYTES];
        MUST(comm_nccl_id_new(id));
        comm_nccl_config_t cfg = {.rank = 0, .nranks = 2, .id = id, .device = 0,
                                  .generation = 4, .group = 7, .timeout_ms = S_SHORT_MS};
        const int64_t t0 = clock_mono_ms();
        shoal_err_t rc = comm_nccl_new(&cfg, &c);
        CHECK(rc == SHOAL_ERR_TIMEOUT, "lonely init: %d (%s)", (int)rc, shoal_errmsg());
        CHECK(strstr(shoal_errmsg(), "nccl init on group 7 gen 4"), "message: %s",
              shoal_errmsg());
        CHECK(clock_mono_ms() - t0 < S_SHORT_MS + 2000, "init timeout took %lld ms",
              (long long)(clock_mono_ms() - t0));
        CHECK(c == NULL, "a failed creation set *out");
    }

    /* 5. a peer process that exits without calling: an error (timeout or NCCL's), no hang */
    c = s_comm(fd, 5, S_SHORT_MS);
    if (s_rank == 1)
        _exit(s_failures ? 1 : 0);
    const int64_t t0 = clock_mono_ms();
    shoal_err_t rc = comm_nccl_allreduce_sum_f32(c, d, 4096);
    CHECK(rc == SHOAL_ERR_TIMEOUT || rc == SHOAL_ERR_CUDA, "dead peer: %d (%s)", (int)rc,
          shoal_errmsg());
    CHECK(clock_mono_ms() - t0 < S_SHORT_MS + 2000, "dead peer took %lld ms",
          (long long)(clock_mono_ms() - t0));
    comm_nccl_destroy(&c);
    cudaFree(d);
    return s_failures ? 1 : 0;
}

/* The GPU count, asked in a child: CUDA must not be initialised before the ranks fork. */
static int s_count_gpus(void)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess)
            n = 0;
        ssize_t w = write(fds[1], &n, sizeof n);
        _exit(w == sizeof n ? 0 : 1);
    }
    close(fds[1]);
    int n = 0;
    if (read(fds[0], &n, sizeof n) != sizeof n)
        n = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return n;
}

int main(void)
{
    int n = s_count_gpus();
    if (n < 2) {
        printf("test_nccl_comm: needs 2 GPUs, found %d: skipped\n", n);
        return 77;
    }
    char libs[96];
    comm_nccl_versions(libs, sizeof libs);
    printf("test_nccl_comm: 2 ranks on cuda:0 and cuda:1 of %d GPUs (%s)\n", n, libs);
    fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            s_rank = r;
            close(fds[r == 0 ? 0 : 1]);
            alarm(240); /* a hang is a failure, not a stuck ctest */
            _exit(s_rank_main(fds[r == 0 ? 1 : 0]));
        }
    }
    close(fds[0]);
    close(fds[1]);
    int failed = 0;
    for (int r = 0; r < 2; r++) {
        int st = 0;
        waitpid(pids[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "test_nccl_comm: rank %d %s %d\n", r,
                    WIFEXITED(st) ? "exited with" : "killed by signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            failed = 1;
        }
    }
    printf("test_nccl_comm: %s\n", failed ? "FAILED" : "passed");
    return failed;
}
