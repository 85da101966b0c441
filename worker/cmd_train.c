/* cmd_train.c: `shoal-worker train RUN.yaml`: single-process training with progress lines,
 * checkpoints every checkpoint.every_steps and resume from the newest complete one. */
#include "commands.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_select.h"
#include "clock.h"
#include "device.h"
#include "log.h"
#include "runspec.h"
#include "trainer.h"
#ifdef SHOAL_HAVE_CUDA
#include "gpu_module.h"
#endif

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_format_eta(double seconds, char *buf, size_t cap)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, cap, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, cap, "%lds", s);
}

/* The run's trainer: the CPU one, or on a CUDA device the GPU one (its host side then keeps
 * checkpoints), from the GPU module (gpu_module.h), loaded only then. Exactly one is set. */
typedef struct {
    trainer_t *cpu;
#ifdef SHOAL_HAVE_CUDA
    const gpu_module_t *gm;
    trainer_gpu_t *gpu;
#endif
} s_run_t;

/* Builds the trainer for `dev` and says once what computes: "device: cuda:0 NVIDIA H200
 * (139.8 GiB), precision bf16". */
static shoal_err_t s_run_new(const runspec_t *spec, const device_t *dev, s_run_t *r)
{
    char what[200];
    int bf16 = 0;
    shoal_err_t rc;
    device_describe(dev, what, sizeof what);
#ifdef SHOAL_HAVE_CUDA
    if (dev->kind == DEVICE_CUDA) {
        if ((rc = gpu_module_load(&r->gm)) != SHOAL_OK ||
            (rc = r->gm->trainer_new(spec, spec->checkpoint_dir, dev, &r->gpu)) != SHOAL_OK)
            return rc;
        printf("device: %s, precision %s\n", what, r->gm->trainer_bf16(r->gpu) ? "bf16" : "fp32");
        return SHOAL_OK;
    }
#endif
    if ((rc = runspec_precision_bf16(spec, 0, &bf16)) != SHOAL_OK ||
        (rc = trainer_new(spec, spec->checkpoint_dir, &r->cpu)) != SHOAL_OK)
        return rc;
    printf("device: %s, precision %s\n", what, bf16 ? "bf16 (oneDNN, fp32 accumulation)" : "fp32");
    return SHOAL_OK;
}

static void s_run_destroy(s_run_t *r)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        r->gm->trainer_destroy(&r->gpu);
#endif
    trainer_destroy(&r->cpu);
}

/* The trainer that holds checkpoints (the GPU trainer's host side). */
static trainer_t *s_run_host(s_run_t *r)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_host(r->gpu);
#endif
    return r->cpu;
}

static shoal_err_t s_run_resume(s_run_t *r, const char *init_dir, int64_t *resumed)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_resume(r->gpu, init_dir, resumed);
#endif
    return trainer_resume(r->cpu, init_dir, resumed);
}

static int64_t s_run_next_step(const s_run_t *r)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_next_step(r->gpu);
#endif
    return trainer_next_step(r->cpu);
}

static shoal_err_t s_run_step(s_run_t *r, trainer_step_info_t *info)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_step(r->gpu, info);
#endif
    shoal_err_t rc = trainer_compute(r->cpu, 0, 1);
    return rc == SHOAL_OK ? trainer_apply(r->cpu, info) : rc;
}

static int s_run_checkpoint_due(const s_run_t *r)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_checkpoint_due(r->gpu);
#endif
    return trainer_checkpoint_due(r->cpu);
}

static shoal_err_t s_run_checkpoint_async(s_run_t *r)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_checkpoint_async(r->gpu);
#endif
    return trainer_checkpoint_async(r->cpu);
}

