/* bench_bf16: bf16 against fp32 on the CPU, every figure against a baseline of the same run.
 *   1. per GEMM shape of the tiny preset (micro-batch 16 × 128 tokens) and of bench_moe_layer's
 *      layer: OpenBLAS sgemm (the fp32 path), oneDNN fp32 and oneDNN bf16 (kgemm, conversion
 *      included), as GFLOP/s and ratios to sgemm;
 *   2. training the tiny preset (global batch 16, seq 128, the default micro-batch), tokens/s in
 *      bf16 against fp32.
 * The MoE layer's bf16 against fp32 is bench_moe_layer's last line.
 * Run: build/bin/bench_bf16 [threads] [steps]. Exits 77 where bf16 is unavailable. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fsutil.h"
#include "kgemm.h"
#include "runspec.h"
#include "trainer.h"

static float *s_rand(size_t n, float scale, unsigned *seed)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = scale * ((float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f);
    return p;
}

typedef struct {
    const char *name;
    int ta, tb, M, N, K;
} s_shape_t;

/* Best seconds per call of kgemm(prec) on this shape over ~0.2 s of repeats. */
static double s_time_gemm(kgemm_prec_t prec, const s_shape_t *s, const float *A, const float *B,
                          float *C)
{
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    kgemm(prec, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
    double best = 1e30, spent = 0;
    for (int r = 0; r < 2000 && (r < 3 || spent < 0.2); r++) {
        const double t0 = clock_mono_s();
        kgemm(prec, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        const double dt = clock_mono_s() - t0;
        spent += dt;
        best = dt < best ? dt : best;
    }
    return best;
}

static void s_bench_shapes(void)
{
    static const s_shape_t shapes[] = {
        {"tiny qkv fwd", 0, 1, 2048, 384, 128},    {"tiny scores", 0, 1, 64, 128, 32},
        {"tiny p·v", 0, 0, 64, 32, 128},           {"tiny out proj", 0, 1, 2048, 128, 128},
        {"tiny dense gu", 0, 1, 2048, 768, 128},   {"tiny dense down", 0, 1, 2048, 128, 384},
        {"tiny expert gu", 0, 1, 512, 256, 128},   {"tiny expert down", 0, 1, 512, 128, 128},
        {"tiny head", 0, 1, 2048, 256, 128},       {"tiny dW gu", 1, 0, 768, 128, 2048},
        {"tiny dX gu", 0, 0, 2048, 128, 768},      {"moe expert gu", 0, 1, 512, 2048, 512},
        {"moe expert down", 0, 1, 512, 512, 1024}, {"moe shared gu", 0, 1, 4096, 2048, 512},
        {"moe dW gu", 1, 0, 2048, 512, 4096},      {"cube 1024", 0, 1, 1024, 1024, 1024},
    };
    printf("per shape (GFLOP/s; ratio to OpenBLAS sgemm)\n");
    printf("  %-17s %5s %5s %5s %2s%2s %8s %8s %6s %8s %6s\n", "shape", "M", "N", "K", "tA", "tB",
           "sgemm", "dnn-f32", "ratio", "dnn-bf16", "ratio");
    unsigned seed = 3;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const s_shape_t *s = &shapes[i];
        float *A = s_rand((size_t)s->M * s->K, 1, &seed),
              *B = s_rand((size_t)s->K * s->N, 1, &seed);
        float *C = calloc((size_t)s->M * s->N, sizeof(float));
        const double gf = 2.0 * s->M * s->N * s->K / 1e9;
        const double t32 = s_time_gemm(KGEMM_FP32, s, A, B, C);
        const double tdf = s_time_gemm(KGEMM_FP32_ONEDNN, s, A, B, C);
        const double tbf = s_time_gemm(KGEMM_BF16, s, A, B, C);
        printf("  %-17s %5d %5d %5d %2d%2d %8.1f %8.1f %6.2f %8.1f %6.2f\n", s->name, s->M, s->N,
               s->K, s->ta, s->tb, gf / t32, gf / tdf, t32 / tdf, gf / tbf, t32 / tbf);
        free(A);
        free(B);
        free(C);
    }
}

/* Training tokens/s of the tiny preset in `precision` over `steps` steps (the first not
 * timed); *final_loss: the last step's loss. */
static double s_train_tokens_per_s(const char *tmp, const char *precision, int steps,
                                   double *final_loss)
{
    char yaml[1024], root[512];
    snprintf(yaml, sizeof yaml,
             "name: bench\nmodel:\n  preset: tiny\ndata:\n  files:\n"
             "    - /usr/share/games/fortunes\n  seed: 3\ntrain:\n  steps: %d\n"
             "  global_batch: 16\n  seq_len: 128\n  lr: 3e-3\n  precision: %s\n"
             "checkpoint:\n  dir: unused\n",
             steps + 1, precision);
    snprintf(root, sizeof root, "%s/%s", tmp, precision);
    runspec_t *spec = calloc(1, sizeof *spec);
    trainer_t *t = NULL;
    if (!spec || runspec_load_string(yaml, precision, spec) != SHOAL_OK ||
        trainer_new(spec, root, &t) != SHOAL_OK || trainer_init_fresh(t) != SHOAL_OK) {
        fprintf(stderr, "bench_bf16: trainer (%s): %s\n", precision, shoal_errmsg());
        exit(1);
    }
    double t0 = 0;
    for (int k = 0; k <= steps; k++) {
        if (k == 1)
            t0 = clock_mono_s();
        trainer_step_info_t info;
        if (trainer_compute(t, 0, 1) != SHOAL_OK || trainer_apply(t, &info) != SHOAL_OK) {
            fprintf(stderr, "bench_bf16: step: %s\n", shoal_errmsg());
            exit(1);
        }
        *final_loss = info.loss;
    }
    const double tokens = (double)steps * spec->global_batch * spec->seq_len;
    const double dt = clock_mono_s() - t0;
    trainer_destroy(&t);
    free(spec);
    return tokens / dt;
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 1, steps = argc > 2 ? atoi(argv[2]) : 20;
    if (kgemm_check(KGEMM_BF16) != SHOAL_OK) {
        printf("SKIP: %s\n", shoal_errmsg());
        return 77;
    }
    openblas_set_num_threads(threads);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("bench_bf16: threads %d, OPENBLAS_CORETYPE=%s\n", threads, ct ? ct : "(unset)");
    s_bench_shapes();

    char tmp[] = "/tmp/shoal_bench_bf16_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    double l32 = 0, l16 = 0;
    const double tr32 = s_train_tokens_per_s(tmp, "fp32", steps, &l32);
    const double tr16 = s_train_tokens_per_s(tmp, "bf16", steps, &l16);
    printf("tiny training (global batch 16, seq 128, %d steps): fp32 %.0f tokens/s, bf16 %.0f "
           "tokens/s, bf16/fp32 = %.2f (final loss fp32 %.4f, bf16 %.4f)\n",
           steps, tr32, tr16, tr16 / tr32, l32, l16);
    fsutil_remove_tree(tmp);
    return 0;
}
