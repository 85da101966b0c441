/* runspec.c: the RUN.yaml parser: its descriptor table (common/cfgtable.h drives parsing,
 * defaults, bounds and FILE:LINE:COLUMN errors), the rules between keys, runspec_to_yaml and
 * the README key table. */
#include "runspec.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgtable.h"
#include "numparse.h"

/* ---- the descriptor table ------------------------------------------------------------------ */

static int s_preset_check(const char *value, char *msg, size_t cap)
{
    model_config_t scratch;
    if (model_config_preset(value, &scratch) == SHOAL_OK)
        return 1;
    snprintf(msg, cap, "unknown model preset (known: tiny, small)");
    return 0;
}

/* parallel.data_parallel: `auto` or a whole number of replicas >= 1. */
static int s_dp_check(const char *value, char *msg, size_t cap)
{
    int64_t v;
    if (strcmp(value, "auto") == 0 || (numparse_i64(value, 1, 1 << 20, &v) == SHOAL_OK))
        return 1;
    snprintf(msg, cap, "must be `auto` or an integer >= 1, <= 1048576");
    return 0;
}

/* train.precision: `auto`, `fp32` or `bf16`. */
static int s_precision_check(const char *value, char *msg, size_t cap)
{
    if (strcmp(value, "auto") == 0 || strcmp(value, "fp32") == 0 || strcmp(value, "bf16") == 0)
        return 1;
    snprintf(msg, cap, "must be `auto`, `fp32` or `bf16`");
    return 0;
}

/* train.grad_sum: `exact` or `float`. */
static int s_grad_sum_check(const char *value, char *msg, size_t cap)
{
    if (strcmp(value, "exact") == 0 || strcmp(value, "float") == 0)
        return 1;
    snprintf(msg, cap, "must be `exact` or `float`");
    return 0;
}

int runspec_grad_sum_exact(const runspec_t *spec)
{
    return strcmp(spec->grad_sum, "float") != 0;
}

/* train.aggregation: `sum` or `trimmed_mean`. */
static int s_aggregation_check(const char *value, char *msg, size_t cap)
{
    if (strcmp(value, "sum") == 0 || strcmp(value, "trimmed_mean") == 0)
        return 1;
    snprintf(msg, cap, "must be `sum` or `trimmed_mean`");
    return 0;
}

int runspec_trimmed_mean(const runspec_t *spec)
{
    return strcmp(spec->aggregation, "trimmed_mean") == 0;
}

shoal_err_t runspec_precision_bf16(const runspec_t *spec, int on_gpu, int *bf16)
{
    const char *p = spec->precision[0] ? spec->precision : "auto";
    *bf16 = strcmp(p, "bf16") == 0 || (on_gpu && strcmp(p, "auto") == 0);
    return SHOAL_OK;
}

/* One descriptor per few lines reads better than one field per line. */
/* clang-format off */
#define S_AT(f) .offset = offsetof(runspec_t, f), .size = sizeof(((runspec_t *)0)->f)
#define S_MODEL(k, t, h)                                                                      \
    {.key = "model." #k, .type = t, S_AT(model.k), .flags = CFG_DEFERRED, .def_doc = "preset", \
     .help = h}

