/* runspec.c: the RUN.yaml parser. One descriptor table (s_desc) drives parsing, defaults, bounds,
 * error messages (FILE:LINE:COLUMN), runspec_to_yaml and the README key table. */
#include "runspec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- the descriptor table ------------------------------------------------------------------ */

typedef enum {
    S_STR,    /* string (plain or quoted) */
    S_INT,    /* int, strict decimal */
    S_U64,    /* uint64_t, strict decimal */
    S_REAL,   /* double: decimal or exponent notation, finite */
    S_LIST,   /* data.files: one string or a sequence of strings */
    S_PRESET, /* model.preset: a name model_config_preset knows */
    S_MINT,   /* model.<int key>: stored pending, applied over the preset */
    S_MREAL,  /* model.<real key> */
} s_type_t;

enum { S_MIN_OPEN = 1, S_MAX_OPEN = 2, S_IDENT = 4 };

typedef struct {
    const char *key; /* full path, "train.lr" */
    s_type_t type;
    size_t offset;
    size_t size;
    int required;
    double min, max; /* numeric bounds (S_INT, S_REAL) */
    unsigned flags;
    const char *def;     /* default, as YAML scalar text; NULL when required or derived */
    const char *def_doc; /* the default as the README shows it when `def` is NULL */
    const char *rule;    /* a cross-key rule, shown in the README and checked in s_check_cross */
    const char *help;
} s_desc_t;