static shoal_err_t s_run_export(s_run_t *r, const char *dir)
{
#ifdef SHOAL_HAVE_CUDA
    if (r->gpu)
        return r->gm->trainer_export(r->gpu, dir);
#endif
    return trainer_export(r->cpu, dir);
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: shoal-worker train RUN.yaml [--init-model DIR] [--metrics FILE.jsonl]\n"
               "                          [--export DIR] [--threads N] [--quiet]\n"
               "                          [--device cpu|cuda:N|auto]  (default auto)\n"
               "       shoal-worker train --default ...   (the embedded tiny-fortunes run)\n");
}

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"init-model", required_argument, 0, 'i'}, {"metrics", required_argument, 0, 'm'},
        {"export", required_argument, 0, 'e'},     {"threads", required_argument, 0, 't'},
        {"default", no_argument, 0, 'd'},          {"quiet", no_argument, 0, 'q'},
        {"device", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    const char *init_dir = NULL, *metrics_path = NULL, *export_dir = NULL;
    const char *device_arg = "auto";
    int threads = 0, use_default = 0, quiet = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': init_dir = optarg; break;
        case 'm': metrics_path = optarg; break;
        case 'e': export_dir = optarg; break;
        case 't': threads = commands_parse_count(optarg); break;
        case 'd': use_default = 1; break;
        case 'q': quiet = 1; break;
        case 'D': device_arg = optarg; break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return 2;
        }
    }
    if ((optind >= argc) == !use_default || threads < 0) {
        s_usage(stderr);
        return 2;
    }
    /* the device this run trains on (device.kind DEVICE_CUDA: the GPU path, bound to this
     * thread); auto says once when it falls back to the CPU */
    device_t device;
    if (device_select(device_arg, &device) != SHOAL_OK || device_bind(&device) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: --device: %s\n", shoal_errmsg());
        return 2;
    }
    runspec_t *spec = calloc(1, sizeof *spec);
    s_run_t run = {0};
    FILE *metrics = NULL;
    int ret = 1;
    shoal_err_t rc = use_default ? runspec_load_string(runspec_default_yaml(), "<default run>", spec)
                                 : runspec_load_file(argv[optind], spec);
    if (rc != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: %s\n", shoal_errmsg());
        goto out;
    }
    blas_select_set_threads(threads > 0 ? threads : spec->threads);
    blas_select_log("shoal-worker train");
    if ((rc = s_run_new(spec, &device, &run)) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: %s\n", shoal_errmsg());
        goto out;
    }
    int64_t resumed = 0;
    if ((rc = s_run_resume(&run, init_dir, &resumed)) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: %s\n", shoal_errmsg());
        goto out;
    }
    if (metrics_path && !(metrics = fopen(metrics_path, "a"))) {
        fprintf(stderr, "shoal-worker train: cannot open %s for appending\n", metrics_path);
        goto out;
    }
    trainer_t *t = s_run_host(&run); /* steps, checkpoint paths and writer */
    const int64_t total = trainer_total_steps(t);
    char resumed_dir[PATH_MAX];
    if (resumed > 0 &&
        trainer_checkpoint_path(t, resumed, resumed_dir, sizeof resumed_dir) == SHOAL_OK)
        printf("resumed run %s from %s\n", spec->name, resumed_dir);
    printf("training %s: %lld steps of %d x %d tokens, model %s (d %d, L %d, N %d, K %d)\n",
           spec->name, (long long)total, spec->global_batch, spec->seq_len, spec->model_preset,
           spec->model.hidden_size, spec->model.num_hidden_layers, spec->model.n_routed_experts,
           spec->model.num_experts_per_tok);
    fflush(stdout);
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    const double t_start = clock_mono_s();
    double first_loss = -1, last_loss = 0, tokens_done = 0, busy = 0;
    int64_t steps_done = 0, last_ckpt = resumed;
    while (s_run_next_step(&run) < total && !s_stop) {
        trainer_step_info_t info;
        if ((rc = s_run_step(&run, &info)) != SHOAL_OK) {
            fprintf(stderr, "shoal-worker train: %s\n", shoal_errmsg());
            goto out;
        }
        steps_done++;
        tokens_done += info.tokens;
        busy += info.step_seconds;
        if (first_loss < 0)
            first_loss = info.loss;
        last_loss = info.loss;
        const double tps = tokens_done / busy;
        char eta[32];
        s_format_eta((double)(total - info.step - 1) * info.tokens / tps, eta, sizeof eta);
        if (!quiet)
            printf("step %5lld/%lld  loss %.4f  lr %.3e  gnorm %.3f  %8.0f tok/s  ETA %s\n",
                   (long long)info.step + 1, (long long)total, info.loss, info.lr, info.grad_norm,
                   tps, eta);
        if (metrics)
            fprintf(metrics, "{\"step\":%lld,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                    "\"tokens_per_s\":%.1f,\"step_seconds\":%.6f}\n", (long long)info.step,
                    info.loss, info.lr, info.grad_norm, info.tokens / info.step_seconds,
                    info.step_seconds);
        fflush(stdout);
        if (s_run_checkpoint_due(&run)) {
            if ((rc = s_run_checkpoint_async(&run)) != SHOAL_OK) {
                fprintf(stderr, "shoal-worker train: checkpoint: %s\n", shoal_errmsg());
                goto out;
            }
            last_ckpt = s_run_next_step(&run);
        }
    }
    /* stopped by a signal: keep the steps done since the last checkpoint */
    if (s_stop && s_run_next_step(&run) != last_ckpt && s_run_next_step(&run) > 0) {
        if ((rc = s_run_checkpoint_async(&run)) != SHOAL_OK) {
            fprintf(stderr, "shoal-worker train: checkpoint: %s\n", shoal_errmsg());
            goto out;
        }
    }
    if ((rc = trainer_checkpoint_wait(t)) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: checkpoint: %s\n", shoal_errmsg());
        goto out;
    }
    if (export_dir && (rc = s_run_export(&run, export_dir)) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker train: export: %s\n", shoal_errmsg());
        goto out;
    }
    const double wall = clock_mono_s() - t_start;
    if (s_stop)
        printf("interrupted at step %lld/%lld (resume by running the same command)\n",
               (long long)s_run_next_step(&run), (long long)total);
    printf("summary: %lld steps in %.1f s, loss %.4f -> %.4f, %.0f tokens/s, checkpoints in %s\n",
           (long long)steps_done, wall, first_loss, last_loss,
           busy > 0 ? tokens_done / busy : 0.0, spec->checkpoint_dir);
    ret = s_stop ? 130 : 0;
out:
    if (metrics)
        fclose(metrics);
    s_run_destroy(&run);
    free(spec);
    return ret;
}