static const cfg_desc_t s_desc[] = {
    {.key = "name", .type = CFG_STR, S_AT(name), .flags = CFG_REQUIRED | CFG_NAME | CFG_NONEMPTY,
     .help = "run name; names the run in logs, metrics and the coordinator"},
    {.key = "model.preset", .type = CFG_STR, S_AT(model_preset), .flags = CFG_NONEMPTY,
     .check = s_preset_check, .def = "tiny",
     .help = "model preset (`tiny`, `small`, MODEL.md); the `model.*` keys below override it, "
             "whatever their order in the file"},
    S_MODEL(vocab_size, CFG_INT, "V: tokens; 256 = raw bytes"),
    S_MODEL(hidden_size, CFG_INT, "d: model width"),
    S_MODEL(num_hidden_layers, CFG_INT, "L: blocks"),
    S_MODEL(num_attention_heads, CFG_INT, "H: heads; head dim d/H must be even"),
    S_MODEL(intermediate_size, CFG_INT, "f: hidden width of the dense FFN layers"),
    S_MODEL(moe_intermediate_size, CFG_INT, "fe: hidden width of one expert"),
    S_MODEL(n_routed_experts, CFG_INT, "N: routed experts per MoE layer"),
    S_MODEL(n_shared_experts, CFG_INT, "ns: shared experts (0 allowed)"),
    S_MODEL(num_experts_per_tok, CFG_INT, "K: routed experts per token"),
    S_MODEL(n_group, CFG_INT, "expert groups of group-limited routing (1 = off)"),
    S_MODEL(topk_group, CFG_INT, "groups kept by group-limited routing"),
    S_MODEL(first_k_dense_replace, CFG_INT, "layers l < this use the dense FFN"),
    S_MODEL(routed_scaling_factor, CFG_REAL, "multiplies the routed gates"),
    S_MODEL(rms_norm_eps, CFG_REAL, "RMSNorm epsilon"),
    S_MODEL(rope_theta, CFG_REAL, "RoPE base"),
    S_MODEL(max_position_embeddings, CFG_INT, "longest sequence the model accepts"),
    S_MODEL(bias_update_speed, CFG_REAL, "gamma: step of the aux-loss-free balancing bias"),
    {.key = "data.files", .type = CFG_STRLIST, .offset = offsetof(runspec_t, data_files),
     .size = RUNSPEC_PATH_MAX, .count_offset = offsetof(runspec_t, n_data_files),
     .list_max = RUNSPEC_MAX_FILES, .flags = CFG_REQUIRED | CFG_PATH,
     .help = "training text: one path or a list of paths (at most 64), each a text file or a "
             "directory (every regular file in it not ending in `.dat` or `.u8`); relative "
             "paths are relative to the run spec's directory"},
    {.key = "data.seed", .type = CFG_U64, S_AT(data_seed), .def = "0",
     .help = "seed of the data order"},
    {.key = "train.steps", .type = CFG_INT, S_AT(steps), .flags = CFG_REQUIRED, .min = 1,
     .max = 1e9,
     .help = "optimizer steps of the run"},
    {.key = "train.global_batch", .type = CFG_INT, S_AT(global_batch), .flags = CFG_REQUIRED,
     .min = 1, .max = 1 << 20,
     .help = "sequences per optimizer step (G); the math of a step does not depend on how "
             "many workers share it"},
    {.key = "train.seq_len", .type = CFG_INT, S_AT(seq_len), .flags = CFG_REQUIRED, .min = 1,
     .max = 1 << 20, .rule = "<= `model.max_position_embeddings`",
     .help = "tokens per sequence (T)"},
    {.key = "train.micro_batch", .type = CFG_INT, S_AT(micro_batch), .min = 1, .max = 1 << 20,
     .def_doc = "largest divisor of `train.global_batch` with micro_batch x seq_len <= 1024 tokens",
     .rule = "divides `train.global_batch`",
     .help = "sequences per forward/backward pass; gradients are accumulated over "
             "global_batch / micro_batch passes"},
    {.key = "train.lr", .type = CFG_REAL, S_AT(lr), .flags = CFG_REQUIRED | CFG_MIN_OPEN,
     .min = 0, .max = 10, .help = "peak learning rate, reached at the end of the warmup"},
    {.key = "train.min_lr", .type = CFG_REAL, S_AT(min_lr), .def = "0", .min = 0, .max = 10,
     .rule = "<= `train.lr`", .help = "learning rate the schedule decays to by the last step"},
    {.key = "train.warmup_steps", .type = CFG_INT, S_AT(warmup_steps), .min = 0, .max = 1e9,
     .def_doc = "`train.steps` / 10", .rule = "<= `train.steps`",
     .help = "steps of learning-rate warmup up to `train.lr`"},
    {.key = "train.weight_decay", .type = CFG_REAL, S_AT(weight_decay), .def = "0.1", .min = 0,
     .max = 10, .help = "AdamW decoupled weight decay"},
    {.key = "train.clip_grad_norm", .type = CFG_REAL, S_AT(clip_grad_norm), .def = "1.0",
     .min = 0, .max = 1e9, .help = "clip the global gradient L2 norm to this; 0 disables clipping"},
    {.key = "train.beta1", .type = CFG_REAL, S_AT(beta1), .def = "0.9", .min = 0, .max = 1,
     .flags = CFG_MAX_OPEN, .help = "AdamW first-moment decay"},
    {.key = "train.beta2", .type = CFG_REAL, S_AT(beta2), .def = "0.95", .min = 0, .max = 1,
     .flags = CFG_MAX_OPEN, .help = "AdamW second-moment decay"},
    {.key = "train.eps", .type = CFG_REAL, S_AT(adam_eps), .def = "1e-8", .min = 0, .max = 1,
     .flags = CFG_MIN_OPEN, .help = "AdamW epsilon"},
    {.key = "train.init_seed", .type = CFG_U64, S_AT(init_seed), .def = "1",
     .help = "seed of the parameter initialisation"},
    {.key = "train.threads", .type = CFG_INT, S_AT(threads), .def = "1", .min = 1, .max = 1024,
     .help = "compute threads per worker process (GEMM blocks and kernel loops; same bits at any count)"},
    {.key = "train.precision", .type = CFG_STR, S_AT(precision), .check = s_precision_check,
     .def = "auto",
     .help = "matrix arithmetic: `fp32`, or `bf16` (bf16 inputs, fp32 accumulation; master "
             "weights and AdamW state stay fp32; on the CPU needs AVX512_BF16 or AMX and oneDNN); "
             "`auto` = bf16 on a GPU, fp32 on the CPU"},
    {.key = "train.grad_sum", .type = CFG_STR, S_AT(grad_sum), .check = s_grad_sum_check,
     .def = "exact",
     .help = "how gradients are summed over micro-batches and workers: `exact` (binned int64 "
             "fixed point: the same bits whatever the number of workers, pipeline stages or "
             "faults) or `float` (fp32 sums in rank order: faster, bits depend on the "
             "topology)"},
    {.key = "train.grad_sanity_k", .type = CFG_REAL, S_AT(grad_sanity_k), .def = "0", .min = 0,
     .max = 1e9, .rule = "0 (off) or > 1",
     .help = "data-parallel gradient sanity: a replica whose gradient is non-finite, or whose "
             "norm exceeds k x the running median of its peers' norms, is left out of the step "
             "(the mean is over the accepted replicas) and reported to the coordinator, which "
             "quarantines its worker; 0 (the default) turns the checks off: they are for runs "
             "with untrusted donors, and an honest micro-batch k times its peers' is rejected "
             "too, so results then depend on how the batch is split over replicas"},
    {.key = "train.aggregation", .type = CFG_STR, S_AT(aggregation), .check = s_aggregation_check,
     .def = "sum",
     .help = "how data-parallel replicas' gradients combine: `sum` (the batch's gradient) or "
             "`trimmed_mean` (per coordinate, the replicas' values sorted, `train.trim` of them "
             "dropped at each end, the rest averaged: robust to a replica that lies)"},
    {.key = "train.trim", .type = CFG_REAL, S_AT(trim), .def = "0.25", .min = 0, .max = 0.5,
     .flags = CFG_MAX_OPEN,
     .help = "`trimmed_mean`: fraction of the replicas dropped at each end of each coordinate "
             "(floor(trim x replicas))"},
    {.key = "parallel.pipeline_stages", .type = CFG_INT, S_AT(pp), .def = "1", .min = 1,
     .max = 1 << 16, .rule = "<= `model.num_hidden_layers`",
     .help = "pipeline stages (pp): contiguous layer ranges, balanced by FLOPs per token; the "
             "planner raises it when a cell does not fit its worker's memory"},
    {.key = "parallel.expert_parallel", .type = CFG_INT, S_AT(ep), .def = "1", .min = 1,
     .max = MODEL_MAX_EXPERTS, .rule = "divides `model.n_routed_experts`",
     .help = "expert-parallel ranks (ep) per stage: each holds N/ep routed experts of every "
             "MoE layer; tokens are exchanged all-to-all"},
    {.key = "parallel.data_parallel", .type = CFG_STR, S_AT(dp_text), .check = s_dp_check,
     .def = "auto",
     .rule = "with ep > 1, dp x ep divides global_batch / micro_batch",
     .help = "replicas (dp), or `auto`: as many whole replicas of pp x ep workers as the live "
             "workers allow; workers beyond them wait as spares (state `standby`)"},
    {.key = "checkpoint.dir", .type = CFG_STR, S_AT(checkpoint_dir), .flags = CFG_NONEMPTY,
     .def = "checkpoints",
     .help = "where checkpoints go, kept as written: a relative path is resolved by the "
             "trainer, against the current directory for `shoal-worker train` and against the "
             "worker's state dir in daemon mode"},
    {.key = "checkpoint.every_steps", .type = CFG_INT, S_AT(checkpoint_every), .def = "0",
     .min = 0, .max = 1e9, .help = "checkpoint every N steps; 0 = only at the end of the run"},
    {.key = "checkpoint.keep", .type = CFG_INT, S_AT(checkpoint_keep), .def = "3", .min = 1,
     .max = 1e6, .help = "committed checkpoints kept; older ones are deleted"},
    {.key = "checkpoint.replicas", .type = CFG_INT, S_AT(checkpoint_replicas), .def = "2",
     .min = 0, .max = 16,
     .help = "copies of each checkpoint shard kept by other workers, besides its writer's "
             "(no shared file system needed); 0 = off"},
};
/* clang-format on */
#define S_NDESC ((int)(sizeof s_desc / sizeof s_desc[0]))

