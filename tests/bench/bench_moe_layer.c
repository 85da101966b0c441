/* bench_moe_layer: forward+backward GFLOP/s of one MoE layer (d 512, fe 1024, N 16, K 2,
 * 4096 tokens, one shared expert) against OpenBLAS sgemm measured in the same run on the
 * layer's own largest GEMM shape and on 1024³, and the same layer in bf16 (train.precision bf16,
 * oneDNN) against fp32 where the CPU has it, and the fp32 layer against its own GEMMs as lone
 * sgemm calls. Run: build/bin/bench_moe_layer [threads] [tiny [profile [reps]]]. */
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

/* The layer's GEMMs (moe.c, ffn.c) as a list of lone sgemm calls, in the layer's order, at their
 * own shapes and on the layer's own operands (its saved buffers, scratch, weights and
 * gradients): the router, per expert its rows (the last forward's offsets), the shared expert;
 * forward (NT) and backward (weight gradients TN, accumulated; input gradients NN). What the
 * layer spends beyond them is routing, gathering, activations, and the cache misses those
 * passes cause. The older baseline ran all of them on one A, B and C buffer each (as large as
 * the largest operand), so every GEMM after the first found its operands in cache, which no
 * sequence of these GEMMs over the layer's ~20 MB of distinct operands can: it is still
 * printed ("shared hot buffers"), for comparison with earlier figures. */
#define S_MAX_GEMMS (3 + 6 * (16 + 1)) /* router, 16 experts and the shared one */
typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float beta, *c;
} s_gemm_t;

typedef struct {
    int n;
    s_gemm_t g[S_MAX_GEMMS];
    float *a, *b, *c; /* the shared buffers, each as large as the largest operand */
} s_gemms_t;

static void s_gemms_add(s_gemms_t *g, int ta, int tb, int m, int n, int k, const float *a,
                        int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m > 0 && n > 0 && k > 0 && g->n < S_MAX_GEMMS)
        g->g[g->n++] = (s_gemm_t){ta, tb, m, n, k, lda, ldb, ldc, a, b, beta, c};
}

/* ffn_forward's and ffn_backward's GEMMs (ffn.c) */
static void s_ffn_forward_gemms(s_gemms_t *g, const float *x, int M, int d, int f,
                                const float *w_gu, const float *w_d, float *gu, float *a,
                                float *y)
{
    s_gemms_add(g, 0, 1, M, 2 * f, d, x, d, w_gu, d, 0, gu, 2 * f);
    s_gemms_add(g, 0, 1, M, d, f, a, f, w_d, f, 0, y, d);
}

static void s_ffn_backward_gemms(s_gemms_t *g, const float *x, int M, int d, int f,
                                 const float *w_gu, const float *w_d, const float *a,
                                 const float *dy, float *dgu, float *da, float *dx, float *dw_gu,
                                 float *dw_d)
{
    s_gemms_add(g, 1, 0, d, f, M, dy, d, a, f, 1, dw_d, f);
    s_gemms_add(g, 0, 0, M, f, d, dy, d, w_d, f, 0, da, f);
    s_gemms_add(g, 1, 0, 2 * f, d, M, dgu, 2 * f, x, d, 1, dw_gu, d);
    s_gemms_add(g, 0, 0, M, d, 2 * f, dgu, 2 * f, w_gu, d, 0, dx, d);
}

static void s_gemms_init(s_gemms_t *g, const moe_config_t *c, const moe_weights_t *w,
                         const moe_weights_t *gr, const float *u, const float *dy,
                         const moe_saved_t *sv, const moe_scratch_t *sc, float *y, float *du)
{
    const int d = c->d, N = c->router.N, fe = c->fe, M = sv->M;
    const int64_t *off = sv->offsets;
    memset(g, 0, sizeof *g);
    /* forward: router, experts, shared (moe_forward) */
    s_gemms_add(g, 0, 1, M, N, d, u, d, w->router, d, 0, sv->s, N);
    for (int e = 0; e < N; e++)
        s_ffn_forward_gemms(g, sv->xs + off[e] * d, (int)(off[e + 1] - off[e]), d, fe,
                            w->expert_gu[e], w->expert_d[e], sv->gu + off[e] * 2 * fe,
                            sv->a + off[e] * fe, sv->ys + off[e] * d);
    if (c->fs)
        s_ffn_forward_gemms(g, u, M, d, c->fs, w->shared_gu, w->shared_d, sv->sh_gu, sv->sh_a, y);
    /* backward: shared, experts, router (moe_backward) */
    if (c->fs)
        s_ffn_backward_gemms(g, u, M, d, c->fs, w->shared_gu, w->shared_d, sv->sh_a, dy,
                             sc->sh_dgu, sc->sh_da, du, gr->shared_gu, gr->shared_d);
    for (int e = 0; e < N; e++)
        s_ffn_backward_gemms(g, sv->xs + off[e] * d, (int)(off[e + 1] - off[e]), d, fe,
                             w->expert_gu[e], w->expert_d[e], sv->a + off[e] * fe,
                             sc->dys + off[e] * d, sc->dgu, sc->da, sc->dxs + off[e] * d,
                             gr->expert_gu[e], gr->expert_d[e]);
    s_gemms_add(g, 1, 0, N, d, M, sc->dlogits, N, u, d, 1, gr->router, d);
    s_gemms_add(g, 0, 0, M, d, N, sc->dlogits, N, w->router, d, 1, du, d);
    size_t big = 0;
    for (int i = 0; i < g->n; i++) {
        const s_gemm_t *e = &g->g[i];
        const size_t mk = (size_t)e->m * e->k, kn = (size_t)e->k * e->n, mn = (size_t)e->m * e->n;
        big = mk > big ? mk : big;
        big = kn > big ? kn : big;
        big = mn > big ? mn : big;
    }
    unsigned seed = 11;
    g->a = s_randn(big, 1, &seed);
    g->b = s_randn(big, 1, &seed);
    g->c = calloc(big, sizeof(float));
}

