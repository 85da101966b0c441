/* test_gpu_parity_moe: the CUDA twins of ffn, attention, router and moe against their CPU kernels
 * on the same random inputs, llm.c style (first mismatches printed, at most 10 per output).
 * Exits 77 (skip) without a usable CUDA device; `--bench` also times CPU vs GPU.
 * Run: ctest -L gpu --output-on-failure   (or tests/gpu/run.sh on a GPU machine)
 *
 * Tolerances, |gpu − cpu| <= rtol·max|cpu| + eps·|cpu| per output:
 *  - bitwise (rtol 0, eps 0): selected experts, pair_of_row, offsets, counts_acc, the gathered
 *    xs, router gates forward given the same affinities (the same IEEE ops in the same order),
 *    and the GPU against itself on a second run (no atomics anywhere).
 *  - GEMM outputs (1e-5, 1e-4): fp32 sums of K <= 1024 products differ between cuBLAS and
 *    OpenBLAS by ~2^-24·√K·max ≈ 1e-6 of the largest output, so this is a 10× margin; TF32
 *    (10-bit mantissa, ~1e-3) or any wrong index, transpose or missing term fails it.
 *  - chains of GEMMs with softmax/sigmoid in between (attention backward, MoE backward): (5e-5,
 *    1e-3); the router's gate backward given the same inputs: (1e-6, 1e-6).
 * Accumulating outputs (`_acc`) start from random values and are compared as the added part
 * (result − start), so an overwrite instead of an accumulate fails and the tolerance follows
 * the gradient's own scale. MoE inputs are redrawn for tokens whose s + b values (or group
 * scores) lie within 2e-5 of each other, so that float rounding of the affinities cannot flip a
 * selection; the router's selection itself is tested bitwise on deliberately tied values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "ffn.h"
#include "gpu_testutil.h"
#include "moe.h"
#include "rope.h"
#include "router.h"

static uint64_t s_rng = 0x5eed2027ull;
static int s_bench;
static cublasHandle_t s_blas;

static double s_uniform(double lo, double hi)
{ /* splitmix64 */
    uint64_t z = (s_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static void s_fill(float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)s_uniform(lo, hi);
}

static float *s_rand(size_t n, double lo, double hi)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    s_fill(x, n, lo, hi);
    return x;
}

static void *s_dev(const void *host, size_t bytes)
{
    void *d = NULL;
    CK(cudaMalloc(&d, bytes ? bytes : 1));
    if (host && bytes)
        CK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static void *s_host_bytes(const void *dev, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 1);
    CK(cudaDeviceSynchronize());
    if (bytes)
        CK(cudaMemcpy(h, dev, bytes, cudaMemcpyDeviceToHost));
    return h;
}

static float *s_host(const float *dev, size_t n)
{
    return s_host_bytes(dev, n * sizeof(float));
}

/* llm.c validate_result with the absolute part scaled by the reference's largest magnitude (or by
 * `floor` when that is larger: for an output that is rounding noise around an exact 0). */
static int s_validate_floor(const char *what, const float *gpu, const float *cpu, size_t n,
                            double rtol, double eps, double floor)
{
    double mx = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        mx = fabs((double)cpu[i]) > mx ? fabs((double)cpu[i]) : mx;
    const double tol = rtol * (mx > floor ? mx : floor);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)gpu[i] - (double)cpu[i]);
        double lim = tol + fabs((double)cpu[i]) * eps;
        if (diff > worst)
            worst = diff;
        if (!(diff <= lim) || (isnan(gpu[i]) != isnan(cpu[i]))) {
            if (bad < 10)
                printf("  MISMATCH %s[%zu]: cpu %.9g gpu %.9g\n", what, i, (double)cpu[i],
                       (double)gpu[i]);
            bad++;
        }
    }
    printf("  %-34s n=%-8zu max|ref| %-9.3g max|diff| %-9.3g %s\n", what, n, mx, worst,
           bad ? "FAIL" : "ok");
    return bad;
}

static int s_validate(const char *what, const float *gpu, const float *cpu, size_t n, double rtol,
                      double eps)
{
    return s_validate_floor(what, gpu, cpu, n, rtol, eps, 0);
}

/* The part added to an accumulator: acc − start, for both sides. */
static int s_validate_acc(const char *what, const float *gpu, const float *cpu, const float *start,
                          size_t n, double rtol, double eps, double floor)
{
    float *g = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        g[i] = gpu[i] - start[i];
        c[i] = cpu[i] - start[i];
    }
    int bad = s_validate_floor(what, g, c, n, rtol, eps, floor);
    free(g), free(c);
    return bad;
}

static int s_same(const char *what, const void *gpu, const void *cpu, size_t n, size_t elem)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp((const char *)gpu + i * elem, (const char *)cpu + i * elem, elem) != 0) {
            if (bad < 10) {
                long long gv = 0, cv = 0;
                if (elem == 4) {
                    int32_t a, b;
                    memcpy(&a, (const char *)gpu + i * 4, 4);
                    memcpy(&b, (const char *)cpu + i * 4, 4);
                    gv = a, cv = b;
                } else {
                    int64_t a, b;
                    memcpy(&a, (const char *)gpu + i * 8, 8);
                    memcpy(&b, (const char *)cpu + i * 8, 8);
                    gv = a, cv = b;
                }
                printf("  MISMATCH %s[%zu]: cpu %lld gpu %lld (bits)\n", what, i, cv, gv);
            }
            bad++;
        }
    }
    printf("  %-34s n=%-8zu (bitwise) %s\n", what, n, bad ? "FAIL" : "ok");
    return bad;
}