/* Sections in file order; index 0 is the top level (keys without a dot). */
static const char *const s_sections[] = {"", "model", "data", "train", "parallel", "checkpoint"};

static shoal_err_t s_finish(cfg_reader_t *r, void *obj);

static const cfgtable_t s_table = {
    .desc = s_desc,
    .n_desc = S_NDESC,
    .sections = s_sections,
    .n_sections = (int)(sizeof s_sections / sizeof s_sections[0]),
    .what = "run spec",
    .finish = s_finish,
};

/* ---- rules between keys, derived defaults ---------------------------------------------------- */

/* Checks the rules between keys. Returns 1 when valid; else 0 with `msg`, the key to blame and
 * a second key to blame when the first was not written in the file. */
static int s_check_cross(const runspec_t *s, char *msg, size_t cap, const char **blame,
                         const char **blame2)
{
    *blame2 = NULL;
    if (s->seq_len > s->model.max_position_embeddings) {
        *blame = "train.seq_len";
        *blame2 = "model.max_position_embeddings";
        snprintf(msg, cap, "must be <= model.max_position_embeddings (%d), got %d",
                 s->model.max_position_embeddings, s->seq_len);
        return 0;
    }
    if (s->micro_batch < 1 || s->global_batch % s->micro_batch != 0) {
        *blame = "train.micro_batch";
        *blame2 = "train.global_batch";
        snprintf(msg, cap, "must divide train.global_batch (%d), got %d", s->global_batch,
                 s->micro_batch);
        return 0;
    }
    if (s->min_lr > s->lr) {
        *blame = "train.min_lr";
        *blame2 = "train.lr";
        snprintf(msg, cap, "must be <= train.lr (%g), got %g", s->lr, s->min_lr);
        return 0;
    }
    if (s->pp > s->model.num_hidden_layers) {
        *blame = "parallel.pipeline_stages";
        *blame2 = "model.num_hidden_layers";
        snprintf(msg, cap, "must be <= model.num_hidden_layers (%d), got %d",
                 s->model.num_hidden_layers, s->pp);
        return 0;
    }
    if (s->ep < 1 || s->model.n_routed_experts % s->ep != 0) {
        *blame = "parallel.expert_parallel";
        *blame2 = "model.n_routed_experts";
        snprintf(msg, cap, "must divide model.n_routed_experts (%d), got %d",
                 s->model.n_routed_experts, s->ep);
        return 0;
    }
    if (s->dp < 0) {
        *blame = "parallel.data_parallel";
        snprintf(msg, cap, "must be auto (0) or >= 1, got %d", s->dp);
        return 0;
    }
    if (!runspec_dp_fits(s, s->dp ? s->dp : 1)) {
        *blame = s->dp ? "parallel.data_parallel" : "parallel.expert_parallel";
        *blame2 = "train.global_batch";
        snprintf(msg, cap,
                 "the %d micro-batches of a step (train.global_batch %d / train.micro_batch %d) "
                 "must be divisible by data_parallel x expert_parallel (%d x %d)",
                 runspec_n_micro(s), s->global_batch, s->micro_batch, s->dp ? s->dp : 1, s->ep);
        return 0;
    }
    if (s->grad_sanity_k > 0 && s->grad_sanity_k <= 1) {
        *blame = "train.grad_sanity_k";
        snprintf(msg, cap, "must be 0 (off) or > 1 (at most 1 rejects honest replicas), got %g",
                 s->grad_sanity_k);
        return 0;
    }
    if (s->warmup_steps > s->steps) {
        *blame = "train.warmup_steps";
        *blame2 = "train.steps";
        snprintf(msg, cap, "must be <= train.steps (%d), got %d", s->steps, s->warmup_steps);
        return 0;
    }
    return 1;
}