/* One descriptor per few lines reads better than one field per line. */
/* clang-format off */
#define S_AT(f) .offset = offsetof(runspec_t, f), .size = sizeof(((runspec_t *)0)->f)
#define S_MODEL(k, t, h)                                                                      \
    {.key = "model." #k, .type = t, S_AT(model.k), .def_doc = "preset", .help = h}

static const s_desc_t s_desc[] = {
    {.key = "name", .type = S_STR, S_AT(name), .required = 1, .flags = S_IDENT,
     .help = "run name; names the run in logs, metrics and the coordinator"},
    {.key = "model.preset", .type = S_PRESET, S_AT(model_preset), .def = "tiny",
     .help = "model preset (`tiny`, `small`, MODEL.md); the `model.*` keys below override it, "
             "whatever their order in the file"},
    S_MODEL(vocab_size, S_MINT, "V: tokens; 256 = raw bytes"),
    S_MODEL(hidden_size, S_MINT, "d: model width"),
    S_MODEL(num_hidden_layers, S_MINT, "L: blocks"),
    S_MODEL(num_attention_heads, S_MINT, "H: heads; head dim d/H must be even"),
    S_MODEL(intermediate_size, S_MINT, "f: hidden width of the dense FFN layers"),
    S_MODEL(moe_intermediate_size, S_MINT, "fe: hidden width of one expert"),
    S_MODEL(n_routed_experts, S_MINT, "N: routed experts per MoE layer"),
    S_MODEL(n_shared_experts, S_MINT, "ns: shared experts (0 allowed)"),
    S_MODEL(num_experts_per_tok, S_MINT, "K: routed experts per token"),
    S_MODEL(n_group, S_MINT, "expert groups of group-limited routing (1 = off)"),
    S_MODEL(topk_group, S_MINT, "groups kept by group-limited routing"),
    S_MODEL(first_k_dense_replace, S_MINT, "layers l < this use the dense FFN"),
    S_MODEL(routed_scaling_factor, S_MREAL, "multiplies the routed gates"),
    S_MODEL(rms_norm_eps, S_MREAL, "RMSNorm epsilon"),
    S_MODEL(rope_theta, S_MREAL, "RoPE base"),
    S_MODEL(max_position_embeddings, S_MINT, "longest sequence the model accepts"),
    S_MODEL(bias_update_speed, S_MREAL, "gamma: step of the aux-loss-free balancing bias"),
    {.key = "data.files", .type = S_LIST, S_AT(data_files), .required = 1,
     .help = "training text: one path or a list of paths (at most 64), each a text file or a "
             "directory (every regular file in it not ending in `.dat` or `.u8`); relative "
             "paths are relative to the run spec's directory"},
    {.key = "data.seed", .type = S_U64, S_AT(data_seed), .def = "0",
     .help = "seed of the data order"},
    {.key = "train.steps", .type = S_INT, S_AT(steps), .required = 1, .min = 1, .max = 1e9,
     .help = "optimizer steps of the run"},
    {.key = "train.global_batch", .type = S_INT, S_AT(global_batch), .required = 1, .min = 1,
     .max = 1 << 20,
     .help = "sequences per optimizer step (G); the math of a step does not depend on how "
             "many workers share it"},
    {.key = "train.seq_len", .type = S_INT, S_AT(seq_len), .required = 1, .min = 1,
     .max = 1 << 20, .rule = "<= `model.max_position_embeddings`",
     .help = "tokens per sequence (T)"},
    {.key = "train.micro_batch", .type = S_INT, S_AT(micro_batch), .min = 1, .max = 1 << 20,
     .def_doc = "largest divisor of `train.global_batch` with micro_batch x seq_len <= 1024 tokens",
     .rule = "divides `train.global_batch`",
     .help = "sequences per forward/backward pass; gradients are accumulated over "
             "global_batch / micro_batch passes"},
    {.key = "train.lr", .type = S_REAL, S_AT(lr), .required = 1, .min = 0, .max = 10,
     .flags = S_MIN_OPEN, .help = "peak learning rate, reached at the end of the warmup"},
    {.key = "train.min_lr", .type = S_REAL, S_AT(min_lr), .def = "0", .min = 0, .max = 10,
     .rule = "<= `train.lr`", .help = "learning rate the schedule decays to by the last step"},
    {.key = "train.warmup_steps", .type = S_INT, S_AT(warmup_steps), .min = 0, .max = 1e9,
     .def_doc = "`train.steps` / 10", .rule = "<= `train.steps`",
     .help = "steps of learning-rate warmup up to `train.lr`"},
    {.key = "train.weight_decay", .type = S_REAL, S_AT(weight_decay), .def = "0.1", .min = 0,
     .max = 10, .help = "AdamW decoupled weight decay"},
    {.key = "train.clip_grad_norm", .type = S_REAL, S_AT(clip_grad_norm), .def = "1.0",
     .min = 0, .max = 1e9, .help = "clip the global gradient L2 norm to this; 0 disables clipping"},
    {.key = "train.beta1", .type = S_REAL, S_AT(beta1), .def = "0.9", .min = 0, .max = 1,
     .flags = S_MAX_OPEN, .help = "AdamW first-moment decay"},
    {.key = "train.beta2", .type = S_REAL, S_AT(beta2), .def = "0.95", .min = 0, .max = 1,
     .flags = S_MAX_OPEN, .help = "AdamW second-moment decay"},
    {.key = "train.eps", .type = S_REAL, S_AT(adam_eps), .def = "1e-8", .min = 0, .max = 1,
     .flags = S_MIN_OPEN, .help = "AdamW epsilon"},
    {.key = "train.init_seed", .type = S_U64, S_AT(init_seed), .def = "1",
     .help = "seed of the parameter initialisation"},
    {.key = "train.threads", .type = S_INT, S_AT(threads), .def = "1", .min = 1, .max = 1024,
     .help = "BLAS threads per worker process"},
    {.key = "checkpoint.dir", .type = S_STR, S_AT(checkpoint_dir), .def = "checkpoints",
     .help = "where checkpoints go, kept as written: a relative path is resolved by the "
             "trainer, against the current directory for `shoal-worker train` and against the "
             "worker's state dir in daemon mode"},
    {.key = "checkpoint.every_steps", .type = S_INT, S_AT(checkpoint_every), .def = "0",
     .min = 0, .max = 1e9, .help = "checkpoint every N steps; 0 = only at the end of the run"},
    {.key = "checkpoint.keep", .type = S_INT, S_AT(checkpoint_keep), .def = "3", .min = 1,
     .max = 1e6, .help = "committed checkpoints kept; older ones are deleted"},
};
/* clang-format on */
#define S_NDESC ((int)(sizeof s_desc / sizeof s_desc[0]))

/* Sections in file order; index 0 is the top level (keys without a dot). */
static const char *const s_sections[] = {"", "model", "data", "train", "checkpoint"};
#define S_NSECT ((int)(sizeof s_sections / sizeof s_sections[0]))

/* Section index of a descriptor key ("train.lr" -> 3, "name" -> 0). */
static int s_section_of(const char *key)
{
    const char *dot = strchr(key, '.');
    if (!dot)
        return 0;
    for (int k = 1; k < S_NSECT; k++)
        if (strlen(s_sections[k]) == (size_t)(dot - key) &&
            strncmp(s_sections[k], key, (size_t)(dot - key)) == 0)
            return k;
    return -1; /* not reached: every table key names a known section */
}

/* The key inside its section ("train.lr" -> "lr"). */
static const char *s_leaf(const char *key)
{
    const char *dot = strchr(key, '.');
    return dot ? dot + 1 : key;
}

static int s_find(const char *key)
{
    for (int i = 0; i < S_NDESC; i++)
        if (strcmp(s_desc[i].key, key) == 0)
            return i;
    return -1;
}

/* ---- values ------------------------------------------------------------------------------- */

static void *s_field(runspec_t *spec, const s_desc_t *d)
{
    return (char *)spec + d->offset;
}

static const void *s_cfield(const runspec_t *spec, const s_desc_t *d)
{
    return (const char *)spec + d->offset;
}

/* Range of a numeric descriptor in words: ">= 1, <= 1024", "> 0, < 1". */
static void s_range_text(const s_desc_t *d, char *buf, size_t cap)
{
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "%s %.15g", (d->flags & S_MIN_OPEN) ? ">" : ">=", d->min);
    snprintf(hi, sizeof hi, "%s %.15g", (d->flags & S_MAX_OPEN) ? "<" : "<=", d->max);
    snprintf(buf, cap, "%s, %s", lo, hi);
}

static int s_in_range(const s_desc_t *d, double v)
{
    if (!isfinite(v))
        return 0;
    if ((d->flags & S_MIN_OPEN) ? !(v > d->min) : !(v >= d->min))
        return 0;
    if ((d->flags & S_MAX_OPEN) ? !(v < d->max) : !(v <= d->max))
        return 0;
    return 1;
}