/* ---------------------------------------------------------------------------------------- ffn */

static int test_ffn(int M, int d, int f)
{
    printf("ffn M=%d d=%d f=%d\n", M, d, f);
    const size_t nx = (size_t)M * d, ngu = (size_t)2 * f * d, nwd = (size_t)d * f;
    const size_t nh = (size_t)M * 2 * f, na = (size_t)M * f;
    const double wx = 1.0 / sqrt(d), wf = 1.0 / sqrt(f);
    float *x = s_rand(nx, -1, 1), *wgu = s_rand(ngu, -wx, wx), *wd = s_rand(nwd, -wf, wf);
    float *y0 = s_rand(nx, -1, 1), *dy = s_rand(nx, -1, 1);
    float *dx0 = s_rand(nx, -1, 1), *dwgu0 = s_rand(ngu, -1, 1), *dwd0 = s_rand(nwd, -1, 1);
    float *gu = malloc(nh * 4 + 4), *a = malloc(na * 4 + 4), *y = malloc(nx * 4 + 4);
    float *dgu = malloc(nh * 4 + 4), *da = malloc(na * 4 + 4);
    float *dx = malloc(nx * 4 + 4), *dwgu = malloc(ngu * 4), *dwd = malloc(nwd * 4);
    float *x_d = s_dev(x, nx * 4), *wgu_d = s_dev(wgu, ngu * 4), *wd_d = s_dev(wd, nwd * 4);
    float *y_d = s_dev(y0, nx * 4), *dy_d = s_dev(dy, nx * 4), *gu_d = s_dev(NULL, nh * 4);
    float *a_d = s_dev(NULL, na * 4), *dgu_d = s_dev(NULL, nh * 4), *da_d = s_dev(NULL, na * 4);
    float *dx_d = s_dev(dx0, nx * 4), *dwgu_d = s_dev(dwgu0, ngu * 4);
    float *dwd_d = s_dev(dwd0, nwd * 4);
    int bad = 0;
    float *h;

    /* beta 1: y accumulates onto its start */
    memcpy(y, y0, nx * 4);
    ffn_forward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, y, 1.0f);
    SK(ffn_forward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, y_d, 1.0f, 0));
    h = s_host(gu_d, nh);
    bad += s_validate("ffn_forward gu", h, gu, nh, 1e-5, 1e-4);
    free(h);
    h = s_host(a_d, na);
    bad += s_validate("ffn_forward a", h, a, na, 1e-5, 1e-4);
    free(h);
    h = s_host(y_d, nx);
    bad += s_validate_acc("ffn_forward y (beta 1)", h, y, y0, nx, 1e-5, 1e-4, 0);
    free(h);
    /* beta 0 overwrites whatever y held */
    ffn_forward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, y, 0.0f);
    SK(ffn_forward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, y_d, 0.0f, 0));
    h = s_host(y_d, nx);
    bad += s_validate("ffn_forward y (beta 0)", h, y, nx, 1e-5, 1e-4);
    free(h);

    /* backward from the CPU's saved gu, a so only the backward is compared */
    CK(cudaMemcpy(gu_d, gu, nh * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(a_d, a, na * 4, cudaMemcpyHostToDevice));
    memcpy(dx, dx0, nx * 4);
    memcpy(dwgu, dwgu0, ngu * 4);
    memcpy(dwd, dwd0, nwd * 4);
    ffn_backward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, dy, dgu, da, dx, 1.0f, dwgu, dwd);
    SK(ffn_backward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, dy_d, dgu_d, da_d, dx_d,
                         1.0f, dwgu_d, dwd_d, 0));
    h = s_host(dgu_d, nh);
    bad += s_validate("ffn_backward dgu", h, dgu, nh, 1e-5, 1e-4);
    free(h);
    h = s_host(dx_d, nx);
    bad += s_validate_acc("ffn_backward dx_acc (beta 1)", h, dx, dx0, nx, 1e-5, 1e-4, 0);
    free(h);
    h = s_host(dwgu_d, ngu);
    bad += s_validate_acc("ffn_backward dw_gu_acc", h, dwgu, dwgu0, ngu, 1e-5, 1e-4, 0);
    free(h);
    h = s_host(dwd_d, nwd);
    bad += s_validate_acc("ffn_backward dw_d_acc", h, dwd, dwd0, nwd, 1e-5, 1e-4, 0);
    free(h);
    /* dx_beta 0 overwrites dx */
    ffn_backward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, dy, dgu, da, dx, 0.0f, dwgu, dwd);
    SK(ffn_backward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, dy_d, dgu_d, da_d, dx_d,
                         0.0f, dwgu_d, dwd_d, 0));
    h = s_host(dx_d, nx);
    bad += s_validate("ffn_backward dx (beta 0)", h, dx, nx, 1e-5, 1e-4);
    free(h);

    BENCH("ffn_forward", 20, ffn_forward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, y, 0.0f),
          SK(ffn_forward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, y_d, 0.0f, 0)));
    BENCH("ffn_backward", 20,
          ffn_backward(KGEMM_FP32, x, M, d, f, wgu, wd, gu, a, dy, dgu, da, dx, 0.0f, dwgu, dwd),
          SK(ffn_backward_cuda(s_blas, x_d, M, d, f, wgu_d, wd_d, gu_d, a_d, dy_d, dgu_d, da_d,
                               dx_d, 0.0f, dwgu_d, dwd_d, 0)));
    free(x), free(wgu), free(wd), free(y0), free(dy), free(dx0), free(dwgu0), free(dwd0);
    free(gu), free(a), free(y), free(dgu), free(da), free(dx), free(dwgu), free(dwd);
    float *devs[] = {x_d, wgu_d, wd_d, y_d, dy_d, gu_d, a_d, dgu_d, da_d, dx_d, dwgu_d, dwd_d};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++)
        CK(cudaFree(devs[i]));
    return bad;
}

