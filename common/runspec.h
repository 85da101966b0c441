/* runspec.h: the run spec (RUN.yaml) of a training run: what to train, on what data, for how
 * long, and where checkpoints go. Parsed with libyaml from one descriptor table that drives
 * parsing, defaults, bounds and error messages (file:line:column). Keys are documented in the
 * README ("Run spec"). */
#ifndef SHOAL_RUNSPEC_H
#define SHOAL_RUNSPEC_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RUNSPEC_MAX_FILES 64
#define RUNSPEC_PATH_MAX 1024

typedef struct {
    char name[128];                  /* name: run name, [A-Za-z0-9._-]+ */
    char model_preset[32];           /* model.preset (default "tiny") */
    model_config_t model;            /* the preset with model.<key> overrides applied */
    int n_data_files;
    char data_files[RUNSPEC_MAX_FILES][RUNSPEC_PATH_MAX]; /* data.files (text files) */
    uint64_t data_seed;              /* data.seed (default 0) */
    int steps;                       /* train.steps */
    int global_batch;                /* train.global_batch: sequences per step (G) */
    int seq_len;                     /* train.seq_len (T) */
    int micro_batch;                 /* train.micro_batch: sequences per forward/backward */
    double lr, min_lr;               /* train.lr, train.min_lr (default 0) */
    int warmup_steps;                /* train.warmup_steps (default steps/10) */
    double weight_decay;             /* train.weight_decay (default 0.1) */
    double clip_grad_norm;           /* train.clip_grad_norm (default 1.0) */
    double beta1, beta2, adam_eps;   /* train.beta1/beta2/eps (0.9, 0.95, 1e-8) */
    uint64_t init_seed;              /* train.init_seed: parameter init (default 1) */
    int threads;                     /* train.threads: BLAS threads (default 1) */
    char precision[8];               /* train.precision: "auto" (default), "fp32" or "bf16";
                                      * resolve with runspec_precision_bf16() */
    char grad_sum[8];                /* train.grad_sum: "exact" (default) or "float" */
    double grad_sanity_k;            /* train.grad_sanity_k: reject a replica's gradient whose
                                      * norm exceeds k x the running median, or non-finite
                                      * (default 10; 0 = checks off) */
    char aggregation[16];            /* train.aggregation: "sum" (default) or "trimmed_mean" */
    double trim;                     /* train.trim: fraction trimmed from each end (0.25) */
    char checkpoint_dir[RUNSPEC_PATH_MAX]; /* checkpoint.dir (default "checkpoints") */
    int checkpoint_every;            /* checkpoint.every_steps (default 0 = only at the end) */
    int checkpoint_keep;             /* checkpoint.keep (default 3) */
    int checkpoint_replicas;         /* checkpoint.replicas: copies of each shard on other
                                      * workers (default 2; 0 = the writer's only) */
    int pp;                          /* parallel.pipeline_stages (default 1) */
    int ep;                          /* parallel.expert_parallel (default 1) */
    int dp;                          /* parallel.data_parallel; 0 = auto (the default) */
    char dp_text[16];                /* parallel.data_parallel as parsed ("auto" or digits); the
                                      * loader sets dp from it; dp is the value code reads */
} runspec_t;

/* Tokens per forward/backward pass the default micro-batch aims at: about 1K tokens keep one
 * layer's activations in a core's L2 cache, which measured 10-20% faster than whole-batch
 * passes on the tiny preset (bench_train). */
#define RUNSPEC_MICRO_BATCH_TOKENS 1024

/* The default train.micro_batch: the largest divisor of global_batch with
 * micro_batch · seq_len <= RUNSPEC_MICRO_BATCH_TOKENS (at least 1). */
int runspec_default_micro_batch(int global_batch, int seq_len);

/* Micro-batches of one step: global_batch / micro_batch. */
static inline int runspec_n_micro(const runspec_t *spec)
{
    return spec->micro_batch > 0 ? spec->global_batch / spec->micro_batch : 0;
}

/* Whether `dp` replicas can share a step: with ep > 1 every (replica, ep rank) pair takes whole
 * micro-batches, so the step's micro-batches must be divisible by dp * ep. */
int runspec_dp_fits(const runspec_t *spec, int dp);

/* Whether train.grad_sum is `exact` (the default): gradients summed in binned int64 fixed point
 * (kernels/xsum.h), bitwise independent of how micro-batches are spread over workers. */
int runspec_grad_sum_exact(const runspec_t *spec);

/* Whether train.aggregation is `trimmed_mean` (coordinate-wise over data-parallel replicas). */
int runspec_trimmed_mean(const runspec_t *spec);

/* train.precision for a trainer on a GPU (on_gpu 1) or the CPU: 1 for bf16 matrix arithmetic,
 * 0 for fp32. "auto" is bf16 on a GPU, fp32 on the CPU; "bf16" is bf16 on both (whether this
 * CPU can is the CPU trainer's check, kgemm_check). Never fails today (kept for callers). */
shoal_err_t runspec_precision_bf16(const runspec_t *spec, int on_gpu, int *bf16);

/* Fills the defaults of every optional key (preset tiny, ...); required keys are left unset (0),
 * and so are micro_batch and warmup_steps, which the loader derives from global_batch and steps. */
void runspec_defaults(runspec_t *spec);

/* Parses a YAML file. Unknown keys, wrong types, out-of-range values, duplicate keys and
 * missing required keys fail with SHOAL_ERR_INVALID and a message "FILE:LINE:COLUMN: ..."
 * (1-based). Relative data file paths are resolved against the YAML file's directory. */
shoal_err_t runspec_load_file(const char *path, runspec_t *spec);

/* Same, from a string; `origin` names it in messages; relative paths stay as written. */
shoal_err_t runspec_load_string(const char *yaml, const char *origin, runspec_t *spec);

/* Checks a spec built or changed in code (bounds of every key, the model, the rules between
 * keys) as the loader does; SHOAL_ERR_INVALID with "train.lr: must be > 0, <= 10, got 0". */
shoal_err_t runspec_validate(const runspec_t *spec);

/* Prints the Markdown table of every key (type, default, bounds, meaning) that the README's
 * "Run spec" section holds; generated from the same table the parser uses. */
void runspec_describe(FILE *out);

/* Serialises the spec back to YAML (every key, resolved values). Caller frees. */
char *runspec_to_yaml(const runspec_t *spec);

/* The embedded default run (tiny preset on Debian's fortunes corpus) as YAML text. */
const char *runspec_default_yaml(void);

#ifdef __cplusplus
}
#endif
#endif