int runspec_dp_fits(const runspec_t *spec, int dp)
{
    int64_t n = runspec_n_micro(spec), k = (int64_t)dp * spec->ep;
    return spec->ep <= 1 || (k > 0 && n % k == 0);
}

/* dp from its parsed text (checked by s_dp_check): "auto" -> 0. */
static void s_dp_from_text(runspec_t *spec)
{
    int64_t v = 0;
    if (strcmp(spec->dp_text, "auto") != 0 &&
        numparse_i64(spec->dp_text, 1, 1 << 20, &v) != SHOAL_OK)
        v = 0;
    spec->dp = (int)v;
}

void runspec_defaults(runspec_t *spec)
{
    cfgtable_defaults(&s_table, spec, sizeof *spec);
    s_dp_from_text(spec);
    model_config_preset(spec->model_preset, &spec->model);
}

shoal_err_t runspec_validate(const runspec_t *spec)
{
    char msg[512];
    if (cfgtable_validate(&s_table, spec) != SHOAL_OK)
        return SHOAL_ERR_INVALID;
    if (model_config_validate(&spec->model) != SHOAL_OK)
        return shoal_fail_context(SHOAL_ERR_INVALID, "model");
    const char *blame, *blame2;
    if (!s_check_cross(spec, msg, sizeof msg, &blame, &blame2))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: %s", blame, msg);
    return SHOAL_OK;
}