/* own: on the layer's operands; else on the shared buffers (packed leading dimensions) */
static void s_gemms_run(const s_gemms_t *g, int own)
{
    for (int i = 0; i < g->n; i++) {
        const s_gemm_t *e = &g->g[i];
        cblas_sgemm(CblasRowMajor, e->ta ? CblasTrans : CblasNoTrans,
                    e->tb ? CblasTrans : CblasNoTrans, e->m, e->n, e->k, 1,
                    own ? e->a : g->a, own ? e->lda : e->ta ? e->m : e->k,
                    own ? e->b : g->b, own ? e->ldb : e->tb ? e->k : e->n, e->beta,
                    own ? e->c : g->c, own ? e->ldc : e->n);
    }
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
    /* bench_moe_layer 1 tiny profile [reps]: only the fp32 layer, reps times (for perf record) */
    if (argc > 3 && strcmp(argv[3], "profile") == 0) {
        const int reps = argc > 4 ? atoi(argv[4]) : 300;
        for (int r = 0; r < reps; r++) {
            moe_forward(&c, &w, u, M, &sv, y, counts);
            moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
        }
        return 0;
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
    /* The baselines are lone cblas_sgemm calls threaded by OpenBLAS itself, at the same thread
     * count: what a program calling the library gets. The layer's GEMMs run as blocks on
     * shoal's threads with OpenBLAS on one (blas_select_set_threads). */
    openblas_set_num_threads(threads);
    const double peak_shape = s_sgemm_gflops(M, 2 * c.fs, d);
    const double peak_cube = s_sgemm_gflops(1024, 1024, 1024);
    openblas_set_num_threads(1);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_moe_layer: d %d fe %d N %d K %d ns %d tokens %d, threads %d, "
           "OPENBLAS_CORETYPE=%s\n", d, fe, N, K, ns, M, threads, ct ? ct : "(unset)");
    printf("  MoE forward+backward: %.1f ms, %.1f GFLOP -> %.1f GFLOP/s\n", best * 1e3,
           flops / 1e9, moe_gflops);
    printf("  OpenBLAS sgemm %dx%dx%d: %.1f GFLOP/s; 1024^3: %.1f GFLOP/s\n", M, 2 * c.fs, d,
           peak_shape, peak_cube);
    printf("  ratio MoE / sgemm(1024^3) = %.2f   (target >= 0.6)\n", moe_gflops / peak_cube);
    printf("  ratio MoE / sgemm(same shape) = %.2f\n", moe_gflops / peak_shape);
    /* fp32 layer against its GEMMs alone (on its own operands, and on shared hot buffers),
     * alternating so that load on the machine hits all alike (runs of equal length see the same
     * preemptions); best of 7 each. The GEMM runs overwrite the layer's buffers; each layer run
     * recomputes them. */
    c.prec = KGEMM_FP32;
    moe_forward(&c, &w, u, M, &sv, y, counts);
    moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
    s_gemms_t gl;
    s_gemms_init(&gl, &c, &w, &g, u, dy, &sv, &sc, y, du);
    double lay = 1e30, gem = 1e30, hot = 1e30, lay_cpu = 1e30, gem_cpu = 1e30, hot_cpu = 1e30;
    for (int r = 0; r < 7; r++) {
        const double t0 = clock_mono_s(), c0 = s_thread_cpu_s();
        moe_forward(&c, &w, u, M, &sv, y, counts);
        moe_backward(&c, &w, u, &sv, dy, &sc, du, &g);
        const double t1 = clock_mono_s(), c1 = s_thread_cpu_s();
        openblas_set_num_threads(threads);
        s_gemms_run(&gl, 1);
        const double t2 = clock_mono_s(), c2 = s_thread_cpu_s();
        s_gemms_run(&gl, 0);
        const double t3 = clock_mono_s(), c3 = s_thread_cpu_s();
        openblas_set_num_threads(1);
        lay = t1 - t0 < lay ? t1 - t0 : lay;
        gem = t2 - t1 < gem ? t2 - t1 : gem;
        hot = t3 - t2 < hot ? t3 - t2 : hot;
        lay_cpu = c1 - c0 < lay_cpu ? c1 - c0 : lay_cpu;
        gem_cpu = c2 - c1 < gem_cpu ? c2 - c1 : gem_cpu;
        hot_cpu = c3 - c2 < hot_cpu ? c3 - c2 : hot_cpu;
    }
    printf("  fp32 layer %.1f ms against its %d GEMMs as lone sgemm calls at their own shapes "
           "on its own operands %.1f ms: %.2f of sgemm speed (target >= 0.9); on shared hot "
           "buffers %.1f ms: %.2f\n", lay * 1e3, gl.n, gem * 1e3, gem / lay, hot * 1e3, hot / lay);
    if (threads == 1) /* everything ran on this thread: its CPU time is the work's */
        printf("  the same in thread CPU time (load-proof): layer %.1f ms, GEMMs %.1f ms: %.2f; "
               "shared hot buffers %.1f ms: %.2f\n", lay_cpu * 1e3, gem_cpu * 1e3,
               gem_cpu / lay_cpu, hot_cpu * 1e3, hot_cpu / lay_cpu);
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