/* M = 0 is a no-op on both sides: nothing written, no launch of an empty grid. */
static int test_ffn_empty(void)
{
    printf("ffn M=0\n");
    float start = 42.0f;
    float *y_d = s_dev(&start, 4), *w_d = s_dev(NULL, 64 * 4);
    SK(ffn_forward_cuda(s_blas, w_d, 0, 4, 4, w_d, w_d, w_d, w_d, y_d, 0.0f, 0));
    SK(ffn_backward_cuda(s_blas, w_d, 0, 4, 4, w_d, w_d, w_d, w_d, w_d, w_d, w_d, y_d, 0.0f, y_d,
                         y_d, 0));
    float *h = s_host(y_d, 1);
    int bad = s_validate("ffn M=0 leaves y alone", h, &start, 1, 0, 0);
    free(h);
    CK(cudaFree(y_d));
    CK(cudaFree(w_d));
    return bad;
}

/* ---------------------------------------------------------------------------------- attention */

static int test_attention(int B, int T, int d, int H)
{
    const int dh = d / H, M = B * T;
    printf("attention B=%d T=%d d=%d H=%d\n", B, T, d, H);
    const attention_shape_t sh = {B, T, d, H, KGEMM_FP32};
    const size_t na = (size_t)M * d, nq = (size_t)M * 3 * d, np = (size_t)B * H * T * T;
    const size_t nwq = (size_t)3 * d * d, nwo = (size_t)d * d, nt = (size_t)T * dh / 2;
    const double w = 1.0 / sqrt(d);
    float *ct = malloc(nt * 4), *st = malloc(nt * 4);
    rope_tables(T, dh, 10000.0, ct, st);
    float *a = s_rand(na, -1, 1), *wq = s_rand(nwq, -w, w), *wo = s_rand(nwo, -w, w);
    float *dout = s_rand(na, -1, 1), *dwq0 = s_rand(nwq, -1, 1), *dwo0 = s_rand(nwo, -1, 1);
    float *qkv = malloc(nq * 4), *p = malloc(np * 4), *o = malloc(na * 4), *out = malloc(na * 4);
    float *dobuf = malloc(na * 4), *dqkv = malloc(nq * 4), *dp = malloc((size_t)T * T * 4);
    float *da = malloc(na * 4), *dwq = malloc(nwq * 4), *dwo = malloc(nwo * 4);
    float *ct_d = s_dev(ct, nt * 4), *st_d = s_dev(st, nt * 4), *a_d = s_dev(a, na * 4);
    float *wq_d = s_dev(wq, nwq * 4), *wo_d = s_dev(wo, nwo * 4), *dout_d = s_dev(dout, na * 4);
    float *qkv_d = s_dev(NULL, nq * 4), *p_d = s_dev(NULL, np * 4), *o_d = s_dev(NULL, na * 4);
    float *out_d = s_dev(NULL, na * 4), *dobuf_d = s_dev(NULL, na * 4);
    float *dqkv_d = s_dev(NULL, nq * 4), *dp_d = s_dev(NULL, np * 4), *da_d = s_dev(NULL, na * 4);
    float *dwq_d = s_dev(dwq0, nwq * 4), *dwo_d = s_dev(dwo0, nwo * 4);
    int bad = 0;
    float *h;
    /* p starts as garbage on the device: the kernel must write every entry, zeros included */
    CK(cudaMemset(p_d, 0xff, np * 4));

    attention_forward(&sh, a, wq, wo, ct, st, qkv, p, o, out);
    SK(attention_forward_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, p_d, o_d, out_d, 0));
    h = s_host(qkv_d, nq);
    bad += s_validate("attention_forward qkv (roped)", h, qkv, nq, 1e-5, 1e-4);
    free(h);
    h = s_host(p_d, np);
    int zeros_bad = 0;
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < T; i++)
            for (int j = i + 1; j < T; j++)
                zeros_bad += h[((size_t)bh * T + i) * T + j] != 0.0f;
    printf("  %-34s %s\n", "attention_forward p upper = 0", zeros_bad ? "FAIL" : "ok");
    bad += zeros_bad;
    bad += s_validate("attention_forward p", h, p, np, 1e-5, 1e-4);
    free(h);
    h = s_host(o_d, na);
    bad += s_validate("attention_forward o", h, o, na, 1e-5, 1e-4);
    free(h);
    h = s_host(out_d, na);
    bad += s_validate("attention_forward out", h, out, na, 1e-5, 1e-4);
    free(h);

    /* backward from the CPU's saved qkv, p, o */
    CK(cudaMemcpy(qkv_d, qkv, nq * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(p_d, p, np * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(o_d, o, na * 4, cudaMemcpyHostToDevice));
    memcpy(dwq, dwq0, nwq * 4);
    memcpy(dwo, dwo0, nwo * 4);
    CK(cudaMemset(da_d, 0xff, na * 4)); /* overwritten, not accumulated */
    attention_backward(&sh, a, wq, wo, ct, st, qkv, p, o, dout, dobuf, dqkv, dp, da, dwq, dwo);
    SK(attention_backward_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, p_d, o_d, dout_d,
                               dobuf_d, dqkv_d, dp_d, da_d, dwq_d, dwo_d, 0));
    h = s_host(dqkv_d, nq);
    bad += s_validate("attention_backward dqkv", h, dqkv, nq, 5e-5, 1e-3);
    free(h);
    h = s_host(da_d, na);
    bad += s_validate("attention_backward da", h, da, na, 5e-5, 1e-3);
    free(h);
    h = s_host(dwq_d, nwq);
    bad += s_validate_acc("attention_backward dw_qkv_acc", h, dwq, dwq0, nwq, 5e-5, 1e-3, 0);
    free(h);
    h = s_host(dwo_d, nwo);
    bad += s_validate_acc("attention_backward dw_o_acc", h, dwo, dwo0, nwo, 1e-5, 1e-4, 0);
    free(h);

    /* the fused core: forward from a, backward from its own saved qkv, lse, o */
    {
        float *lse_d = s_dev(NULL, (size_t)B * H * T * 4), *drow_d = s_dev(NULL, (size_t)B * H * T * 4);
        CK(cudaMemset(o_d, 0xff, na * 4));
        SK(attention_forward_fused_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, lse_d,
                                        o_d, out_d, 0));
        h = s_host(o_d, na);
        bad += s_validate("attention fused forward o", h, o, na, 2e-5, 2e-4);
        free(h);
        h = s_host(out_d, na);
        bad += s_validate("attention fused forward out", h, out, na, 2e-5, 2e-4);
        free(h);
        CK(cudaMemcpy(dwq_d, dwq0, nwq * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dwo_d, dwo0, nwo * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(dqkv_d, 0xff, nq * 4)); /* every entry written */
        CK(cudaMemset(da_d, 0xff, na * 4));
        SK(attention_backward_fused_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, lse_d,
                                         o_d, dout_d, dobuf_d, dqkv_d, drow_d, da_d, dwq_d, dwo_d,
                                         0));
        float *dqkv1 = s_host(dqkv_d, nq);
        bad += s_validate("attention fused backward dqkv", dqkv1, dqkv, nq, 5e-5, 1e-3);
        h = s_host(da_d, na);
        bad += s_validate("attention fused backward da", h, da, na, 5e-5, 1e-3);
        free(h);
        h = s_host(dwq_d, nwq);
        bad += s_validate_acc("attention fused dw_qkv_acc", h, dwq, dwq0, nwq, 5e-5, 1e-3, 0);
        free(h);
        h = s_host(dwo_d, nwo);
        bad += s_validate_acc("attention fused dw_o_acc", h, dwo, dwo0, nwo, 2e-5, 2e-4, 0);
        free(h);
        /* deterministic: the same inputs give the same bits */
        SK(attention_backward_fused_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, lse_d,
                                         o_d, dout_d, dobuf_d, dqkv_d, drow_d, da_d, dwq_d, dwo_d,
                                         0));
        h = s_host(dqkv_d, nq);
        const int same = memcmp(h, dqkv1, nq * 4) == 0;
        printf("  %-34s %s\n", "attention fused backward bitwise", same ? "ok" : "FAIL");
        bad += !same;
        free(h);
        free(dqkv1);
        BENCH("attention fused fwd (gpu only)", 10, (void)0,
              SK(attention_forward_fused_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d,
                                              lse_d, o_d, out_d, 0)));
        BENCH("attention fused bwd (gpu only)", 10, (void)0,
              SK(attention_backward_fused_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d,
                                               lse_d, o_d, dout_d, dobuf_d, dqkv_d, drow_d, da_d,
                                               dwq_d, dwo_d, 0)));
        CK(cudaFree(lse_d));
        CK(cudaFree(drow_d));
    }

    BENCH("attention_forward", 10, attention_forward(&sh, a, wq, wo, ct, st, qkv, p, o, out),
          SK(attention_forward_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, p_d, o_d,
                                    out_d, 0)));
    BENCH(
        "attention_backward", 10,
        attention_backward(&sh, a, wq, wo, ct, st, qkv, p, o, dout, dobuf, dqkv, dp, da, dwq, dwo),
        SK(attention_backward_cuda(s_blas, &sh, a_d, wq_d, wo_d, ct_d, st_d, qkv_d, p_d, o_d,
                                   dout_d, dobuf_d, dqkv_d, dp_d, da_d, dwq_d, dwo_d, 0)));
    free(ct), free(st), free(a), free(wq), free(wo), free(dout), free(dwq0), free(dwo0);
    free(qkv), free(p), free(o), free(out), free(dobuf), free(dqkv), free(dp), free(da);
    free(dwq), free(dwo);
    float *devs[] = {ct_d, st_d,  a_d,     wq_d,   wo_d, dout_d, qkv_d, p_d,
                     o_d,  out_d, dobuf_d, dqkv_d, dp_d, da_d,   dwq_d, dwo_d};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++)
        CK(cudaFree(devs[i]));
    return bad;
}