static int s_ident_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Checks one field's own constraints. Returns 1 when valid, else 0 with `msg` ("must be ..."). */
static int s_check_value(const s_desc_t *d, const runspec_t *spec, char *msg, size_t cap)
{
    const void *p = s_cfield(spec, d);
    char range[80];
    switch (d->type) {
    case S_INT:
    case S_REAL: {
        double v = d->type == S_INT ? *(const int *)p : *(const double *)p;
        if (s_in_range(d, v))
            return 1;
        s_range_text(d, range, sizeof range);
        snprintf(msg, cap, "must be %s, got %.17g", range, v);
        return 0;
    }
    case S_STR:
        if (strnlen(p, d->size) == d->size) {
            snprintf(msg, cap, "is not terminated within %zu bytes", d->size);
            return 0;
        }
        if (!*(const char *)p) {
            snprintf(msg, cap, "must not be empty");
            return 0;
        }
        if ((d->flags & S_IDENT) && !s_ident_ok(p)) {
            snprintf(msg, cap, "must be made of letters, digits, '.', '_' and '-'");
            return 0;
        }
        return 1;
    case S_PRESET: {
        model_config_t scratch;
        if (strnlen(p, d->size) == d->size || model_config_preset(p, &scratch) != SHOAL_OK) {
            snprintf(msg, cap, "unknown model preset (known: tiny, small)");
            return 0;
        }
        return 1;
    }
    case S_LIST:
        if (spec->n_data_files < 1 || spec->n_data_files > RUNSPEC_MAX_FILES) {
            snprintf(msg, cap, "needs 1 to %d paths, got %d", RUNSPEC_MAX_FILES,
                     spec->n_data_files);
            return 0;
        }
        for (int i = 0; i < spec->n_data_files; i++) {
            size_t n = strnlen(spec->data_files[i], RUNSPEC_PATH_MAX);
            if (n == 0 || n == RUNSPEC_PATH_MAX) {
                snprintf(msg, cap, "entry %d is empty or too long", i);
                return 0;
            }
        }
        return 1;
    case S_U64:
    case S_MINT:
    case S_MREAL: /* any value; model keys are checked by model_config_validate */
        return 1;
    }
    return 1;
}

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
    if (s->warmup_steps > s->steps) {
        *blame = "train.warmup_steps";
        *blame2 = "train.steps";
        snprintf(msg, cap, "must be <= train.steps (%d), got %d", s->steps, s->warmup_steps);
        return 0;
    }
    return 1;
}

/* Strict decimal integer: [+-]?[0-9]+, nothing else. */
static int s_parse_ll(const char *t, long long *out, int *overflow)
{
    const char *p = t;
    if (*p == '+' || *p == '-')
        p++;
    if (!*p)
        return 0;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return 0;
    errno = 0;
    *out = strtoll(t, NULL, 10);
    *overflow = errno == ERANGE;
    return 1;
}

static int s_parse_u64(const char *t, uint64_t *out, int *overflow)
{
    const char *p = t;
    if (*p == '+')
        p++;
    if (!*p)
        return 0;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return 0;
    errno = 0;
    unsigned long long v = strtoull(p, NULL, 10);
    *overflow = errno == ERANGE;
    *out = (uint64_t)v;
    return 1;
}

/* Decimal real: [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?; no hex, inf, nan. */
static int s_parse_real(const char *t, double *out, int *overflow)
{
    const char *p = t;
    int digits = 0;
    if (*p == '+' || *p == '-')
        p++;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (!digits)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return 0;
    *out = strtod(t, NULL);
    *overflow = !isfinite(*out);
    return 1;
}

/* Shortest text that reads back to the same double: plain decimals for ordinary magnitudes
 * ("10000.0", "0.003"), else exponent notation ("1e-08"); always a '.' or an exponent. */
