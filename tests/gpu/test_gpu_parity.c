/* test_gpu_parity: every CUDA twin against its CPU kernel on the same random inputs, llm.c style
 * (|gpu − cpu| <= tol + |cpu|·eps, first mismatches printed, at most 10). Exits 77 (skip) when
 * no CUDA device is usable. `test_gpu_parity --bench` also times each kernel CPU vs GPU.
 * Run: ctest -L gpu --output-on-failure   (or tests/gpu/run.sh on a GPU machine) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cross_entropy.h"
#include "embedding.h"
#include "gpu_testutil.h"
#include "optim.h"
#include "rmsnorm.h"
#include "rope.h"
#include "swiglu.h"

static uint64_t s_rng = 0x5eed2026ull;
static int s_bench;

static double s_uniform(double lo, double hi)
{ /* splitmix64 */
    uint64_t z = (s_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static float *s_rand(size_t n, double lo, double hi)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)s_uniform(lo, hi);
    return x;
}

static void *s_dev(const void *host, size_t bytes)
{
    void *d = NULL;
    CK(cudaMalloc(&d, bytes ? bytes : 1));
    if (host)
        CK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static float *s_host(const float *dev, size_t n)
{
    float *h = malloc(n * sizeof(float));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

/* llm.c validate_result: returns the number of mismatches (0 = pass). */
static int s_validate(const char *what, const float *gpu, const float *cpu, size_t n, double tol,
                      double eps)
{
    int bad = 0;
    double worst = 0;
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
    printf("  %-28s n=%-9zu max|diff| %.3g  %s\n", what, n, worst, bad ? "FAIL" : "ok");
    return bad;
}

static int test_embedding(int M, int V, int d)
{
    printf("embedding M=%d V=%d d=%d\n", M, V, d);
    int32_t *tok = malloc((size_t)M * 4);
    for (int m = 0; m < M; m++)
        tok[m] = (int32_t)s_uniform(0, V) % V;
    float *E = s_rand((size_t)V * d, -1, 1), *dout = s_rand((size_t)M * d, -1, 1);
    float *dE = s_rand((size_t)V * d, -1, 1), *out = malloc((size_t)M * d * 4);
    int32_t *tok_d = s_dev(tok, (size_t)M * 4);
    float *E_d = s_dev(E, (size_t)V * d * 4), *dout_d = s_dev(dout, (size_t)M * d * 4);
    float *dE_d = s_dev(dE, (size_t)V * d * 4), *out_d = s_dev(NULL, (size_t)M * d * 4);
    int bad = 0;
    embedding_forward(tok, M, E, d, out);
    SK(embedding_forward_cuda(tok_d, M, E_d, d, out_d, 0));
    float *g = s_host(out_d, (size_t)M * d);
    bad += s_validate("embedding_forward", g, out, (size_t)M * d, 0, 0);
    free(g);
    embedding_backward(tok, M, dout, d, dE);
    SK(embedding_backward_cuda(tok_d, M, dout_d, d, V, dE_d, 0));
    g = s_host(dE_d, (size_t)V * d);
    bad += s_validate("embedding_backward (bitwise)", g, dE, (size_t)V * d, 0, 0);
    free(g);
    BENCH("embedding_forward", 50, embedding_forward(tok, M, E, d, out),
          SK(embedding_forward_cuda(tok_d, M, E_d, d, out_d, 0)));
    BENCH("embedding_backward", 50, embedding_backward(tok, M, dout, d, dE),
          SK(embedding_backward_cuda(tok_d, M, dout_d, d, V, dE_d, 0)));
    free(tok), free(E), free(dout), free(dE), free(out);
    CK(cudaFree(tok_d));
    CK(cudaFree(E_d));
    CK(cudaFree(dout_d));
    CK(cudaFree(dE_d));
    CK(cudaFree(out_d));
    return bad;
}

static int test_rmsnorm(int M, int d)
{
    printf("rmsnorm M=%d d=%d\n", M, d);
    size_t n = (size_t)M * d;
    float *x = s_rand(n, -2, 2), *gw = s_rand((size_t)d, 0.5, 1.5), *dy = s_rand(n, -1, 1);
    float *y = malloc(n * 4), *rstd = malloc((size_t)M * 4);
    float *dx = s_rand(n, -1, 1), *dg = s_rand((size_t)d, -1, 1);
    float *x_d = s_dev(x, n * 4), *g_d = s_dev(gw, (size_t)d * 4), *dy_d = s_dev(dy, n * 4);
    float *y_d = s_dev(NULL, n * 4), *rstd_d = s_dev(NULL, (size_t)M * 4);
    float *dx_d = s_dev(dx, n * 4), *dg_d = s_dev(dg, (size_t)d * 4);
    int bad = 0;
    rmsnorm_forward(x, gw, M, d, 1e-6f, y, rstd);
    SK(rmsnorm_forward_cuda(x_d, g_d, M, d, 1e-6f, y_d, rstd_d, 0));
    float *h = s_host(y_d, n);
    bad += s_validate("rmsnorm_forward y", h, y, n, 1e-6, 1e-5);
    free(h);
    h = s_host(rstd_d, (size_t)M);
    bad += s_validate("rmsnorm_forward rstd", h, rstd, (size_t)M, 0, 1e-5);
    free(h);
    /* the backward uses the CPU's rstd on both sides so only the backward is compared */
    CK(cudaMemcpy(rstd_d, rstd, (size_t)M * 4, cudaMemcpyHostToDevice));
    rmsnorm_backward(x, gw, rstd, dy, M, d, dx, dg);
    SK(rmsnorm_backward_cuda(x_d, g_d, rstd_d, dy_d, M, d, dx_d, dg_d, 0));
    h = s_host(dx_d, n);
    bad += s_validate("rmsnorm_backward dx_acc", h, dx, n, 1e-5, 1e-5);
    free(h);
    h = s_host(dg_d, (size_t)d);
    bad += s_validate("rmsnorm_backward dg_acc", h, dg, (size_t)d, 1e-4, 1e-4);
    free(h);
    /* the residual add fused into the norm: x (the stream) bitwise, y and rstd as above */
    {
        float *res = s_rand(n, -1, 1), *res_d = s_dev(res, n * 4);
        CK(cudaMemcpy(x_d, x, n * 4, cudaMemcpyHostToDevice));
        rmsnorm_residual_forward(x, res, gw, M, d, 1e-6f, y, rstd);
        SK(rmsnorm_residual_forward_cuda(x_d, res_d, g_d, M, d, 1e-6f, y_d, rstd_d, 0));
        h = s_host(x_d, n);
        const int same = memcmp(h, x, n * 4) == 0;
        printf("  %-34s %s\n", "rmsnorm_residual x += res bitwise", same ? "ok" : "FAIL");
        bad += !same;
        free(h);
        h = s_host(y_d, n);
        bad += s_validate("rmsnorm_residual_forward y", h, y, n, 1e-6, 1e-5);
        free(h);
        h = s_host(rstd_d, (size_t)M);
        bad += s_validate("rmsnorm_residual_forward rstd", h, rstd, (size_t)M, 0, 1e-5);
        free(h);
        free(res);
        CK(cudaFree(res_d));
    }
    BENCH("rmsnorm_forward", 50, rmsnorm_forward(x, gw, M, d, 1e-6f, y, rstd),
          SK(rmsnorm_forward_cuda(x_d, g_d, M, d, 1e-6f, y_d, rstd_d, 0)));
    BENCH("rmsnorm_backward", 50, rmsnorm_backward(x, gw, rstd, dy, M, d, dx, dg),
          SK(rmsnorm_backward_cuda(x_d, g_d, rstd_d, dy_d, M, d, dx_d, dg_d, 0)));
    free(x), free(gw), free(dy), free(y), free(rstd), free(dx), free(dg);
    CK(cudaFree(x_d));
    CK(cudaFree(g_d));
    CK(cudaFree(dy_d));
    CK(cudaFree(y_d));
    CK(cudaFree(rstd_d));
    CK(cudaFree(dx_d));
    CK(cudaFree(dg_d));
    return bad;
}

static int test_rope(int B, int T, int H, int dh)
{
    int d = H * dh, ld = 3 * d; /* q and k inside a fused qkv row, as attention uses them */
    size_t n = (size_t)B * T * ld, nt = (size_t)T * dh / 2;
    printf("rope B=%d T=%d H=%d dh=%d (ld %d)\n", B, T, H, dh, ld);
    float *ct = malloc(nt * 4), *st = malloc(nt * 4);
    rope_tables(T, dh, 10000.0, ct, st);
    float *x = s_rand(n, -1, 1), *x_d = s_dev(x, n * 4);
    float *ct_d = s_dev(ct, nt * 4), *st_d = s_dev(st, nt * 4);
    int bad = 0;
    rope_forward(x, B, T, H, dh, ld, ct, st);
    rope_forward(x + d, B, T, H, dh, ld, ct, st);
    SK(rope_forward_cuda(x_d, B, T, H, dh, ld, ct_d, st_d, 0));
    SK(rope_forward_cuda(x_d + d, B, T, H, dh, ld, ct_d, st_d, 0));
    float *h = s_host(x_d, n);
    bad += s_validate("rope_forward (bitwise)", h, x, n, 0, 0);
    free(h);
    rope_backward(x, B, T, H, dh, ld, ct, st);
    SK(rope_backward_cuda(x_d, B, T, H, dh, ld, ct_d, st_d, 0));
    h = s_host(x_d, n);
    bad += s_validate("rope_backward (bitwise)", h, x, n, 0, 0);
    free(h);
    BENCH("rope_forward (q)", 50, rope_forward(x, B, T, H, dh, ld, ct, st),
          SK(rope_forward_cuda(x_d, B, T, H, dh, ld, ct_d, st_d, 0)));
    free(ct), free(st), free(x);
    CK(cudaFree(x_d));
    CK(cudaFree(ct_d));
    CK(cudaFree(st_d));
    return bad;
}

static int test_swiglu(int M, int f)
{
    printf("swiglu M=%d f=%d\n", M, f);
    size_t n = (size_t)M * f;
    float *gu = s_rand(2 * n, -6, 6), *da = s_rand(n, -1, 1);
    float *a = malloc(n * 4), *dgu = malloc(2 * n * 4);
    float *gu_d = s_dev(gu, 2 * n * 4), *da_d = s_dev(da, n * 4);
    float *a_d = s_dev(NULL, n * 4), *dgu_d = s_dev(NULL, 2 * n * 4);
    int bad = 0;
    swiglu_forward(gu, M, f, a);
    SK(swiglu_forward_cuda(gu_d, M, f, a_d, 0));
    float *h = s_host(a_d, n);
    bad += s_validate("swiglu_forward", h, a, n, 1e-6, 1e-5);
    free(h);
    swiglu_backward(gu, da, M, f, dgu);
    SK(swiglu_backward_cuda(gu_d, da_d, M, f, dgu_d, 0));
    h = s_host(dgu_d, 2 * n);
    bad += s_validate("swiglu_backward", h, dgu, 2 * n, 1e-6, 1e-5);
    free(h);
    BENCH("swiglu_forward", 50, swiglu_forward(gu, M, f, a),
          SK(swiglu_forward_cuda(gu_d, M, f, a_d, 0)));
    BENCH("swiglu_backward", 50, swiglu_backward(gu, da, M, f, dgu),
          SK(swiglu_backward_cuda(gu_d, da_d, M, f, dgu_d, 0)));
    free(gu), free(da), free(a), free(dgu);
    CK(cudaFree(gu_d));
    CK(cudaFree(da_d));
    CK(cudaFree(a_d));
    CK(cudaFree(dgu_d));
    return bad;
}

static int test_cross_entropy(int M, int V)
{
    printf("cross_entropy M=%d V=%d\n", M, V);
    size_t n = (size_t)M * V;
    float *z = s_rand(n, -4, 4), *dz = malloc(n * 4);
    int32_t *tgt = malloc((size_t)M * 4);
    for (int m = 0; m < M; m++)
        tgt[m] = (int32_t)s_uniform(0, V) % V;
    float *z_d = s_dev(z, n * 4), *dz_d = s_dev(NULL, n * 4);
    int32_t *tgt_d = s_dev(tgt, (size_t)M * 4);
    double *rl_d = s_dev(NULL, (size_t)M * 8), *rl = malloc((size_t)M * 8);
    float scale = 1.0f / M;
    int bad = 0;
    double loss = cross_entropy_forward_backward(z, tgt, M, V, scale, dz);
    SK(cross_entropy_forward_backward_cuda(z_d, tgt_d, M, V, scale, dz_d, rl_d, 0));
    float *h = s_host(dz_d, n);
    bad += s_validate("cross_entropy dlogits", h, dz, n, 1e-9, 1e-5);
    free(h);
    CK(cudaMemcpy(rl, rl_d, (size_t)M * 8, cudaMemcpyDeviceToHost));
    double gl = 0;
    for (int m = 0; m < M; m++)
        gl += rl[m];
    int lbad = !(fabs(gl - loss) <= 1e-6 * fabs(loss));
    printf("  %-28s cpu %.12g gpu %.12g  %s\n", "cross_entropy loss", loss, gl,
           lbad ? "FAIL" : "ok");
    bad += lbad;
    /* in place over the logits, no row losses */
    SK(cross_entropy_forward_backward_cuda(z_d, tgt_d, M, V, scale, z_d, NULL, 0));
    h = s_host(z_d, n);
    bad += s_validate("cross_entropy in place", h, dz, n, 1e-9, 1e-5);
    free(h);
    CK(cudaMemcpy(z_d, z, n * 4, cudaMemcpyHostToDevice));
    BENCH("cross_entropy_forward_backward", 20,
          cross_entropy_forward_backward(z, tgt, M, V, scale, dz),
          SK(cross_entropy_forward_backward_cuda(z_d, tgt_d, M, V, scale, dz_d, rl_d, 0)));
    free(z), free(dz), free(tgt), free(rl);
    CK(cudaFree(z_d));
    CK(cudaFree(dz_d));
    CK(cudaFree(tgt_d));
    CK(cudaFree(rl_d));
    return bad;
}

static int test_optim(int64_t n)
{
    printf("optim n=%lld\n", (long long)n);
    adamw_hparams_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    size_t b = (size_t)n * 4;
    float *p = s_rand((size_t)n, -1, 1), *m = calloc((size_t)n, 4), *v = calloc((size_t)n, 4);
    float *p_d = s_dev(p, b), *m_d = s_dev(m, b), *v_d = s_dev(v, b), *g_d = s_dev(NULL, b);
    int bad = 0;
    for (int t = 1; t <= 3; t++) {
        float *g = s_rand((size_t)n, -3, 3);
        CK(cudaMemcpy(g_d, g, b, cudaMemcpyHostToDevice));
        float lr = 1e-3f * t;
        adamw_update(p, g, m, v, n, lr, t != 2, t, &hp);
        SK(adamw_update_cuda(p_d, g_d, m_d, v_d, n, lr, t != 2, t, &hp, 0));
        free(g);
    }
    float *h = s_host(p_d, (size_t)n);
    bad += s_validate("adamw p (bitwise)", h, p, (size_t)n, 0, 0);
    free(h);
    h = s_host(v_d, (size_t)n);
    bad += s_validate("adamw v (bitwise)", h, v, (size_t)n, 0, 0);
    free(h);

    double ss = grad_sum_squares(p, n), acc0 = 2.5, gss = 0;
    double *acc_d = s_dev(&acc0, 8);
    SK(grad_sum_squares_cuda(p_d, n, acc_d, 0));
    CK(cudaMemcpy(&gss, acc_d, 8, cudaMemcpyDeviceToHost));
    int sbad = !(fabs((gss - acc0) - ss) <= 1e-12 * ss + 1e-9);
    printf("  %-28s cpu %.15g gpu %.15g  %s\n", "grad_sum_squares (+=)", ss, gss - acc0,
           sbad ? "FAIL" : "ok");
    bad += sbad;

    float coef = (float)clip_coefficient(sqrt(ss), 1.0);
    grad_scale(p, n, coef);
    SK(grad_scale_cuda(p_d, n, coef, 0));
    h = s_host(p_d, (size_t)n);
    bad += s_validate("grad_scale (bitwise)", h, p, (size_t)n, 0, 0);
    free(h);

    float bias[8] = {0.1f, -0.2f, 0.3f, 0, 0, 0.5f, -0.5f, 0.25f};
    int64_t counts[8] = {3, 1, 2, 2, 0, 10, 2, 4}; /* mean 3: ties with expert 0 */
    float *bias_d = s_dev(bias, sizeof bias);
    int64_t *counts_d = s_dev(counts, sizeof counts);
    moe_bias_update(bias, counts, 8, 0.001f);
    SK(moe_bias_update_cuda(bias_d, counts_d, 8, 0.001f, 0));
    h = s_host(bias_d, 8);
    bad += s_validate("moe_bias_update (bitwise)", h, bias, 8, 0, 0);
    free(h);

    float *gb = s_rand((size_t)n, -1, 1);
    BENCH("adamw_update", 20, adamw_update(p, gb, m, v, n, 1e-3f, 1, 5, &hp),
          SK(adamw_update_cuda(p_d, g_d, m_d, v_d, n, 1e-3f, 1, 5, &hp, 0)));
    BENCH("grad_sum_squares", 20, ss = grad_sum_squares(p, n),
          SK(grad_sum_squares_cuda(p_d, n, acc_d, 0)));
    free(p), free(m), free(v), free(gb);
    CK(cudaFree(p_d));
    CK(cudaFree(m_d));
    CK(cudaFree(v_d));
    CK(cudaFree(g_d));
    CK(cudaFree(acc_d));
    CK(cudaFree(bias_d));
    CK(cudaFree(counts_d));
    return bad;
}

int main(int argc, char **argv)
{
    int start = gpu_test_start("test_gpu_parity", argc, argv, &s_bench);
    if (start != 0)
        return start;
    int bad = 0;
    /* the tiny model's shapes (B 8, T 128, d 128, H 4, V 256, f 384), then odd sizes for tails */
    bad += test_embedding(1024, 256, 128);
    bad += test_embedding(37, 300, 70);
    bad += test_rmsnorm(1024, 128);
    bad += test_rmsnorm(37, 70);
    bad += test_rope(8, 128, 4, 32);
    bad += test_rope(3, 7, 3, 6);
    bad += test_swiglu(1024, 384);
    bad += test_swiglu(37, 70);
    bad += test_cross_entropy(1024, 256);
    bad += test_cross_entropy(37, 1000);
    bad += test_optim(1 << 20);
    bad += test_optim(1001);
    printf("test_gpu_parity: %s (%d mismatches)\n", bad ? "FAIL" : "PASS", bad);
    return bad ? 1 : 0;
}
