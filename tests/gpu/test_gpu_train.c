/* test_gpu_train: the whole training step on the GPU (worker/trainer_gpu.h) against the CPU
 * trainer, from the same initialisation and data:
 *   1. fp32: per-step loss within 1e-4 relative of the CPU's for STEPS steps;
 *   2. bf16: per-step loss within 2e-2 relative (see S_BF16_TOL);
 *   3. determinism: two fresh GPU runs (each precision) end with bitwise equal parameters;
 *   5. the fused causal attention (MODEL_GPU_FUSED_ATTENTION) in fp32 within 1e-4 of the CPU;
 *   4. a GPU checkpoint resumes on the CPU trainer with bitwise the GPU's parameters;
 *   0. first, the fused AdamW launch (adamw_update_segments_cuda) against its CPU twin, bitwise,
 *      over the tiny model's segments, with and without clipping.
 * Exit 77 ("no CUDA device: <reason>") without a GPU. `--verbose` prints every step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "device.h"
#include "model_gpu.h"
#include "model_gpu_plan.h"
#include "optim.h"
#include "runspec.h"
#include "trainer.h"
#include "trainer_gpu.h"

#define STEPS 6
#define S_FP32_TOL 1e-4
/* bf16 rounds every matmul operand to 8 significant bits (unit roundoff 2^-9 ≈ 2e-3); with fp32
 * accumulation the logits carry errors of a few 1e-3 relative, which the loss (≈ ln 256 at the
 * start, falling) sees at about that size, growing as the bf16 and fp32 trajectories part over
 * the steps' updates. 2e-2 leaves room for that drift over STEPS steps while a broken bf16 GEMM
 * (wrong operand, transposition, scale) moves the loss by far more after a step or two of
 * training at lr 3e-3. */
#define S_BF16_TOL 2e-2

static int s_verbose;
static char s_dir[64];

static void s_die(const char *what)
{
    fprintf(stderr, "test_gpu_train: %s: %s\n", what, shoal_errmsg());
    exit(1);
}

/* A deterministic text-like corpus (the GPU machine may lack the fortunes package). */
static void s_write_corpus(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    static const char *words[] = {"the ", "shoal ", "of ", "fish ", "moves ", "as ", "one ",
                                  "body", ", ", ".\n", "and ", "turns ", "when ", "a ", "shark ",
                                  "comes ", "near"};
    uint64_t x = 7;
    for (int i = 0; i < 40000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        fputs(words[(x >> 33) % (sizeof words / sizeof words[0])], f);
    }
    fclose(f);
}

static void s_spec(runspec_t *spec, const char *precision, const char *ckpt)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "name: gpu-train\n"
             "model:\n  preset: tiny\n"
             "data:\n  files:\n    - %s/corpus.txt\n  seed: 5\n"
             "train:\n  steps: %d\n  global_batch: 8\n  seq_len: 64\n  micro_batch: 4\n"
             "  lr: 3e-3\n  warmup_steps: 2\n  precision: %s\n"
             "checkpoint:\n  dir: %s/%s\n",
             s_dir, STEPS, precision, s_dir, ckpt);
    if (runspec_load_string(yaml, "test_gpu_train", spec) != SHOAL_OK)
        s_die("run spec");
}

static void s_cpu_losses(double *loss)
{
    runspec_t spec;
    trainer_t *t = NULL;
    int64_t resumed;
    s_spec(&spec, "fp32", "cpu");
    if (trainer_new(&spec, spec.checkpoint_dir, &t) != SHOAL_OK ||
        trainer_resume(t, NULL, &resumed) != SHOAL_OK)
        s_die("cpu trainer");
    for (int k = 0; k < STEPS; k++) {
        trainer_step_info_t info;
        if (trainer_compute(t, 0, 1) != SHOAL_OK || trainer_apply(t, &info) != SHOAL_OK)
            s_die("cpu step");
        loss[k] = info.loss;
    }
    trainer_destroy(&t);
}