/* After the document: derived defaults, the model (preset, then overrides), rules between keys. */
static shoal_err_t s_finish(cfg_reader_t *r, void *obj)
{
    runspec_t *spec = obj;
    char msg[512];
    if (!cfg_reader_has(r, cfgtable_find(&s_table, "train.micro_batch")))
        spec->micro_batch = runspec_default_micro_batch(spec->global_batch, spec->seq_len);
    if (!cfg_reader_has(r, cfgtable_find(&s_table, "train.warmup_steps")))
        spec->warmup_steps = spec->steps / 10;
    s_dp_from_text(spec);

    if (model_config_preset(spec->model_preset, &spec->model) != SHOAL_OK) /* checked at parse */
        return cfg_reader_fail(r, "model.preset", NULL, "model.preset: %s", shoal_errmsg());
    for (int i = 0; i < S_NDESC; i++) {
        if (!(s_desc[i].flags & CFG_DEFERRED) || !cfg_reader_has(r, i))
            continue;
        if (model_config_set(&spec->model, cfgtable_leaf(s_desc[i].key),
                             cfg_reader_deferred(r, i)) != SHOAL_OK)
            return cfg_reader_fail(r, s_desc[i].key, NULL, "%s: %s", s_desc[i].key, shoal_errmsg());
    }
    if (model_config_validate(&spec->model) != SHOAL_OK) {
        snprintf(msg, sizeof msg, "%s", shoal_errmsg());
        return cfg_reader_fail_section(r, cfgtable_section_of(&s_table, "model.preset"),
                                       "model (preset %s with overrides): %s", spec->model_preset,
                                       msg);
    }
    const char *blame, *blame2;
    if (!s_check_cross(spec, msg, sizeof msg, &blame, &blame2))
        return cfg_reader_fail(r, blame, blame2, "%s: %s", blame, msg);
    return SHOAL_OK;
}