/* ------------------------------------------------------------------------------------- router */

/* `ties`: s and bias on a coarse grid (multiples of 1/8 and 1/16), so equal s + b values and equal
 * group scores are everywhere and the lower-index rule decides. Selection runs on the same s on
 * both sides (the grid itself, or the CPU's sigmoid of the random logits). */
static int test_router(int M, int N, int K, int G, int TG, float rsf, int ties)
{
    printf("router M=%d N=%d K=%d n_group=%d topk_group=%d%s\n", M, N, K, G, TG,
           ties ? " (tied values)" : "");
    const router_config_t c = {N, K, G, TG, rsf};
    const size_t ns = (size_t)M * N, nk = (size_t)M * K;
    float *logit = s_rand(ns, -4, 4), *s = malloc(ns * 4), *bias = s_rand((size_t)N, -0.1, 0.1);
    if (ties) {
        for (size_t i = 0; i < ns; i++)
            logit[i] = (float)(1 + (int)s_uniform(0, 8)) / 8.0f; /* > 0: gate sums stay > 0 */
        for (int i = 0; i < N; i++)
            bias[i] = (float)((int)s_uniform(0, 3) - 1) / 16.0f;
    }
    int32_t *idx = malloc(nk * 4);
    float *gates = malloc(nk * 4), *dg = s_rand(nk, -1, 1), *dl = malloc(ns * 4);
    float *s_d = s_dev(logit, ns * 4), *bias_d = s_dev(bias, (size_t)N * 4);
    int32_t *idx_d = s_dev(NULL, nk * 4);
    float *gates_d = s_dev(NULL, nk * 4), *dg_d = s_dev(dg, nk * 4);
    float *dl_d = s_dev(NULL, ns * 4);
    int bad = 0;
    float *h;

    memcpy(s, logit, ns * 4);
    router_sigmoid(s, (int64_t)ns);
    SK(router_sigmoid_cuda(s_d, (int64_t)ns, 0));
    h = s_host(s_d, ns);
    bad += s_validate("router_sigmoid", h, s, ns, 1e-7, 1e-6);
    free(h);
    /* selection on identical affinities: the tied grid itself, or the CPU's sigmoid */
    if (ties)
        memcpy(s, logit, ns * 4);
    CK(cudaMemcpy(s_d, s, ns * 4, cudaMemcpyHostToDevice));
    router_select(&c, s, bias, M, idx);
    SK(router_select_cuda(&c, s_d, bias_d, M, idx_d, 0));
    int32_t *hi = s_host_bytes(idx_d, nk * 4);
    bad += s_same("router_select idx", hi, idx, nk, 4);
    free(hi);
    router_gates_forward(&c, s, idx, M, gates);
    CK(cudaMemcpy(idx_d, idx, nk * 4, cudaMemcpyHostToDevice));
    SK(router_gates_forward_cuda(&c, s_d, idx_d, M, gates_d, 0));
    h = s_host(gates_d, nk);
    bad += s_validate("router_gates_forward (bitwise)", h, gates, nk, 0, 0);
    free(h);
    CK(cudaMemset(dl_d, 0xff, ns * 4)); /* unselected entries must come back 0 */
    router_gates_backward(&c, s, idx, dg, M, dl);
    SK(router_gates_backward_cuda(&c, s_d, idx_d, dg_d, M, dl_d, 0));
    h = s_host(dl_d, ns);
    bad += s_validate("router_gates_backward", h, dl, ns, 1e-6, 1e-6);
    free(h);

    BENCH("router_select", 20, router_select(&c, s, bias, M, idx),
          SK(router_select_cuda(&c, s_d, bias_d, M, idx_d, 0)));
    free(logit), free(s), free(bias), free(idx), free(gates), free(dg), free(dl);
    CK(cudaFree(s_d));
    CK(cudaFree(bias_d));
    CK(cudaFree(idx_d));
    CK(cudaFree(gates_d));
    CK(cudaFree(dg_d));
    CK(cudaFree(dl_d));
    return bad;
}

