/* bench_moe_layer: forward+backward GFLOP/s of one MoE layer (d 512, fe 1024, N 16, K 2,
 * 4096 tokens, one shared expert) against OpenBLAS sgemm measured in the same run on the
 * layer's own largest GEMM shape and on 1024³, and the same layer in bf16 (train.precision bf16,
 * oneDNN) against fp32 where the CPU has it. Run: build/bin/bench_moe_layer [threads]. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas_select.h"
#include "clock.h"
#include "kgemm.h"
#include "moe.h"

/* CPU seconds of the calling thread: with one thread (all GEMMs and loops on it) the layer's and
 * its GEMMs' own work, without the time other processes took the core (a shared machine) */
static double s_thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *s_randn(size_t n, float scale, unsigned *seed)
{
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * ((float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f);
    return p;
}

static double s_sgemm_gflops(int M, int N, int K)
{
    unsigned seed = 7;
    float *a = s_randn((size_t)M * K, 1, &seed), *b = s_randn((size_t)K * N, 1, &seed);
    float *c = calloc((size_t)M * N, sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = clock_mono_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        double g = 2.0 * M * N * K / (clock_mono_s() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* The layer's GEMMs (moe.c, ffn.c) as a list of lone sgemm calls at their own shapes: the router,
 * per expert its rows (the last forward's offsets), the shared expert; forward (NT) and backward
 * (weight gradients TN, accumulated; input gradients NN). What the layer spends beyond them is
 * routing, gathering, activations and memory traffic between the GEMMs. */
#define S_MAX_GEMMS (3 + 6 * (16 + 1)) /* router, 16 experts and the shared one */
typedef struct {
    int n, ta[S_MAX_GEMMS], tb[S_MAX_GEMMS], m[S_MAX_GEMMS], nn[S_MAX_GEMMS], k[S_MAX_GEMMS];
    float beta[S_MAX_GEMMS];
    float *a, *b, *c; /* one buffer each, as large as the largest operand */
} s_gemms_t;

static void s_gemms_add(s_gemms_t *g, int ta, int tb, int m, int n, int k, float beta)
{
    if (m > 0 && n > 0 && k > 0 && g->n < S_MAX_GEMMS) {
        g->ta[g->n] = ta, g->tb[g->n] = tb, g->m[g->n] = m, g->nn[g->n] = n, g->k[g->n] = k;
        g->beta[g->n++] = beta;
    }
}

static void s_gemms_init(s_gemms_t *g, const moe_config_t *c, const moe_saved_t *sv, int M)
{
    const int d = c->d, N = c->router.N;
    memset(g, 0, sizeof *g);
    s_gemms_add(g, 0, 1, M, N, d, 0);
    s_gemms_add(g, 1, 0, N, d, M, 1);
    s_gemms_add(g, 0, 0, M, d, N, 1);
    for (int e = 0; e <= N; e++) {
        const int rows = e < N ? (int)(sv->offsets[e + 1] - sv->offsets[e]) : (c->fs ? M : 0);
        const int f = e < N ? c->fe : c->fs;
        s_gemms_add(g, 0, 1, rows, 2 * f, d, 0);
        s_gemms_add(g, 0, 1, rows, d, f, 0);
        s_gemms_add(g, 1, 0, d, f, rows, 1);
        s_gemms_add(g, 0, 0, rows, f, d, 0);
        s_gemms_add(g, 1, 0, 2 * f, d, rows, 1);
        s_gemms_add(g, 0, 0, rows, d, 2 * f, 0);
    }
    size_t big = 0;
    for (int i = 0; i < g->n; i++) {
        const size_t mk = (size_t)g->m[i] * g->k[i], kn = (size_t)g->k[i] * g->nn[i],
                     mn = (size_t)g->m[i] * g->nn[i];
        big = mk > big ? mk : big;
        big = kn > big ? kn : big;
        big = mn > big ? mn : big;
    }
    unsigned seed = 11;
    g->a = s_randn(big, 1, &seed);
    g->b = s_randn(big, 1, &seed);
    g->c = calloc(big, sizeof(float));
}

static void s_gemms_run(const s_gemms_t *g)
{
    for (int i = 0; i < g->n; i++)
        cblas_sgemm(CblasRowMajor, g->ta[i] ? CblasTrans : CblasNoTrans,
                    g->tb[i] ? CblasTrans : CblasNoTrans, g->m[i], g->nn[i], g->k[i], 1, g->a,
                    g->ta[i] ? g->m[i] : g->k[i], g->b, g->tb[i] ? g->k[i] : g->nn[i], g->beta[i],
                    g->c, g->nn[i]);
}

int main(int argc, char **argv)
{
    blas_select_at_start(argv); /* the kernels shoal-worker would run (blas_select.h) */
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    blas_select_set_threads(threads);
    /* bench_moe_layer [threads] [tiny]; tiny: the tiny preset's MoE layer (d 128, fe 128, N 8,
     * K 2) on one G 16 x T 128 batch */
    const int tiny = argc > 2 && strcmp(argv[2], "tiny") == 0;
    const int d = tiny ? 128 : 512, fe = tiny ? 128 : 1024, N = tiny ? 8 : 16, K = 2,
              M = tiny ? 2048 : 4096, ns = 1;
    moe_config_t c = {.d = d, .fe = fe, .fs = ns * fe,
                      .router = {.N = N, .K = K, .n_group = 1, .topk_group = 1, .rsf = 1.0f}};
    unsigned seed = 1;
    float *router = s_randn((size_t)N * d, 0.05f, &seed), *bias = calloc(N, sizeof(float));
    float *experts = s_randn((size_t)N * 3 * fe * d, 0.02f, &seed);
    float *shared = s_randn((size_t)3 * c.fs * d, 0.02f, &seed);
    float *gexperts = calloc((size_t)N * 3 * fe * d, sizeof(float));
    float *gshared = calloc((size_t)3 * c.fs * d, sizeof(float));
    float *grouter = calloc((size_t)N * d, sizeof(float));
    float *egu[16], *ed[16], *gegu[16], *ged[16];
    for (int e = 0; e < N; e++) {
        egu[e] = experts + (size_t)e * 3 * fe * d;
        ed[e] = egu[e] + (size_t)2 * fe * d;
        gegu[e] = gexperts + (size_t)e * 3 * fe * d;
        ged[e] = gegu[e] + (size_t)2 * fe * d;
    }
    moe_weights_t w = {router, bias, egu, ed, shared, shared + (size_t)2 * c.fs * d};
    moe_weights_t g = {grouter, NULL, gegu, ged, gshared, gshared + (size_t)2 * c.fs * d};
    float *u = s_randn((size_t)M * d, 1.0f, &seed), *dy = s_randn((size_t)M * d, 1.0f, &seed);
    float *y = malloc(sizeof(float) * (size_t)M * d), *du = malloc(sizeof(float) * (size_t)M * d);
    int64_t counts[16] = {0};
    moe_saved_t sv;
    moe_scratch_t sc;
    if (moe_saved_alloc(&sv, &c, M) || moe_scratch_alloc(&sc, &c, M)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    /* GEMM FLOPs: routed experts 6·M·K·d·fe forward, twice that backward; shared 6·M·d·fs
     * forward, 12 backward; router 2·M·N·d forward, 4 backward. */
    const double flops = 18.0 * M * K * d * fe + 18.0 * M * d * c.fs + 6.0 * M * N * d;
    /* fp32, then (where the CPU and the build have it) the same layer in bf16 */
    double best = 1e30, best_bf16 = 0;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        if (bf16 && kgemm_check(KGEMM_BF16) != SHOAL_OK)
            break;
        c.prec = bf16 ? KGEMM_BF16 : KGEMM_FP32;
        double *b = bf16 ? &best_bf16 : &best;
        *b = 1e30;
        moe_forward(&c, &w, u, M, &sv, y, counts);
        moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
        for (int r = 0; r < 5; r++) {
            double t0 = clock_mono_s();
            moe_forward(&c, &w, u, M, &sv, y, counts);
            moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
            double dt = clock_mono_s() - t0;
            *b = dt < *b ? dt : *b;
        }
    }
    const double moe_gflops = flops / best / 1e9;
    const double peak_shape = s_sgemm_gflops(M, 2 * c.fs, d);
    const double peak_cube = s_sgemm_gflops(1024, 1024, 1024);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_moe_layer: d %d fe %d N %d K %d ns %d tokens %d, threads %d, "
           "OPENBLAS_CORETYPE=%s\n", d, fe, N, K, ns, M, threads, ct ? ct : "(unset)");
    printf("  MoE forward+backward: %.1f ms, %.1f GFLOP -> %.1f GFLOP/s\n", best * 1e3,
           flops / 1e9, moe_gflops);
    printf("  OpenBLAS sgemm %dx%dx%d: %.1f GFLOP/s; 1024^3: %.1f GFLOP/s\n", M, 2 * c.fs, d,
           peak_shape, peak_cube);
    printf("  ratio MoE / sgemm(1024^3) = %.2f   (target >= 0.6)\n", moe_gflops / peak_cube);
    printf("  ratio MoE / sgemm(same shape) = %.2f\n", moe_gflops / peak_shape);
    /* fp32 layer against its GEMMs alone, alternating so that load on the machine hits both
     * alike (runs of equal length see the same preemptions); best of 7 each */
    c.prec = KGEMM_FP32;
    s_gemms_t gl;
    s_gemms_init(&gl, &c, &sv, M);
    double lay = 1e30, gem = 1e30, lay_cpu = 1e30, gem_cpu = 1e30;
    for (int r = 0; r < 7; r++) {
        const double t0 = clock_mono_s(), c0 = s_thread_cpu_s();
        moe_forward(&c, &w, u, M, &sv, y, counts);
        moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
        const double t1 = clock_mono_s(), c1 = s_thread_cpu_s();
        s_gemms_run(&gl);
        const double t2 = clock_mono_s(), c2 = s_thread_cpu_s();
        lay = t1 - t0 < lay ? t1 - t0 : lay;
        gem = t2 - t1 < gem ? t2 - t1 : gem;
        lay_cpu = c1 - c0 < lay_cpu ? c1 - c0 : lay_cpu;
        gem_cpu = c2 - c1 < gem_cpu ? c2 - c1 : gem_cpu;
    }
    printf("  fp32 layer %.1f ms against its %d GEMMs as lone sgemm calls at their own shapes "
           "%.1f ms: %.2f of sgemm speed (target >= 0.9)\n", lay * 1e3, gl.n, gem * 1e3,
           gem / lay);
    if (threads == 1) /* everything ran on this thread: its CPU time is the work's */
        printf("  the same in thread CPU time (load-proof): layer %.1f ms, GEMMs %.1f ms: %.2f\n",
               lay_cpu * 1e3, gem_cpu * 1e3, gem_cpu / lay_cpu);
    char blas[512];
    blas_select_describe(blas, sizeof blas);
    printf("  BLAS %s\n", blas);
    if (best_bf16 > 0)
        printf("  bf16 (oneDNN) forward+backward: %.1f ms: %.0f tokens/s against fp32 %.0f "
               "tokens/s, bf16/fp32 = %.2f\n", best_bf16 * 1e3, M / best_bf16, M / best,
               best / best_bf16);
    else
        printf("  bf16: %s\n", shoal_errmsg());
    return 0;
}
