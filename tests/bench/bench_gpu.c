/* bench_gpu: GPU throughput against the chip's own measured matmul rate, all in one run.
 *   1. peak: cuBLAS GEMM 8192³, bf16 in/out with fp32 accumulation (and plain fp32), TFLOP/s;
 *   2. the MoE layer forward + backward (moe_forward_cuda + moe_backward_cuda) at d 2048,
 *      fe 1408, N 64, K 6, no shared experts, M tokens, in fp32 and bf16 matmul precision;
 *      FLOPs = 18·M·K·d·fe (experts: 6 forward, 12 backward) + 6·M·d·N (router);
 *   3. a whole training step of the wide preset (d 512, 8 layers, H 8, f 1024, 16 experts of
 *      fe 128, K 2; T 128, 128 sequences per step in one micro-batch: at this width each layer
 *      is tens of small launches, so fewer, larger micro-batches keep the GPU fed) on the GPU
 *      trainer;
 *      FLOPs per token = 6·(active non-embedding parameters + head) + 12·L·d·T (PaLM's MFU
 *      count; attention counted over the full T×T, which the GEMM attention computes), in fp32,
 *      bf16, and bf16 with the fused causal attention (MODEL_GPU_FUSED_ATTENTION).
 * Prints a table: case | precision | ms | TFLOP/s | of bf16 peak. Exit 77 without a GPU.
 * Run: build/bin/bench_gpu [--quick] (targets in the README: MoE ≥ 40%, wide step ≥ 35%). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <curand.h>

#include "clock.h"
#include "device.h"
#include "gpu_testutil.h" /* CK, SK */
#include "kernels_common.h"
#include "model_gpu.h"
#include "moe.h"
#include "runspec.h"
#include "trainer_gpu.h"