/* A config the CPU would mis-handle is refused, not run. */
static int test_router_bad_config(void)
{
    const router_config_t c = {8, 5, 2, 1, 1.0f}; /* K 5 > 4 eligible experts */
    shoal_err_t rc = router_select_cuda(&c, NULL, NULL, 4, NULL, 0);
    int bad = rc != SHOAL_ERR_INVALID;
    printf("router bad config (K > eligible) refused: %s\n", bad ? "FAIL" : "ok");
    return bad;
}

/* ---------------------------------------------------------------------------------------- moe */

/* All of a layer's parameters (or gradients) in one buffer, in this order:
 * router [N, d] | bias [N] | expert_gu N×[2fe, d] | expert_d N×[d, fe] | shared_gu | shared_d. */
typedef struct {
    size_t router, bias, egu, ed, sgu, sd, total; /* offsets (floats) */
} moe_layout_t;

static moe_layout_t s_layout(const moe_config_t *c)
{
    const size_t N = (size_t)c->router.N, d = (size_t)c->d, fe = (size_t)c->fe, fs = (size_t)c->fs;
    moe_layout_t l;
    l.router = 0;
    l.bias = N * d;
    l.egu = l.bias + N;
    l.ed = l.egu + N * 2 * fe * d;
    l.sgu = l.ed + N * d * fe;
    l.sd = l.sgu + 2 * fs * d;
    l.total = l.sd + d * fs;
    return l;
}