/* ---- loading ------------------------------------------------------------------------------- */

/* Parses into a working copy so that `out` is only written on success. */
static shoal_err_t s_load(const char *text, size_t len, const char *origin, const char *path,
                          runspec_t *out)
{
    runspec_t *spec = malloc(sizeof *spec);
    if (!spec)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", origin);
    runspec_defaults(spec);
    shoal_err_t rc = path ? cfgtable_load_file(&s_table, spec, path)
                          : cfgtable_load_string(&s_table, spec, text, len, origin, NULL);
    if (rc == SHOAL_OK)
        memcpy(out, spec, sizeof *spec);
    free(spec);
    return rc;
}

shoal_err_t runspec_load_string(const char *yaml, const char *origin, runspec_t *spec)
{
    if (!origin)
        origin = "<string>";
    return s_load(yaml, strlen(yaml), origin, NULL, spec);
}

shoal_err_t runspec_load_file(const char *path, runspec_t *spec)
{
    return s_load(NULL, 0, path, path, spec);
}

/* ---- output ------------------------------------------------------------------------------- */

/* A YAML double-quoted string: safe for any byte sequence of valid UTF-8. */
static void s_put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\x%02X", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void s_put_value(FILE *f, const runspec_t *spec, const cfg_desc_t *d, const char *indent)
{
    const void *p = (const char *)spec + d->offset;
    char buf[40];
    switch (d->type) {
    case CFG_STR:
        if (d->check == s_dp_check) { /* dp is the truth; dp_text only what was parsed */
            if (spec->dp > 0)
                fprintf(f, "%d", spec->dp);
            else
                fputs("auto", f);
            break;
        }
        s_put_quoted(f, p);
        break;
    case CFG_INT:
        fprintf(f, "%d", *(const int *)p);
        break;
    case CFG_U64:
        fprintf(f, "%" PRIu64, *(const uint64_t *)p);
        break;
    case CFG_REAL:
        cfgtable_format_real(*(const double *)p, buf, sizeof buf);
        fputs(buf, f);
        break;
    case CFG_STRLIST:
        for (int i = 0; i < spec->n_data_files; i++) {
            fprintf(f, "\n%s  - ", indent);
            s_put_quoted(f, spec->data_files[i]);
        }
        break;
    }
}