#define CB(call)                                                                                   \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "%s:%d: %s: cuBLAS %d\n", __FILE__, __LINE__, #call, (int)s_);         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CR(call)                                                                                   \
    do {                                                                                           \
        if ((call) != CURAND_STATUS_SUCCESS) {                                                     \
            fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #call);                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
static double s_peak_bf16; /* TFLOP/s, measured below */
static curandGenerator_t s_rng;

static void s_row(const char *name, const char *prec, double ms, double flops)
{
    const double tf = flops / (ms * 1e-3) / 1e12;
    printf("| %-34s | %-4s | %9.3f | %8.1f | %5.1f%% |\n", name, prec, ms, tf,
           100.0 * tf / s_peak_bf16);
    fflush(stdout);
}

static float *s_zeros(size_t n)
{
    float *p;
    CK(cudaMalloc((void **)&p, sizeof(float) * (n ? n : 1)));
    CK(cudaMemset(p, 0, sizeof(float) * n));
    return p;
}

/* n normal floats (n rounded up to even for curand) of standard deviation sd. */
static float *s_randn(size_t n, float sd)
{
    float *p;
    const size_t n2 = (n + 1) / 2 * 2;
    CK(cudaMalloc((void **)&p, sizeof(float) * n2));
    CR(curandGenerateNormal(s_rng, p, n2, 0.0f, sd));
    return p;
}

/* ms per call of a cuBLAS GEMM m = n = k = `n`, bf16 (1) or fp32 (0). */
static double s_gemm_ms(cublasHandle_t h, int n, int bf16, int reps)
{
    void *a, *b, *c;
    const size_t el = bf16 ? 2 : 4, nn = (size_t)n * n;
    CK(cudaMalloc(&a, nn * el));
    CK(cudaMalloc(&b, nn * el));
    CK(cudaMalloc(&c, nn * el));
    CK(cudaMemset(a, 0x3c, nn * el)); /* finite values; the rate does not depend on them */
    CK(cudaMemset(b, 0x3c, nn * el));
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int r = -2; r < reps; r++) {
        if (r == 0)
            CK(cudaEventRecord(e0, 0));
        CB(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, t, n, b, t, n, &zero, c, t,
                        n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaFree(c));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return ms / reps;
}

static void s_bench_moe(int M, int reps)
{
    const moe_config_t c = {.d = 2048,
                            .fe = 1408,
                            .fs = 0,
                            .router = {.N = 64, .K = 6, .n_group = 1, .topk_group = 1,
                                       .rsf = 1.0f}};
    const int N = c.router.N, d = c.d, fe = c.fe;
    cudaStream_t st;
    cublasHandle_t h;
    CK(cudaStreamCreate(&st));
    CB(cublasCreate(&h));
    float *gu_w[64], *d_w[64], *ggu[64], *gd[64];
    moe_weights_t w = {.router = s_randn((size_t)N * d, 0.02f), .expert_gu = gu_w,
                       .expert_d = d_w};
    moe_weights_t g = {.router = s_zeros((size_t)N * d), .expert_gu = ggu, .expert_d = gd};
    CK(cudaMalloc((void **)&w.bias, sizeof(float) * N));
    CK(cudaMemset(w.bias, 0, sizeof(float) * N));
    for (int e = 0; e < N; e++) {
        gu_w[e] = s_randn((size_t)2 * fe * d, 0.02f);
        d_w[e] = s_randn((size_t)d * fe, 0.02f);
        ggu[e] = s_zeros((size_t)2 * fe * d);
        gd[e] = s_zeros((size_t)d * fe);
    }
    float *u = s_randn((size_t)M * d, 1.0f), *dy = s_randn((size_t)M * d, 1e-3f);
    float *y, *du;
    int64_t *counts;
    CK(cudaMalloc((void **)&y, sizeof(float) * (size_t)M * d));
    CK(cudaMalloc((void **)&du, sizeof(float) * (size_t)M * d));
    CK(cudaMalloc((void **)&counts, sizeof(int64_t) * N));
    CK(cudaMemset(counts, 0, sizeof(int64_t) * N));
    moe_saved_cuda_t sv;
    moe_scratch_t sc;
    SK(moe_saved_alloc_cuda(&sv, &c, M));
    SK(moe_scratch_alloc_cuda(&sc, &c, M));
    const double flops = 18.0 * M * c.router.K * (double)d * fe + 6.0 * M * (double)d * N;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        SK(kernels_matmul_bf16_cuda(h, bf16));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        for (int r = -1; r < reps; r++) {
            if (r == 0)
                CK(cudaEventRecord(e0, st));
            SK(moe_forward_cuda(h, &c, &w, u, M, &sv, y, counts, st));
            SK(moe_backward_cuda(h, &c, &w, u, &sv, dy, &sc, du, &g, st));
        }
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        char name[64];
        snprintf(name, sizeof name, "MoE d2048 fe1408 N64 K6 M%d", M);
        s_row(name, bf16 ? "bf16" : "fp32", ms / reps, flops);
        CK(cudaEventDestroy(e0));
        CK(cudaEventDestroy(e1));
    }
    SK(kernels_matmul_bf16_cuda(h, 0));
    moe_saved_free_cuda(&sv);
    moe_scratch_free_cuda(&sc);
    for (int e = 0; e < N; e++) {
        cudaFree(gu_w[e]);
        cudaFree(d_w[e]);
        cudaFree(ggu[e]);
        cudaFree(gd[e]);
    }
    cudaFree(w.router);
    cudaFree(w.bias);
    cudaFree(g.router);
    cudaFree(u);
    cudaFree(dy);
    cudaFree(y);
    cudaFree(du);
    cudaFree(counts);
    cublasDestroy(h);
    cudaStreamDestroy(st);
}

/* FLOPs per token of a training step (see the file header). */
static double s_step_flops_per_token(const model_config_t *c, int T)
{
    const double d = c->hidden_size, f = c->intermediate_size, fe = c->moe_intermediate_size;
    const double N = c->n_routed_experts, K = c->num_experts_per_tok;
    const double fs = c->n_shared_experts * fe;
    double active = (double)c->vocab_size * d; /* the head (the embedding is a lookup) */
    for (int l = 0; l < c->num_hidden_layers; l++) {
        active += 4 * d * d;
        active += model_config_is_moe_layer(c, l) ? N * d + K * 3 * d * fe + 3 * d * fs
                                                  : 3 * d * f;
    }
    return 6 * active + 12.0 * c->num_hidden_layers * d * T;
}

static void s_bench_wide(const device_t *dev, const char *dir, int timed)
{
    char corpus[256], yaml[2048];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    FILE *f = fopen(corpus, "wb");
    if (!f) {
        perror(corpus);
        exit(1);
    }
    uint64_t x = 11;
    for (int i = 0; i < (1 << 21); i++) { /* 2 MiB of printable bytes */
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        fputc(32 + (int)((x >> 33) % 95), f);
    }
    fclose(f);
    const int warm = 2, G = 128, T = 128;
    for (int run = 0; run < 3; run++) { /* fp32, bf16, bf16 with the fused attention */
        const int bf16 = run > 0, flags = run == 2 ? MODEL_GPU_FUSED_ATTENTION : 0;
        snprintf(yaml, sizeof yaml,
                 "name: bench-gpu-wide\n"
                 "model:\n  preset: tiny\n  hidden_size: 512\n  num_hidden_layers: 8\n"
                 "  num_attention_heads: 8\n  intermediate_size: 1024\n"
                 "  moe_intermediate_size: 128\n  n_routed_experts: 16\n"
                 "data:\n  files:\n    - %s\n"
                 "train:\n  steps: %d\n  global_batch: %d\n  seq_len: %d\n  micro_batch: %d\n"
                 "  lr: 1e-3\n  precision: %s\n"
                 "checkpoint:\n  dir: %s/ckpt-%d\n",
                 corpus, warm + timed, G, T, G, bf16 ? "bf16" : "fp32", dir, run);
        runspec_t spec;
        trainer_gpu_t *t = NULL;
        int64_t resumed;
        SK(runspec_load_string(yaml, "bench_gpu", &spec));
        SK(trainer_gpu_new_flags(&spec, spec.checkpoint_dir, dev, flags, &t));
        SK(trainer_gpu_resume(t, NULL, &resumed));
        double busy = 0, loss = 0;
        for (int k = 0; k < warm + timed; k++) {
            trainer_step_info_t info;
            SK(trainer_gpu_step(t, &info));
            if (k >= warm)
                busy += info.step_seconds;
            loss = info.loss;
        }
        const double ms = busy * 1e3 / timed;
        s_row(flags ? "wide step, fused attention" : "wide step (G128 T128, mb 128)",
              bf16 ? "bf16" : "fp32", ms,
              s_step_flops_per_token(&spec.model, T) * G * T);
        printf("|   (loss after %d steps %.4f; %.0f tokens/s)\n", warm + timed, loss,
               G * T / (ms * 1e-3));
        trainer_gpu_destroy(&t);
    }
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    device_t dev;
    if (device_cuda_count() < 1 || device_select("cuda:0", &dev) != SHOAL_OK) {
        printf("bench_gpu: no CUDA device: skipped\n");
        return 77;
    }
    SK(device_bind(&dev));
    char what[200];
    device_describe(&dev, what, sizeof what);
    printf("bench_gpu on %s\n", what);
    CR(curandCreateGenerator(&s_rng, CURAND_RNG_PSEUDO_DEFAULT));
    CR(curandSetPseudoRandomGeneratorSeed(s_rng, 1234));
    cublasHandle_t h;
    CB(cublasCreate(&h));
    const int n = 8192;
    const double gemm_flops = 2.0 * n * n * (double)n;
    const double ms16 = s_gemm_ms(h, n, 1, quick ? 5 : 20);
    s_peak_bf16 = gemm_flops / (ms16 * 1e-3) / 1e12;
    const double ms32 = s_gemm_ms(h, n, 0, quick ? 2 : 5);
    cublasDestroy(h);
    printf("| %-34s | %-4s | %9s | %8s | %6s |\n", "case", "prec", "ms", "TFLOP/s", "of bf16 peak");
    printf("|%s|------|-----------|----------|--------|\n", "------------------------------------");
    s_row("cuBLAS GEMM 8192^3 (the peak)", "bf16", ms16, gemm_flops);
    s_row("cuBLAS GEMM 8192^3", "fp32", ms32, gemm_flops);
    s_bench_moe(4096, quick ? 3 : 10);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/shoal-benchgpu-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    s_bench_wide(&dev, dir, quick ? 3 : 8);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_gpu: could not remove %s\n", dir);
    curandDestroyGenerator(s_rng);
    printf("targets: MoE fwd+bwd bf16 >= 40%% of the bf16 peak; wide step bf16 >= 35%% (MFU)\n");
    return 0;
}