/* Points w into buf (host or device) by the layout; ptrs holds the 2N expert pointers. */
static void s_weights(moe_weights_t *w, float **ptrs, float *buf, const moe_config_t *c,
                      const moe_layout_t *l)
{
    const int N = c->router.N;
    const size_t d = (size_t)c->d, fe = (size_t)c->fe;
    w->router = buf + l->router;
    w->bias = buf + l->bias;
    w->expert_gu = ptrs;
    w->expert_d = ptrs + N;
    for (int e = 0; e < N; e++) {
        ptrs[e] = buf + l->egu + (size_t)e * 2 * fe * d;
        ptrs[N + e] = buf + l->ed + (size_t)e * d * fe;
    }
    w->shared_gu = c->fs ? buf + l->sgu : NULL;
    w->shared_d = c->fs ? buf + l->sd : NULL;
}

/* Smallest gap between distinct selection keys of token m: all s + b, and the group scores. */
static double s_margin(const moe_config_t *c, const float *s, const float *bias, int m)
{
    const int N = c->router.N, G = c->router.n_group, per = N / G;
    float sb[1024], gs[1024];
    double gap = INFINITY;
    for (int i = 0; i < N; i++)
        sb[i] = s[(size_t)m * N + i] + bias[i];
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            gap = fmin(gap, fabs((double)sb[i] - sb[j]));
    if (G > 1) {
        for (int g = 0; g < G; g++) {
            float a = -INFINITY, b = -INFINITY;
            for (int i = 0; i < per; i++) {
                float v = sb[g * per + i];
                if (v > a)
                    b = a, a = v;
                else if (v > b)
                    b = v;
            }
            gs[g] = a + b;
        }
        for (int g = 0; g < G; g++)
            for (int h = g + 1; h < G; h++)
                gap = fmin(gap, fabs((double)gs[g] - gs[h]));
    }
    return gap;
}

/* What one GPU forward + backward produced, on the host. */
typedef struct {
    float *s, *gates, *xs, *gu, *a, *ys, *y, *du, *grad;
    int32_t *idx, *por;
    int64_t *off, *counts;
} moe_result_t;

static void s_result_free(moe_result_t *r)
{
    free(r->s), free(r->gates), free(r->xs), free(r->gu), free(r->a), free(r->ys), free(r->y);
    free(r->du), free(r->grad), free(r->idx), free(r->por), free(r->off), free(r->counts);
}

static moe_result_t s_moe_gpu(const moe_config_t *c, const moe_weights_t *w_d, const float *u_d,
                              int M, const float *dy_d, const float *grad0, const int64_t *counts0,
                              const moe_layout_t *l, int reps)
{
    const int N = c->router.N, K = c->router.K, d = c->d, fe = c->fe;
    const size_t P = (size_t)M * K;
    moe_saved_cuda_t sv;
    moe_scratch_t sc;
    SK(moe_saved_alloc_cuda(&sv, c, M));
    SK(moe_scratch_alloc_cuda(&sc, c, M));
    float *gbuf_d = s_dev(grad0, l->total * 4), *gptrs[2 * 1024];
    moe_weights_t g_d;
    s_weights(&g_d, gptrs, gbuf_d, c, l);
    float *y_d = s_dev(NULL, (size_t)M * d * 4), *du_d = s_dev(NULL, (size_t)M * d * 4);
    int64_t *counts_d = s_dev(counts0, (size_t)N * 8);
    CK(cudaMemset(du_d, 0xff, (size_t)M * d * 4)); /* overwritten, not accumulated */
    SK(moe_forward_cuda(s_blas, c, w_d, u_d, M, &sv, y_d, counts_d, 0));
    SK(moe_backward_cuda(s_blas, c, w_d, u_d, &sv, dy_d, &sc, du_d, &g_d, 0));
    moe_result_t r;
    r.s = s_host(sv.dev.s, (size_t)M * N);
    r.gates = s_host(sv.dev.gates, P);
    r.xs = s_host(sv.dev.xs, P * d);
    r.gu = s_host(sv.dev.gu, P * 2 * fe);
    r.a = s_host(sv.dev.a, P * fe);
    r.ys = s_host(sv.dev.ys, P * d);
    r.y = s_host(y_d, (size_t)M * d);
    r.du = s_host(du_d, (size_t)M * d);
    r.grad = s_host(gbuf_d, l->total);
    r.idx = s_host_bytes(sv.dev.idx, P * 4);
    r.por = s_host_bytes(sv.dev.pair_of_row, P * 4);
    r.off = s_host_bytes(sv.dev.offsets, (size_t)(N + 1) * 8);
    r.counts = s_host_bytes(counts_d, (size_t)N * 8);
    for (int i = 0; i < reps; i++) { /* --bench: time forward + backward */
        SK(moe_forward_cuda(s_blas, c, w_d, u_d, M, &sv, y_d, counts_d, 0));
        SK(moe_backward_cuda(s_blas, c, w_d, u_d, &sv, dy_d, &sc, du_d, &g_d, 0));
    }
    moe_saved_free_cuda(&sv);
    moe_saved_free_cuda(&sv); /* idempotent */
    moe_scratch_free_cuda(&sc);
    CK(cudaFree(gbuf_d));
    CK(cudaFree(y_d));
    CK(cudaFree(du_d));
    CK(cudaFree(counts_d));
    return r;
}