char *runspec_to_yaml(const runspec_t *spec)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    fputs("# shoal run spec: every key with its resolved value\n", f);
    for (int k = 0; k < s_table.n_sections; k++) {
        const char *indent = k ? "  " : "";
        if (k)
            fprintf(f, "%s:\n", s_sections[k]);
        for (int i = 0; i < S_NDESC; i++) {
            if (cfgtable_section_of(&s_table, s_desc[i].key) != k)
                continue;
            fprintf(f, "%s%s:%s", indent, cfgtable_leaf(s_desc[i].key),
                    s_desc[i].type == CFG_STRLIST ? "" : " ");
            s_put_value(f, spec, &s_desc[i], indent);
            fputc('\n', f);
        }
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

static const char *s_type_doc(const cfg_desc_t *d)
{
    switch (d->type) {
    case CFG_STR:
        if (d->check == s_dp_check)
            return "integer or `auto`";
        if (d->check == s_precision_check)
            return "`auto`, `fp32` or `bf16`";
        if (d->check == s_grad_sum_check)
            return "`exact` or `float`";
        if (d->check == s_aggregation_check)
            return "`sum` or `trimmed_mean`";
        return d->check == s_preset_check ? "preset name" : "string";
    case CFG_INT:
        return "integer";
    case CFG_U64:
        return "integer >= 0 (64-bit)";
    case CFG_REAL:
        return "number";
    case CFG_STRLIST:
        return "path or list of paths";
    }
    return "";
}

void runspec_describe(FILE *out)
{
    model_config_t tiny;
    model_config_tiny(&tiny);
    runspec_t tiny_spec;
    memset(&tiny_spec, 0, sizeof tiny_spec);
    tiny_spec.model = tiny;
    fputs("| key | type | default | allowed | meaning |\n", out);
    fputs("| --- | --- | --- | --- | --- |\n", out);
    for (int i = 0; i < S_NDESC; i++) {
        const cfg_desc_t *d = &s_desc[i];
        const void *tiny_field = (const char *)&tiny_spec + d->offset;
        int model_key = (d->flags & CFG_DEFERRED) != 0;
        char def[80], allowed[160];
        if (d->flags & CFG_REQUIRED)
            snprintf(def, sizeof def, "**required**");
        else if (d->def)
            snprintf(def, sizeof def, "`%s`", d->def);
        else if (model_key && d->type == CFG_INT)
            snprintf(def, sizeof def, "preset (tiny: `%d`)", *(const int *)tiny_field);
        else if (model_key) {
            char r[40];
            cfgtable_format_real(*(const double *)tiny_field, r, sizeof r);
            snprintf(def, sizeof def, "preset (tiny: `%s`)", r);
        } else
            snprintf(def, sizeof def, "%s", d->def_doc ? d->def_doc : "");
        allowed[0] = '\0';
        if (model_key)
            snprintf(allowed, sizeof allowed, "MODEL.md constraints");
        else if (d->type == CFG_INT || d->type == CFG_REAL)
            cfgtable_range_text(d, allowed, sizeof allowed);
        else if (d->flags & CFG_NAME)
            snprintf(allowed, sizeof allowed,
                     "`[A-Za-z0-9._-]`, not starting with `.`, 1 to %zu "
                     "characters",
                     d->size - 1);
        else if (d->type == CFG_U64)
            snprintf(allowed, sizeof allowed, "0 to 2^64 - 1");
        else if (d->check == s_preset_check)
            snprintf(allowed, sizeof allowed, "`tiny`, `small`");
        else if (d->check == s_dp_check)
            snprintf(allowed, sizeof allowed, "`auto` or >= 1");
        else if (d->check == s_precision_check)
            snprintf(allowed, sizeof allowed, "`auto`, `fp32`, `bf16`");
        else if (d->check == s_grad_sum_check)
            snprintf(allowed, sizeof allowed, "`exact`, `float`");
        else if (d->check == s_aggregation_check)
            snprintf(allowed, sizeof allowed, "`sum`, `trimmed_mean`");
        else if (d->type == CFG_STRLIST)
            snprintf(allowed, sizeof allowed, "1 to %d paths", d->list_max);
        else if (d->type == CFG_STR)
            snprintf(allowed, sizeof allowed, "non-empty, < %zu bytes", d->size);
        if (d->rule) {
            size_t n = strlen(allowed);
            snprintf(allowed + n, sizeof allowed - n, "%s%s", n ? "; " : "", d->rule);
        }
        fprintf(out, "| `%s` | %s | %s | %s | %s |\n", d->key, s_type_doc(d), def, allowed,
                d->help);
    }
}

const char *runspec_default_yaml(void)
{
    return "# tiny-fortunes: the embedded default run of shoal (examples/tiny-fortunes.yaml).\n"
           "name: tiny-fortunes\n"
           "model:\n"
           "  preset: tiny\n"
           "data:\n"
           "  files:\n"
           "    - /usr/share/games/fortunes\n"
           "  seed: 1\n"
           "train:\n"
           "  steps: 300\n"
           "  global_batch: 16\n"
           "  seq_len: 128\n"
           "  micro_batch: 8\n"
           "  lr: 3e-3\n"
           "  min_lr: 0\n"
           "  warmup_steps: 30\n"
           "  weight_decay: 0.1\n"
           "  clip_grad_norm: 1.0\n"
           "checkpoint:\n"
           "  dir: checkpoints\n"
           "  every_steps: 100\n"
           "  keep: 3\n";
}

int runspec_default_micro_batch(int global_batch, int seq_len)
{
    int best = 1;
    for (int mb = 1; mb <= global_batch; mb++)
        if (global_batch % mb == 0 && (int64_t)mb * seq_len <= RUNSPEC_MICRO_BATCH_TOKENS)
            best = mb;
    return best;
}