/* A fresh GPU run of STEPS steps: losses, and the final parameters (malloc'd) in *params. */
static trainer_gpu_t *s_gpu_run(const device_t *dev, const char *precision, int flags,
                                const char *ckpt, double *loss, float **params, int64_t *n)
{
    runspec_t spec;
    trainer_gpu_t *t = NULL;
    int64_t resumed;
    s_spec(&spec, precision, ckpt);
    if (trainer_gpu_new_flags(&spec, spec.checkpoint_dir, dev, flags, &t) != SHOAL_OK ||
        trainer_gpu_resume(t, NULL, &resumed) != SHOAL_OK)
        s_die("gpu trainer");
    if (resumed != 0) {
        fprintf(stderr, "test_gpu_train: %s resumed at %lld (stale directory?)\n", ckpt,
                (long long)resumed);
        exit(1);
    }
    for (int k = 0; k < STEPS; k++) {
        trainer_step_info_t info;
        if (trainer_gpu_step(t, &info) != SHOAL_OK)
            s_die("gpu step");
        loss[k] = info.loss;
    }
    if (trainer_gpu_sync_host(t) != SHOAL_OK)
        s_die("gpu state to host");
    const float *p = trainer_params(trainer_gpu_host(t), n);
    *params = malloc(sizeof(float) * (size_t)*n);
    if (!*params)
        exit(1);
    memcpy(*params, p, sizeof(float) * (size_t)*n);
    return t;
}

/* 0. adamw_update_segments_cuda vs adamw_update_segments: p, m, v bitwise equal. */
static int s_fused_adamw(void)
{
    model_config_t cfg;
    model_layout_t lay;
    model_gpu_plan_t plan;
    model_config_tiny(&cfg);
    if (model_layout_init(&lay, &cfg) != SHOAL_OK || model_gpu_plan_init(&plan, &lay) != SHOAL_OK)
        s_die("plan");
    const size_t n = (size_t)lay.n_params, bytes = sizeof(float) * n;
    float *h[4], *back[4], *dev[4];
    adamw_segment_t *dsegs;
    uint64_t x = 99;
    for (int j = 0; j < 4; j++) {
        h[j] = malloc(bytes);
        back[j] = malloc(bytes);
        if (!h[j] || !back[j] || cudaMalloc((void **)&dev[j], bytes) != cudaSuccess)
            exit(1);
        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            const float r = (float)((double)(x >> 11) / 9007199254740992.0) - 0.5f;
            h[j][i] = j == 3 ? r * r : r; /* v >= 0 */
        }
        if (cudaMemcpy(dev[j], h[j], bytes, cudaMemcpyHostToDevice) != cudaSuccess)
            exit(1);
    }
    if (cudaMalloc((void **)&dsegs, sizeof *dsegs * (size_t)plan.n_segments) != cudaSuccess ||
        cudaMemcpy(dsegs, plan.segments, sizeof *dsegs * (size_t)plan.n_segments,
                   cudaMemcpyHostToDevice) != cudaSuccess)
        exit(1);
    const adamw_hparams_t hp = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    int fails = 0;
    for (int c = 0; c < 2; c++) {
        const float coef = c ? 0.29f : 1.0f;
        adamw_update_segments(h[0], h[1], h[2], h[3], plan.segments, plan.n_segments, 2e-3f,
                              coef, 3 + c, &hp);
        if (adamw_update_segments_cuda(dev[0], dev[1], dev[2], dev[3], dsegs, plan.n_segments,
                                       plan.n_trainable, 2e-3f, coef, 3 + c, &hp, 0) != SHOAL_OK)
            s_die("adamw_update_segments_cuda");
        /* the CPU twin scales g in place; the device reads it scaled on the fly: keep them level */
        if (cudaMemcpy(dev[1], h[1], bytes, cudaMemcpyHostToDevice) != cudaSuccess)
            exit(1);
        for (int j = 0; j < 4; j++)
            if (j != 1 && (cudaMemcpy(back[j], dev[j], bytes, cudaMemcpyDeviceToHost) != cudaSuccess ||
                           memcmp(back[j], h[j], bytes) != 0)) {
                printf("  fused AdamW: array %d differs from the CPU twin (clip %g)\n", j,
                       (double)coef);
                fails++;
            }
    }
    printf("%-28s %s\n", "fused AdamW vs cpu twin", fails ? "FAIL" : "ok (bitwise)");
    for (int j = 0; j < 4; j++) {
        free(h[j]);
        free(back[j]);
        cudaFree(dev[j]);
    }
    cudaFree(dsegs);
    model_gpu_plan_fini(&plan);
    model_layout_fini(&lay);
    return fails ? 1 : 0;
}

static int s_compare(const char *name, const double *cpu, const double *gpu, double tol)
{
    double worst = 0;
    for (int k = 0; k < STEPS; k++) {
        const double rel = fabs(gpu[k] - cpu[k]) / fabs(cpu[k]);
        worst = rel > worst ? rel : worst;
        if (s_verbose || rel > tol)
            printf("  %s step %d: cpu %.7f gpu %.7f rel %.2e%s\n", name, k, cpu[k], gpu[k], rel,
                   rel > tol ? "  <-- over tolerance" : "");
    }
    printf("%-28s worst rel %.2e (tol %.0e): %s\n", name, worst, tol, worst <= tol ? "ok" : "FAIL");
    return worst <= tol ? 0 : 1;
}

