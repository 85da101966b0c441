/* test_gpu_parity_xsum: the CUDA twin of the exact gradient sum (xsum_vec_cuda_*, kernels/xsum.cu)
 * against xsum.c, bitwise: windows, int64 counters and fp32 results after the deposits of every
 * rank, after the align to the ranks' maximum windows, and after the int64 sum (the NCCL
 * all-reduce, done here on the host), on fresh random gradients (tests/kernels/xsum_cases.h: the
 * whole float range, subnormals, zeros, empty tensors, raises by one and by several bins, inf and
 * NaN); then results of counters set directly (ties of both roundings, subnormal and infinite
 * results). Exits 77 (skip) when no CUDA device is usable. `--bench`: deposit and result of 16M
 * elements, CPU vs GPU. The seed is fresh each run (printed; SHOAL_TEST_SEED replays it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_testutil.h"
#include "kt_util.h"
#include "xsum.h"
#include "xsum_cases.h"

static int s_bench;

typedef struct {
    xsum_vec_cuda_t x;
    float *g, *out;
    int64_t *want;
} cuda_twin_t;

static void *s_make(const int64_t *offsets, int nt)
{
    cuda_twin_t *c = calloc(1, sizeof *c);
    if (!c)
        exit(1);
    SK(xsum_vec_cuda_init(&c->x, offsets, nt));
    const size_t n = (size_t)offsets[nt] + 1;
    CK(cudaMalloc((void **)&c->g, n * sizeof(float)));
    CK(cudaMalloc((void **)&c->out, n * sizeof(float)));
    CK(cudaMalloc((void **)&c->want, ((size_t)nt + 1) * sizeof(int64_t)));
    return c;
}

static void s_drop(void *v)
{
    cuda_twin_t *c = v;
    CK(cudaDeviceSynchronize());
    xsum_vec_cuda_fini(&c->x);
    CK(cudaFree(c->g));
    CK(cudaFree(c->out));
    CK(cudaFree(c->want));
    free(c);
}

static void s_upload(cuda_twin_t *c, const float *g)
{
    CK(cudaMemcpy(c->g, g, sizeof(float) * (size_t)c->x.n, cudaMemcpyHostToDevice));
}

static void s_deposit(void *v, const float *g)
{
    cuda_twin_t *c = v;
    s_upload(c, g);
    SK(xsum_vec_cuda_deposit(&c->x, c->g, 0));
}

static void s_deposit_tensors(void *v, const float *g, int t0, int t1)
{
    cuda_twin_t *c = v;
    s_upload(c, g);
    SK(xsum_vec_cuda_deposit_tensors(&c->x, c->g, t0, t1, 0));
}

static void s_align(void *v, const int64_t *top, int t0, int t1)
{
    cuda_twin_t *c = v;
    CK(cudaMemcpy(c->want, top, sizeof(int64_t) * (size_t)c->x.n_tensors, cudaMemcpyHostToDevice));
    SK(xsum_vec_cuda_align(&c->x, c->want, t0, t1, 0));
}

static void s_result(void *v, float *out, int t0, int t1)
{
    cuda_twin_t *c = v;
    const int64_t lo = c->x.offsets[t0], hi = c->x.offsets[t1];
    SK(xsum_vec_cuda_result(&c->x, c->out, t0, t1, 0));
    CK(cudaMemcpy(out + lo, c->out + lo, sizeof(float) * (size_t)(hi - lo),
                  cudaMemcpyDeviceToHost));
}

static void s_get(void *v, int64_t *top, int64_t *bins)
{
    cuda_twin_t *c = v;
    CK(cudaMemcpy(top, c->x.top, sizeof(int64_t) * (size_t)c->x.n_tensors, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(bins, c->x.bins, sizeof(int64_t) * 2 * (size_t)c->x.n, cudaMemcpyDeviceToHost));
}

static void s_set(void *v, const int64_t *top, const int64_t *bins)
{
    cuda_twin_t *c = v;
    CK(cudaMemcpy(c->x.top, top, sizeof(int64_t) * (size_t)c->x.n_tensors, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(c->x.bins, bins, sizeof(int64_t) * 2 * (size_t)c->x.n, cudaMemcpyHostToDevice));
}

static const xsum_twin_ops_t s_cuda_ops = {"cuda",  s_make,   s_drop, s_deposit, s_deposit_tensors,
                                           s_align, s_result, s_get,  s_set};

/* Refusals: a full vector and a tensor range outside it. */
static int s_check_refusals(void)
{
    const int64_t off[3] = {0, 5, 9};
    xsum_vec_cuda_t x;
    SK(xsum_vec_cuda_init(&x, off, 2));
    int bad = 0;
    x.deposits = XSUM_MAX_DEPOSITS;
    if (xsum_vec_cuda_deposit(&x, NULL, 0) != SHOAL_ERR_STATE) {
        fprintf(stderr, "  a deposit past XSUM_MAX_DEPOSITS was not refused\n");
        bad++;
    }
    if (xsum_vec_cuda_result(&x, NULL, 1, 3, 0) != SHOAL_ERR_INVALID) {
        fprintf(stderr, "  a result of tensors [1, 3) of 2 was not refused\n");
        bad++;
    }
    xsum_vec_cuda_fini(&x);
    return bad;
}

static void s_bench_sizes(kt_rng_t *r)
{
    const int64_t n = 16 << 20, off[3] = {0, n / 2, n};
    float *g = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)n);
    kt_fill(r, g, (size_t)n, -1, 1);
    xsum_vec_t x;
    if (!g || !out || xsum_vec_init(&x, off, 2) != 0)
        exit(1);
    cuda_twin_t *c = s_make(off, 2);
    s_upload(c, g);
    BENCH("xsum deposit 16M", 5, xsum_vec_deposit_tensors(&x, g, 0, 2),
          SK(xsum_vec_cuda_deposit_tensors(&c->x, c->g, 0, 2, 0)));
    BENCH("xsum result 16M", 5, xsum_vec_result(&x, out, 0, 2),
          SK(xsum_vec_cuda_result(&c->x, c->out, 0, 2, 0)));
    s_drop(c);
    xsum_vec_fini(&x);
    free(g);
    free(out);
}

int main(int argc, char **argv)
{
    const int start = gpu_test_start("test_gpu_parity_xsum", argc, argv, &s_bench);
    if (start != 0)
        return start;
    kt_rng_t r = {kt_seed("gpu_parity_xsum", (uint64_t)time(NULL))};
    int bad = xsum_twin_check(&s_cuda_ops, &r, 8);
    printf("  deposits, align, int64 sum, result (8 trials, 1-4 ranks): %s\n",
           bad ? "MISMATCH" : "bitwise equal");
    const int bad_results = xsum_twin_check_results(&s_cuda_ops, &r);
    printf("  results of set counters (ties, subnormal, inf, NaN, empty): %s\n",
           bad_results ? "MISMATCH" : "bitwise equal");
    const int bad_refusals = s_check_refusals();
    if (s_bench)
        s_bench_sizes(&r);
    bad += bad_results + bad_refusals;
    printf("test_gpu_parity_xsum: %s (%d mismatches)\n", bad ? "FAIL" : "PASS", bad);
    return bad ? 1 : 0;
}