static int test_moe(int M, int d, int fe, int ns, int N, int K, int G, int TG)
{
    moe_config_t c = {d, fe, ns * fe, {N, K, G, TG, 2.5f}, KGEMM_FP32};
    printf("moe M=%d d=%d fe=%d ns=%d N=%d K=%d n_group=%d topk_group=%d\n", M, d, fe, ns, N, K, G,
           TG);
    const moe_layout_t l = s_layout(&c);
    const size_t nu = (size_t)M * d, P = (size_t)M * K;
    const double wd = 1.0 / sqrt(d), wf = 1.0 / sqrt(fe), wfs = ns ? 1.0 / sqrt(c.fs) : 0;
    float *wbuf = malloc(l.total * 4), *wptrs[2 * 1024];
    s_fill(wbuf + l.router, (size_t)N * d, -wd, wd);
    s_fill(wbuf + l.bias, (size_t)N, -0.05, 0.05);
    s_fill(wbuf + l.egu, l.ed - l.egu, -wd, wd);
    s_fill(wbuf + l.ed, l.sgu - l.ed, -wf, wf);
    s_fill(wbuf + l.sgu, l.sd - l.sgu, -wd, wd);
    s_fill(wbuf + l.sd, l.total - l.sd, -wfs, wfs);
    moe_weights_t w;
    s_weights(&w, wptrs, wbuf, &c, &l);
    float *u = s_rand(nu, -1, 1), *dy = s_rand(nu, -1, 1), *y = malloc(nu * 4);
    float *du = malloc(nu * 4), *grad0 = s_rand(l.total, -0.01, 0.01);
    float *grad = malloc(l.total * 4), *gptrs[2 * 1024];
    int64_t counts0[1024], counts[1024];
    for (int e = 0; e < N; e++)
        counts0[e] = counts[e] = e * 3;
    moe_saved_t sv;
    moe_scratch_t sc;
    if (moe_saved_alloc(&sv, &c, M) || moe_scratch_alloc(&sc, &c, M)) {
        fprintf(stderr, "test_moe: out of memory\n");
        exit(1);
    }
    /* redraw the inputs of tokens whose selection keys nearly tie (see the file header) */
    int redrawn = 0;
    for (int round = 0;; round++) {
        moe_forward(&c, &w, u, M, &sv, y, counts);
        int again = 0;
        for (int m = 0; m < M; m++)
            if (s_margin(&c, sv.s, w.bias, m) < 2e-5) {
                s_fill(u + (size_t)m * d, (size_t)d, -1, 1);
                again++;
            }
        redrawn += again;
        if (!again)
            break;
        if (round == 50) {
            fprintf(stderr, "test_moe: could not draw well-separated router inputs\n");
            exit(1);
        }
    }
    memcpy(counts, counts0, sizeof counts);
    moe_forward(&c, &w, u, M, &sv, y, counts);
    memcpy(grad, grad0, l.total * 4);
    moe_weights_t g;
    s_weights(&g, gptrs, grad, &c, &l);
    moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
    printf("  (%d token inputs redrawn for selection margins)\n", redrawn);

    float *wbuf_d = s_dev(wbuf, l.total * 4), *wptrs_d[2 * 1024];
    moe_weights_t w_d;
    s_weights(&w_d, wptrs_d, wbuf_d, &c, &l);
    float *u_d = s_dev(u, nu * 4), *dy_d = s_dev(dy, nu * 4);
    moe_result_t r = s_moe_gpu(&c, &w_d, u_d, M, dy_d, grad0, counts0, &l, 0);
    moe_result_t r2 = s_moe_gpu(&c, &w_d, u_d, M, dy_d, grad0, counts0, &l, 0);
    int bad = 0;
    bad += s_same("moe idx", r.idx, sv.idx, P, 4);
    bad += s_same("moe pair_of_row", r.por, sv.pair_of_row, P, 4);
    bad += s_same("moe offsets", r.off, sv.offsets, (size_t)N + 1, 8);
    bad += s_same("moe counts_acc", r.counts, counts, (size_t)N, 8);
    bad += s_validate("moe s", r.s, sv.s, (size_t)M * N, 1e-6, 1e-5);
    bad += s_validate("moe gates", r.gates, sv.gates, P, 1e-6, 1e-5);
    bad += s_validate("moe xs (bitwise)", r.xs, sv.xs, P * d, 0, 0);
    bad += s_validate("moe gu", r.gu, sv.gu, P * 2 * fe, 1e-5, 1e-4);
    bad += s_validate("moe a", r.a, sv.a, P * fe, 1e-5, 1e-4);
    bad += s_validate("moe ys", r.ys, sv.ys, P * d, 1e-5, 1e-4);
    bad += s_validate("moe y", r.y, y, nu, 1e-5, 1e-4);
    bad += s_validate("moe du", r.du, du, nu, 5e-5, 1e-3);
    static const char *names[] = {"moe d router",          NULL,
                                  "moe d expert_gu (all)", "moe d expert_d (all)",
                                  "moe d shared_gu",       "moe d shared_d"};
    const size_t bounds[] = {l.router, l.bias, l.egu, l.ed, l.sgu, l.sd, l.total};
    /* With K = 1 the gate is the constant rsf, so the router gradient is exactly 0 and both sides
     * hold rounding noise (dg − dg·s·(1/s)); its tolerance then takes the scale of du. */
    double du_max = 0;
    for (size_t i = 0; i < nu; i++)
        du_max = fabs((double)du[i]) > du_max ? fabs((double)du[i]) : du_max;
    for (int t = 0; t < 6; t++)
        if (names[t] && bounds[t + 1] > bounds[t])
            bad += s_validate_acc(names[t], r.grad + bounds[t], grad + bounds[t], grad0 + bounds[t],
                                  bounds[t + 1] - bounds[t], 5e-5, 1e-3,
                                  t == 0 && K == 1 ? du_max : 0);
    /* the GPU against itself: every float of the second run bitwise the first's */
    int det = memcmp(r.y, r2.y, nu * 4) != 0 || memcmp(r.du, r2.du, nu * 4) != 0 ||
              memcmp(r.grad, r2.grad, l.total * 4) != 0 || memcmp(r.ys, r2.ys, P * d * 4) != 0 ||
              memcmp(r.counts, r2.counts, (size_t)N * 8) != 0;
    printf("  %-34s %s\n", "moe GPU run-to-run bitwise", det ? "FAIL" : "ok");
    bad += det;
    s_result_free(&r2);
    if (s_bench) {
        const int reps = 10;
        double t0 = clock_mono_s();
        for (int i = 0; i < reps; i++) {
            moe_forward(&c, &w, u, M, &sv, y, counts);
            moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
        }
        double cpu_ms = (clock_mono_s() - t0) * 1e3 / reps;
        moe_result_t rb = s_moe_gpu(&c, &w_d, u_d, M, dy_d, grad0, counts0, &l, 1); /* warm */
        s_result_free(&rb);
        CK(cudaDeviceSynchronize());
        t0 = clock_mono_s();
        rb = s_moe_gpu(&c, &w_d, u_d, M, dy_d, grad0, counts0, &l, reps);
        CK(cudaDeviceSynchronize());
        s_result_free(&rb);
        /* includes one alloc/free + downloads; the forward's offsets sync is real anyway */
        double gpu_ms = (clock_mono_s() - t0) * 1e3 / reps;
        printf("  BENCH %-30s cpu %9.4f ms  gpu %9.4f ms  speedup %7.1fx (gpu upper bound)\n",
               "moe forward+backward", cpu_ms, gpu_ms, cpu_ms / gpu_ms);
    }
    s_result_free(&r);
    moe_saved_free(&sv);
    moe_scratch_free(&sc);
    free(wbuf), free(u), free(dy), free(y), free(du), free(grad0), free(grad);
    CK(cudaFree(wbuf_d));
    CK(cudaFree(u_d));
    CK(cudaFree(dy_d));
    return bad;
}