static int s_same_bits(const char *name, const float *a, const float *b, int64_t n)
{
    const int same = memcmp(a, b, sizeof(float) * (size_t)n) == 0;
    printf("%-28s %s\n", name, same ? "ok (bitwise)" : "FAIL (parameters differ)");
    return same ? 0 : 1;
}

int main(int argc, char **argv)
{
    s_verbose = argc > 1 && strcmp(argv[1], "--verbose") == 0;
    device_t dev;
    if (device_cuda_count() < 1 || device_select("cuda:0", &dev) != SHOAL_OK) {
        printf("no CUDA device: %s\n", device_cuda_count() < 1 ? "none usable here (no GPU, no "
               "driver, or a build without CUDA)" : shoal_errmsg());
        return 77;
    }
    snprintf(s_dir, sizeof s_dir, "/tmp/shoal-gputrain-XXXXXX");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/corpus.txt", s_dir);
    s_write_corpus(path);
    int fails = s_fused_adamw();
    double cpu[STEPS], g32[STEPS], g32b[STEPS], g16[STEPS], g16b[STEPS];
    float *p32 = NULL, *p32b = NULL, *p16 = NULL, *p16b = NULL;
    int64_t n = 0;
    s_cpu_losses(cpu);
    trainer_gpu_t *t = s_gpu_run(&dev, "fp32", 0, "gpu32", g32, &p32, &n);
    fails += s_compare("fp32 loss vs cpu", cpu, g32, S_FP32_TOL);
    /* 4. the GPU's checkpoint resumed by the CPU trainer */
    if (trainer_gpu_checkpoint_async(t) != SHOAL_OK || trainer_gpu_checkpoint_wait(t) != SHOAL_OK)
        s_die("gpu checkpoint");
    trainer_gpu_destroy(&t);
    {
        runspec_t spec;
        trainer_t *c = NULL;
        int64_t resumed = 0, nc = 0;
        s_spec(&spec, "fp32", "gpu32");
        if (trainer_new(&spec, spec.checkpoint_dir, &c) != SHOAL_OK ||
            trainer_resume(c, NULL, &resumed) != SHOAL_OK)
            s_die("cpu resume of the gpu checkpoint");
        const float *pc = trainer_params(c, &nc);
        const int ok = resumed == STEPS && nc == n;
        printf("%-28s %s\n", "gpu checkpoint -> cpu", ok ? "resumed at the last step" : "FAIL");
        fails += !ok;
        if (ok)
            fails += s_same_bits("gpu checkpoint params", p32, pc, n);
        trainer_destroy(&c);
    }
    t = s_gpu_run(&dev, "fp32", 0, "gpu32b", g32b, &p32b, &n);
    trainer_gpu_destroy(&t);
    fails += s_same_bits("fp32 determinism", p32, p32b, n);
    t = s_gpu_run(&dev, "bf16", 0, "gpu16", g16, &p16, &n);
    trainer_gpu_destroy(&t);
    fails += s_compare("bf16 loss vs cpu", cpu, g16, S_BF16_TOL);
    t = s_gpu_run(&dev, "bf16", 0, "gpu16b", g16b, &p16b, &n);
    trainer_gpu_destroy(&t);
    fails += s_same_bits("bf16 determinism", p16, p16b, n);
    /* bf16 must differ from fp32 somewhere, or the bf16 switch did nothing */
    const int differs = memcmp(p16, p32, sizeof(float) * (size_t)n) != 0;
    printf("%-28s %s\n", "bf16 path is not fp32", differs ? "ok" : "FAIL (same bits as fp32)");
    fails += !differs;
    /* 5. the fused attention */
    double gfa[STEPS];
    float *pfa = NULL;
    t = s_gpu_run(&dev, "fp32", MODEL_GPU_FUSED_ATTENTION, "gpufa", gfa, &pfa, &n);
    trainer_gpu_destroy(&t);
    fails += s_compare("fp32 fused attn vs cpu", cpu, gfa, S_FP32_TOL);
    free(pfa);
    free(p32);
    free(p32b);
    free(p16);
    free(p16b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_gpu_train: could not remove %s\n", s_dir);
    printf("test_gpu_train: %s\n", fails ? "FAIL" : "PASS");
    return fails ? 1 : 0;
}