static void s_format_real(double v, char *buf, size_t cap)
{
    double a = fabs(v);
    if (isfinite(v) && (a == 0 || (a >= 1e-4 && a < 1e15))) {
        for (int dec = 1; dec <= 20; dec++) {
            snprintf(buf, cap, "%.*f", dec, v);
            if (strtod(buf, NULL) == v)
                return;
        }
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (isfinite(v) && !strpbrk(buf, ".eE")) {
        size_t n = strlen(buf);
        if (n + 2 < cap)
            memcpy(buf + n, ".0", 3);
    }
}

/* ---- defaults and validation ---------------------------------------------------------------- */

static shoal_err_t s_store_text(runspec_t *spec, const s_desc_t *d, const char *text);

void runspec_defaults(runspec_t *spec)
{
    memset(spec, 0, sizeof *spec);
    for (int i = 0; i < S_NDESC; i++)
        if (s_desc[i].def)
            s_store_text(spec, &s_desc[i], s_desc[i].def); /* table defaults parse (tested) */
    model_config_preset(spec->model_preset, &spec->model);
}

/* Stores a default's text (trusted: comes from the table). */
static shoal_err_t s_store_text(runspec_t *spec, const s_desc_t *d, const char *text)
{
    void *p = s_field(spec, d);
    long long ll;
    uint64_t u;
    double r;
    int ovf;
    switch (d->type) {
    case S_STR:
    case S_PRESET:
        snprintf(p, d->size, "%s", text);
        return SHOAL_OK;
    case S_INT:
        if (!s_parse_ll(text, &ll, &ovf))
            return SHOAL_ERR_INVALID;
        *(int *)p = (int)ll;
        return SHOAL_OK;
    case S_U64:
        if (!s_parse_u64(text, &u, &ovf))
            return SHOAL_ERR_INVALID;
        *(uint64_t *)p = u;
        return SHOAL_OK;
    case S_REAL:
        if (!s_parse_real(text, &r, &ovf))
            return SHOAL_ERR_INVALID;
        *(double *)p = r;
        return SHOAL_OK;
    case S_LIST:
    case S_MINT:
    case S_MREAL:
        break;
    }
    return SHOAL_ERR_INVALID;
}

shoal_err_t runspec_validate(const runspec_t *spec)
{
    char msg[512];
    for (int i = 0; i < S_NDESC; i++)
        if (!s_check_value(&s_desc[i], spec, msg, sizeof msg))
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s", s_desc[i].key, msg);
    if (model_config_validate(&spec->model) != SHOAL_OK)
        return shoal_fail_context(SHOAL_ERR_INVALID, "model");
    const char *blame, *blame2;
    if (!s_check_cross(spec, msg, sizeof msg, &blame, &blame2))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: %s", blame, msg);
    return SHOAL_OK;
}

/* ---- the parser --------------------------------------------------------------------------- */

typedef struct {
    int line, col; /* 1-based; line 0 = not seen */
} s_mark_t;

typedef struct {
    yaml_parser_t parser;
    yaml_event_t ev;
    int has_ev;
    const char *origin;
    const unsigned char *text;
    size_t len;
    const char *base_dir; /* relative data.files are joined to it; NULL: left as written */
    runspec_t *spec;      /* the working copy */
    s_mark_t key_mark[S_NDESC], val_mark[S_NDESC];
    s_mark_t sec_mark[S_NSECT]; /* where each section's key (root: the mapping) is */
    s_mark_t sec_val[S_NSECT];  /* where each section's mapping starts */
    double model_val[S_NDESC];  /* pending model.<key> overrides, applied after the preset */
} s_ctx_t;

static s_mark_t s_ev_mark(const yaml_event_t *ev)
{
    return (s_mark_t){(int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1};
}

static shoal_err_t s_fail_at(const s_ctx_t *c, s_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static shoal_err_t s_fail_at(const s_ctx_t *c, s_mark_t m, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return shoal_fail(SHOAL_ERR_INVALID, "%s:%d:%d: %s", c->origin, m.line, m.col, msg);
}

/* A scalar's text for a message: at most 40 bytes, unprintable bytes as '?'. */
static void s_quote(const char *t, size_t len, char *buf, size_t cap)
{
    size_t n = 0, max = cap > 8 ? cap - 4 : 0;
    if (max > 40)
        max = 40;
    for (size_t i = 0; i < len && n < max; i++)
        buf[n++] = (t[i] >= 0x20 && t[i] < 0x7f) ? t[i] : '?';
    if (len > max && n + 3 < cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

/* Computes line:column of a byte offset (libyaml gives reader errors only as an offset). */
static s_mark_t s_offset_mark(const s_ctx_t *c, size_t offset)
{
    s_mark_t m = {1, 1};
    if (offset > c->len)
        offset = c->len;
    for (size_t i = 0; i < offset; i++) {
        if (c->text[i] == '\n') {
            m.line++;
            m.col = 1;
        } else if ((c->text[i] & 0xc0) != 0x80) {
            m.col++; /* count characters, not UTF-8 continuation bytes */
        }
    }
    return m;
}

static shoal_err_t s_syntax_error(s_ctx_t *c)
{
    yaml_parser_t *p = &c->parser;
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_MEMORY_ERROR)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory parsing YAML", c->origin);
    if (p->error == YAML_READER_ERROR) {
        s_mark_t m = s_offset_mark(c, p->problem_offset);
        if (p->problem_value != -1)
            return s_fail_at(c, m, "YAML syntax error: %s (byte 0x%02x)", problem,
                             (unsigned)p->problem_value & 0xffu);
        return s_fail_at(c, m, "YAML syntax error: %s", problem);
    }
    s_mark_t m = {(int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1};
    if (p->context)
        return s_fail_at(c, m, "YAML syntax error: %s (%s at %d:%d)", problem, p->context,
                         (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return s_fail_at(c, m, "YAML syntax error: %s", problem);
}

static shoal_err_t s_next(s_ctx_t *c)
{
    if (c->has_ev) {
        yaml_event_delete(&c->ev);
        c->has_ev = 0;
    }
    if (!yaml_parser_parse(&c->parser, &c->ev))
        return s_syntax_error(c);
    c->has_ev = 1;
    return SHOAL_OK;
}

static const char *s_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_ALIAS_EVENT:
        return "an alias";
    case YAML_SCALAR_EVENT:
        return "a scalar";
    default:
        return "no value";
    }
}

static int s_is_null(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *t = (const char *)ev->data.scalar.value;
    return ev->data.scalar.length == 0 || strcmp(t, "~") == 0 || strcmp(t, "null") == 0 ||
           strcmp(t, "Null") == 0 || strcmp(t, "NULL") == 0;
}

static const char *s_expected(s_type_t t)
{
    switch (t) {
    case S_INT:
    case S_MINT:
        return "an integer";
    case S_U64:
        return "a non-negative integer";
    case S_REAL:
    case S_MREAL:
        return "a number";
    case S_LIST:
        return "a path or a list of paths";
    case S_STR:
    case S_PRESET:
        return "a string";
    }
    return "a value";
}

/* Describes a value event for "expected X, got Y". */
static void s_got(const yaml_event_t *ev, char *buf, size_t cap)
{
    if (ev->type != YAML_SCALAR_EVENT) {
        snprintf(buf, cap, "%s", s_kind(ev));
        return;
    }
    if (s_is_null(ev)) {
        snprintf(buf, cap, "an empty value");
        return;
    }
    char q[64];
    s_quote((const char *)ev->data.scalar.value, ev->data.scalar.length, q, sizeof q);
    snprintf(buf, cap, "%s'%s'",
             ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? "" : "a quoted string ", q);
}

/* Copies a string scalar into dst[cap], joining it to base_dir when asked and relative. */
static shoal_err_t s_take_string(s_ctx_t *c, const char *key, const yaml_event_t *ev, char *dst,
                                 size_t cap, const char *base_dir)
{
    s_mark_t m = s_ev_mark(ev);
    char got[96];
    if (ev->type != YAML_SCALAR_EVENT || s_is_null(ev)) {
        s_got(ev, got, sizeof got);
        return s_fail_at(c, m, "%s: expected a string, got %s", key, got);
    }
    const char *t = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(t, '\0', len))
        return s_fail_at(c, m, "%s: contains a NUL character", key);
    int join = base_dir && t[0] != '/';
    size_t need = len + (join ? strlen(base_dir) + 1 : 0);
    if (need >= cap)
        return s_fail_at(c, m, "%s: too long (%zu bytes%s, at most %zu)", key, need,
                         join ? " with the run spec's directory" : "", cap - 1);
    if (join)
        snprintf(dst, cap, "%s/%s", base_dir, t);
    else
        memcpy(dst, t, len + 1);
    return SHOAL_OK;
}

/* Parses a value event (c->ev) into descriptor i. */
static shoal_err_t s_parse_value(s_ctx_t *c, int i)
{
    const s_desc_t *d = &s_desc[i];
    runspec_t *spec = c->spec;
    s_mark_t m = s_ev_mark(&c->ev);
    char got[96], msg[512];
    shoal_err_t rc;

    if (c->ev.type == YAML_ALIAS_EVENT)
        return s_fail_at(c, m, "%s: aliases (*name) are not supported in a run spec", d->key);
    if (d->type == S_LIST) {
        spec->n_data_files = 0;
        if (c->ev.type == YAML_SCALAR_EVENT && !s_is_null(&c->ev)) {
            rc = s_take_string(c, d->key, &c->ev, spec->data_files[0], RUNSPEC_PATH_MAX,
                               c->base_dir);
            if (rc == SHOAL_OK)
                spec->n_data_files = 1;
            return rc;
        }
        if (c->ev.type != YAML_SEQUENCE_START_EVENT) {
            s_got(&c->ev, got, sizeof got);
            return s_fail_at(c, m, "%s: expected a path or a list of paths, got %s", d->key, got);
        }
        for (;;) {
            if ((rc = s_next(c)) != SHOAL_OK)
                return rc;
            if (c->ev.type == YAML_SEQUENCE_END_EVENT)
                break;
            s_mark_t em = s_ev_mark(&c->ev);
            char ekey[64];
            snprintf(ekey, sizeof ekey, "%s[%d]", d->key, spec->n_data_files);
            if (c->ev.type == YAML_ALIAS_EVENT)
                return s_fail_at(c, em, "%s: aliases (*name) are not supported in a run spec",
                                 ekey);
            if (spec->n_data_files == RUNSPEC_MAX_FILES)
                return s_fail_at(c, em, "%s: too many paths (at most %d)", d->key,
                                 RUNSPEC_MAX_FILES);
            rc = s_take_string(c, ekey, &c->ev, spec->data_files[spec->n_data_files],
                               RUNSPEC_PATH_MAX, c->base_dir);
            if (rc != SHOAL_OK)
                return rc;
            spec->n_data_files++;
        }
        if (spec->n_data_files == 0)
            return s_fail_at(c, m, "%s: the list is empty (give at least one path)", d->key);
        return SHOAL_OK;
    }

    if (c->ev.type != YAML_SCALAR_EVENT || s_is_null(&c->ev)) {
        s_got(&c->ev, got, sizeof got);
        return s_fail_at(c, m, "%s: expected %s, got %s", d->key, s_expected(d->type), got);
    }
    if (d->type == S_STR || d->type == S_PRESET) {
        if ((rc = s_take_string(c, d->key, &c->ev, s_field(spec, d), d->size, NULL)) != SHOAL_OK)
            return rc;
        if (!s_check_value(d, spec, msg, sizeof msg))
            return s_fail_at(c, m, "%s: %s, got '%s'", d->key, msg, (char *)s_field(spec, d));
        return SHOAL_OK;
    }

    /* Numbers: plain scalars only ("300" in quotes is a string in YAML). */
    const char *t = (const char *)c->ev.data.scalar.value;
    s_got(&c->ev, got, sizeof got);
    int ok =
        c->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strlen(t) == c->ev.data.scalar.length;
    int ovf = 0;
    long long ll = 0;
    uint64_t u = 0;
    double r = 0;
    if (ok && (d->type == S_INT || d->type == S_MINT))
        ok = s_parse_ll(t, &ll, &ovf);
    else if (ok && d->type == S_U64)
        ok = s_parse_u64(t, &u, &ovf);
    else if (ok)
        ok = s_parse_real(t, &r, &ovf);
    if (!ok)
        return s_fail_at(c, m, "%s: expected %s, got %s", d->key, s_expected(d->type), got);
    if (ovf)
        return s_fail_at(c, m, "%s: %s is out of range", d->key, got);
    switch (d->type) {
    case S_INT:
        if (!s_in_range(d, (double)ll)) {
            s_range_text(d, msg, sizeof msg);
            return s_fail_at(c, m, "%s: must be %s, got %lld", d->key, msg, ll);
        }
        *(int *)s_field(spec, d) = (int)ll;
        return SHOAL_OK;
    case S_REAL:
        if (!s_in_range(d, r)) {
            s_range_text(d, msg, sizeof msg);
            return s_fail_at(c, m, "%s: must be %s, got %s", d->key, msg, got);
        }
        *(double *)s_field(spec, d) = r;
        return SHOAL_OK;
    case S_U64:
        *(uint64_t *)s_field(spec, d) = u;
        return SHOAL_OK;
    case S_MINT:
        if (ll < INT_MIN || ll > INT_MAX)
            return s_fail_at(c, m, "%s: %s is out of range", d->key, got);
        c->model_val[i] = (double)ll;
        return SHOAL_OK;
    case S_MREAL:
        c->model_val[i] = r;
        return SHOAL_OK;
    default:
        return SHOAL_OK;
    }
}

/* "steps, global_batch, ..." for the keys of section k (0: the top level and the sections). */
static void s_valid_keys(int k, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < S_NDESC + S_NSECT - 1; i++) {
        const char *name;
        if (i < S_NDESC) {
            if (s_section_of(s_desc[i].key) != k)
                continue;
            name = s_leaf(s_desc[i].key);
        } else if (k == 0) {
            name = s_sections[i - S_NDESC + 1];
        } else {
            break;
        }
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", name);
        if (w < 0 || (size_t)w >= cap - n)
            break; /* truncated: the buffer is sized for the table, never reached */
        n += (size_t)w;
    }
}

static shoal_err_t s_parse_mapping(s_ctx_t *c, int k);

/* The value of a top-level section key: a mapping of its keys (or null, an empty section). */
static shoal_err_t s_parse_section(s_ctx_t *c, int k)
{
    s_mark_t m = s_ev_mark(&c->ev);
    c->sec_val[k] = m;
    if (s_is_null(&c->ev))
        return SHOAL_OK;
    if (c->ev.type != YAML_MAPPING_START_EVENT) {
        char got[96];
        s_got(&c->ev, got, sizeof got);
        return s_fail_at(c, m, "%s: expected a mapping of %s.* keys, got %s", s_sections[k],
                         s_sections[k], got);
    }
    return s_parse_mapping(c, k);
}

/* Parses the keys of section k up to its MAPPING_END (c->ev is the MAPPING_START). */
static shoal_err_t s_parse_mapping(s_ctx_t *c, int k)
{
    shoal_err_t rc;
    char list[700], q[64];
    for (;;) {
        if ((rc = s_next(c)) != SHOAL_OK)
            return rc;
        if (c->ev.type == YAML_MAPPING_END_EVENT)
            return SHOAL_OK;
        s_mark_t km = s_ev_mark(&c->ev);
        if (c->ev.type != YAML_SCALAR_EVENT)
            return s_fail_at(c, km, "%s%skeys must be plain strings, got %s", s_sections[k],
                             k ? ": " : "", s_kind(&c->ev));
        const char *key = (const char *)c->ev.data.scalar.value;
        size_t klen = c->ev.data.scalar.length;
        s_quote(key, klen, q, sizeof q);
        char full[160];
        int known = strlen(key) == klen && klen < 100;
        snprintf(full, sizeof full, "%s%s%s", s_sections[k], k ? "." : "", known ? key : "");
        if (k == 0 && known) {
            int sec = 0;
            for (int j = 1; j < S_NSECT; j++)
                if (strcmp(key, s_sections[j]) == 0)
                    sec = j;
            if (sec) {
                if (c->sec_mark[sec].line)
                    return s_fail_at(c, km, "duplicate key '%s' (first at %d:%d)", key,
                                     c->sec_mark[sec].line, c->sec_mark[sec].col);
                c->sec_mark[sec] = km;
                if ((rc = s_next(c)) != SHOAL_OK) /* `key` is freed from here on */
                    return rc;
                if (c->ev.type == YAML_ALIAS_EVENT)
                    return s_fail_at(c, s_ev_mark(&c->ev),
                                     "%s: aliases (*name) are not supported in a run spec",
                                     s_sections[sec]);
                if ((rc = s_parse_section(c, sec)) != SHOAL_OK)
                    return rc;
                continue;
            }
        }
        int i = known ? s_find(full) : -1;
        if (i < 0 || s_section_of(s_desc[i].key) != k) {
            s_valid_keys(k, list, sizeof list);
            return s_fail_at(c, km, "unknown key '%s%s%s' (valid %s%skeys: %s)", s_sections[k],
                             k ? "." : "", q, s_sections[k], k ? " " : "top-level ", list);
        }
        if (c->key_mark[i].line)
            return s_fail_at(c, km, "duplicate key '%s' (first at %d:%d)", s_desc[i].key,
                             c->key_mark[i].line, c->key_mark[i].col);
        c->key_mark[i] = km;
        if ((rc = s_next(c)) != SHOAL_OK)
            return rc;
        c->val_mark[i] = s_ev_mark(&c->ev);
        if ((rc = s_parse_value(c, i)) != SHOAL_OK)
            return rc;
    }
}

/* Where to point for key `key`: its value, else its section, else the top-level mapping. */
static s_mark_t s_blame_mark(const s_ctx_t *c, const char *key, const char *key2)
{
    int i = s_find(key);
    if (i >= 0 && c->val_mark[i].line)
        return c->val_mark[i];
    if (key2) {
        int j = s_find(key2);
        if (j >= 0 && c->val_mark[j].line)
            return c->val_mark[j];
    }
    int k = i >= 0 ? s_section_of(key) : 0;
    if (k > 0 && c->sec_mark[k].line)
        return c->sec_mark[k];
    return c->sec_mark[0];
}

/* After the document: required keys, derived defaults, the model, rules between keys. */
static shoal_err_t s_finish(s_ctx_t *c)
{
    runspec_t *spec = c->spec;
    char msg[512];
    for (int i = 0; i < S_NDESC; i++) {
        if (!s_desc[i].required || c->key_mark[i].line)
            continue;
        int k = s_section_of(s_desc[i].key);
        s_mark_t m = k > 0 && c->sec_mark[k].line ? c->sec_mark[k] : c->sec_mark[0];
        return s_fail_at(c, m, "missing required key '%s'", s_desc[i].key);
    }
    if (!c->key_mark[s_find("train.micro_batch")].line)
        spec->micro_batch = runspec_default_micro_batch(spec->global_batch, spec->seq_len);
    if (!c->key_mark[s_find("train.warmup_steps")].line)
        spec->warmup_steps = spec->steps / 10;

    if (model_config_preset(spec->model_preset, &spec->model) != SHOAL_OK) /* checked at parse */
        return s_fail_at(c, s_blame_mark(c, "model.preset", NULL), "model.preset: %s",
                         shoal_errmsg());
    for (int i = 0; i < S_NDESC; i++) {
        if ((s_desc[i].type != S_MINT && s_desc[i].type != S_MREAL) || !c->key_mark[i].line)
            continue;
        if (model_config_set(&spec->model, s_leaf(s_desc[i].key), c->model_val[i]) != SHOAL_OK)
            return s_fail_at(c, c->val_mark[i], "%s: %s", s_desc[i].key, shoal_errmsg());
    }
    if (model_config_validate(&spec->model) != SHOAL_OK) {
        int km = s_section_of("model.preset");
        s_mark_t m = c->sec_val[km].line ? c->sec_val[km] : c->sec_mark[0];
        snprintf(msg, sizeof msg, "%s", shoal_errmsg());
        return s_fail_at(c, m, "model (preset %s with overrides): %s", spec->model_preset, msg);
    }
    const char *blame, *blame2;
    if (!s_check_cross(spec, msg, sizeof msg, &blame, &blame2))
        return s_fail_at(c, s_blame_mark(c, blame, blame2), "%s: %s", blame, msg);
    return SHOAL_OK;
}

static shoal_err_t s_parse_document(s_ctx_t *c)
{
    shoal_err_t rc;
    char list[700], got[96];
    if ((rc = s_next(c)) != SHOAL_OK) /* STREAM_START */
        return rc;
    if ((rc = s_next(c)) != SHOAL_OK)
        return rc;
    s_valid_keys(0, list, sizeof list);
    if (c->ev.type == YAML_STREAM_END_EVENT)
        return s_fail_at(c, (s_mark_t){1, 1}, "empty run spec (expected a mapping with keys %s)",
                         list);
    if ((rc = s_next(c)) != SHOAL_OK) /* the root node after DOCUMENT_START */
        return rc;
    s_mark_t m = s_ev_mark(&c->ev);
    if (s_is_null(&c->ev))
        return s_fail_at(c, m, "empty run spec (expected a mapping with keys %s)", list);
    if (c->ev.type != YAML_MAPPING_START_EVENT) {
        s_got(&c->ev, got, sizeof got);
        return s_fail_at(c, m, "a run spec must be a mapping with keys %s, got %s", list, got);
    }
    c->sec_mark[0] = c->sec_val[0] = m;
    if ((rc = s_parse_mapping(c, 0)) != SHOAL_OK)
        return rc;
    if ((rc = s_next(c)) != SHOAL_OK) /* DOCUMENT_END */
        return rc;
    if ((rc = s_next(c)) != SHOAL_OK)
        return rc;
    if (c->ev.type != YAML_STREAM_END_EVENT)
        return s_fail_at(c, s_ev_mark(&c->ev),
                         "a second YAML document: a run spec is one document");
    return s_finish(c);
}

static shoal_err_t s_load(const char *text, size_t len, const char *origin, const char *base_dir,
                          runspec_t *out)
{
    s_ctx_t *c = calloc(1, sizeof *c);
    runspec_t *spec = malloc(sizeof *spec);
    shoal_err_t rc = SHOAL_OK;
    if (!c || !spec) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", origin);
        goto out_free;
    }
    if (!yaml_parser_initialize(&c->parser)) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory (YAML parser)", origin);
        goto out_free;
    }
    runspec_defaults(spec);
    c->origin = origin;
    c->text = (const unsigned char *)text;
    c->len = len;
    c->base_dir = base_dir;
    c->spec = spec;
    c->sec_mark[0] = (s_mark_t){1, 1};
    yaml_parser_set_input_string(&c->parser, c->text, len);
    rc = s_parse_document(c);
    if (rc == SHOAL_OK)
        memcpy(out, spec, sizeof *spec);
    if (c->has_ev)
        yaml_event_delete(&c->ev);
    yaml_parser_delete(&c->parser);
out_free:
    free(spec);
    free(c);
    return rc;
}

shoal_err_t runspec_load_string(const char *yaml, const char *origin, runspec_t *spec)
{
    if (!origin)
        origin = "<string>";
    return s_load(yaml, strlen(yaml), origin, NULL, spec);
}

#define S_MAX_FILE_BYTES (4u << 20)

shoal_err_t runspec_load_file(const char *path, runspec_t *spec)
{
    shoal_err_t rc = SHOAL_OK;
    char *text = NULL, *dir = NULL, *base = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    text = malloc(S_MAX_FILE_BYTES + 1);
    if (!text) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t n = fread(text, 1, S_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (n > S_MAX_FILE_BYTES) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "%s: larger than %u MiB, not a run spec", path,
                        S_MAX_FILE_BYTES >> 20);
        goto out;
    }
    text[n] = '\0';
    /* Relative data paths follow the spec file, wherever the command runs from. */
    dir = strdup(path);
    if (!dir) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    base = realpath(dir, NULL);
    if (!base) {
        rc =
            shoal_fail(SHOAL_ERR_IO, "%s: cannot resolve its directory: %s", path, strerror(errno));
        goto out;
    }
    if (strcmp(base, "/") == 0)
        base[0] = '\0'; /* joins as "/file", not "//file" */
    rc = s_load(text, n, path, base, spec);
out:
    free(base);
    free(dir);
    free(text);
    fclose(f);
    return rc;
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

static void s_put_value(FILE *f, const runspec_t *spec, const s_desc_t *d, const char *indent)
{
    const void *p = s_cfield(spec, d);
    char buf[40];
    switch (d->type) {
    case S_STR:
    case S_PRESET:
        s_put_quoted(f, p);
        break;
    case S_INT:
    case S_MINT:
        fprintf(f, "%d", *(const int *)p);
        break;
    case S_U64:
        fprintf(f, "%" PRIu64, *(const uint64_t *)p);
        break;
    case S_REAL:
    case S_MREAL:
        s_format_real(*(const double *)p, buf, sizeof buf);
        fputs(buf, f);
        break;
    case S_LIST:
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
    for (int k = 0; k < S_NSECT; k++) {
        const char *indent = k ? "  " : "";
        if (k)
            fprintf(f, "%s:\n", s_sections[k]);
        for (int i = 0; i < S_NDESC; i++) {
            if (s_section_of(s_desc[i].key) != k)
                continue;
            fprintf(f, "%s%s:%s", indent, s_leaf(s_desc[i].key),
                    s_desc[i].type == S_LIST ? "" : " ");
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

static const char *s_type_doc(s_type_t t)
{
    switch (t) {
    case S_STR:
        return "string";
    case S_INT:
    case S_MINT:
        return "integer";
    case S_U64:
        return "integer >= 0 (64-bit)";
    case S_REAL:
    case S_MREAL:
        return "number";
    case S_LIST:
        return "path or list of paths";
    case S_PRESET:
        return "preset name";
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
        const s_desc_t *d = &s_desc[i];
        char def[80], allowed[160];
        if (d->required)
            snprintf(def, sizeof def, "**required**");
        else if (d->def)
            snprintf(def, sizeof def, "`%s`", d->def);
        else if (d->type == S_MINT)
            snprintf(def, sizeof def, "preset (tiny: `%d`)", *(const int *)s_cfield(&tiny_spec, d));
        else if (d->type == S_MREAL) {
            char r[40];
            s_format_real(*(const double *)s_cfield(&tiny_spec, d), r, sizeof r);
            snprintf(def, sizeof def, "preset (tiny: `%s`)", r);
        } else
            snprintf(def, sizeof def, "%s", d->def_doc ? d->def_doc : "");
        allowed[0] = '\0';
        if (d->type == S_INT || d->type == S_REAL)
            s_range_text(d, allowed, sizeof allowed);
        else if (d->type == S_MINT || d->type == S_MREAL)
            snprintf(allowed, sizeof allowed, "MODEL.md constraints");
        else if (d->flags & S_IDENT)
            snprintf(allowed, sizeof allowed, "`[A-Za-z0-9._-]`, 1 to %zu characters", d->size - 1);
        else if (d->type == S_U64)
            snprintf(allowed, sizeof allowed, "0 to 2^64 - 1");
        else if (d->type == S_PRESET)
            snprintf(allowed, sizeof allowed, "`tiny`, `small`");
        else if (d->type == S_LIST)
            snprintf(allowed, sizeof allowed, "1 to %d paths", RUNSPEC_MAX_FILES);
        else if (d->type == S_STR)
            snprintf(allowed, sizeof allowed, "non-empty, < %zu bytes", d->size);
        if (d->rule) {
            size_t n = strlen(allowed);
            snprintf(allowed + n, sizeof allowed - n, "%s%s", n ? "; " : "", d->rule);
        }
        fprintf(out, "| `%s` | %s | %s | %s | %s |\n", d->key, s_type_doc(d->type), def, allowed,
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