int main(int argc, char **argv)
{
    int start = gpu_test_start("test_gpu_parity_moe", argc, argv, &s_bench);
    if (start != 0)
        return start;
    if (cublasCreate(&s_blas) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "test_gpu_parity_moe: cublasCreate failed\n");
        return 1;
    }
    int bad = 0;
    /* the brief's tiny shapes (d 128, fe 128, T 128, B 2, N 8, K 2), then odd sizes for tails */
    bad += test_ffn(256, 128, 128);
    bad += test_ffn(37, 70, 50);
    bad += test_ffn(1024, 128, 384);
    bad += test_ffn_empty();
    bad += test_attention(2, 128, 128, 4);
    bad += test_attention(3, 70, 48, 3);
    bad += test_attention(1, 1, 8, 2);
    bad += test_attention(1, 33, 256, 2); /* dh 128: the fused kernel's widest head */
    bad += test_attention(6, 24, 32, 2);  /* B > H: the GEMMs batch the sequences, loop the heads */
    bad += test_router(1024, 8, 2, 1, 1, 2.5f, 0);
    bad += test_router(1024, 8, 2, 1, 1, 2.5f, 1);
    bad += test_router(1024, 8, 3, 2, 1, 1.0f, 1);
    bad += test_router(1024, 16, 4, 4, 2, 1.0f, 1);
    bad += test_router(513, 64, 6, 8, 3, 2.5f, 0);
    bad += test_router(300, 256, 8, 8, 4, 2.5f, 1);
    bad += test_router_bad_config();
    bad += test_moe(256, 128, 128, 1, 8, 2, 1, 1);
    bad += test_moe(256, 128, 128, 0, 8, 2, 1, 1);
    bad += test_moe(256, 128, 128, 1, 8, 2, 2, 1);
    bad += test_moe(256, 128, 128, 1, 8, 1, 1, 1);
    bad += test_moe(256, 128, 128, 2, 8, 3, 2, 1);
    bad += test_moe(37, 70, 50, 0, 16, 4, 4, 2);
    cublasDestroy(s_blas);
    printf("test_gpu_parity_moe: %s (%d mismatches)\n", bad ? "FAIL" : "PASS", bad);
    return bad ? 1 : 0;
}
