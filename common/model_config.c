/* model_config.c: presets, validation, config.json read/write, canonical tensor list. */
#include "model_config.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void model_config_tiny(model_config_t *cfg)
{
    *cfg = (model_config_t){
        .vocab_size = 256,
        .hidden_size = 128,
        .num_hidden_layers = 4,
        .num_attention_heads = 4,
        .intermediate_size = 384,
        .moe_intermediate_size = 128,
        .n_routed_experts = 8,
        .n_shared_experts = 1,
        .num_experts_per_tok = 2,
        .n_group = 1,
        .topk_group = 1,
        .first_k_dense_replace = 1,
        .routed_scaling_factor = 1.0,
        .rms_norm_eps = 1e-6,
        .rope_theta = 10000.0,
        .max_position_embeddings = 128,
        .bias_update_speed = 0.001,
    };
}

shoal_err_t model_config_preset(const char *name, model_config_t *cfg)
{
    model_config_tiny(cfg);
    if (strcmp(name, "tiny") == 0)
        return SHOAL_OK;
    if (strcmp(name, "small") == 0) {
        cfg->hidden_size = 256;
        cfg->num_hidden_layers = 6;
        cfg->num_attention_heads = 8;
        cfg->intermediate_size = 768;
        cfg->moe_intermediate_size = 256;
        cfg->n_routed_experts = 16;
        cfg->n_group = 4;
        cfg->topk_group = 2;
        cfg->max_position_embeddings = 256;
        return SHOAL_OK;
    }
    return shoal_fail(SHOAL_ERR_NOTFOUND, "unknown model preset '%s' (known: tiny, small)", name);
}

/* The integer and real keys, in config.json order; one table drives set, load and save. */
typedef struct {
    const char *key;
    size_t offset;
    int is_int;
} s_key_t;

#define S_INT(k) {#k, offsetof(model_config_t, k), 1}
#define S_REAL(k) {#k, offsetof(model_config_t, k), 0}
static const s_key_t s_keys[] = {
    S_INT(vocab_size),        S_INT(hidden_size),           S_INT(num_hidden_layers),
    S_INT(num_attention_heads), S_INT(intermediate_size),   S_INT(moe_intermediate_size),
    S_INT(n_routed_experts),  S_INT(n_shared_experts),      S_INT(num_experts_per_tok),
    S_INT(n_group),           S_INT(topk_group),            S_INT(first_k_dense_replace),
    S_REAL(routed_scaling_factor), S_REAL(rms_norm_eps),    S_REAL(rope_theta),
    S_INT(max_position_embeddings), S_REAL(bias_update_speed),
};
#define S_NKEYS ((int)(sizeof s_keys / sizeof s_keys[0]))

shoal_err_t model_config_set(model_config_t *cfg, const char *key, double value)
{
    for (int i = 0; i < S_NKEYS; i++) {
        if (strcmp(s_keys[i].key, key) != 0)
            continue;
        char *p = (char *)cfg + s_keys[i].offset;
        if (s_keys[i].is_int) {
            if (value != floor(value) || fabs(value) > 1e9)
                return shoal_fail(SHOAL_ERR_INVALID, "%s must be an integer (got %g)", key, value);
            *(int *)p = (int)value;
        } else {
            *(double *)p = value;
        }
        return SHOAL_OK;
    }
    return shoal_fail(SHOAL_ERR_NOTFOUND, "unknown model key '%s'", key);
}

int model_config_equal(const model_config_t *a, const model_config_t *b)
{
    for (int i = 0; i < S_NKEYS; i++) {
        const char *pa = (const char *)a + s_keys[i].offset, *pb = (const char *)b + s_keys[i].offset;
        if (s_keys[i].is_int ? *(const int *)pa != *(const int *)pb
                             : *(const double *)pa != *(const double *)pb)
            return 0;
    }
    return 1;
}

shoal_err_t model_config_validate(const model_config_t *c)
{
#define S_NEED(cond, ...)                                                                     \
    if (!(cond))                                                                              \
        return shoal_fail(SHOAL_ERR_INVALID, __VA_ARGS__);
    S_NEED(c->vocab_size >= 2 && c->vocab_size <= (1 << 24), "vocab_size must be in [2, 2^24]");
    S_NEED(c->hidden_size >= 2, "hidden_size must be >= 2");
    S_NEED(c->num_hidden_layers >= 1, "num_hidden_layers must be >= 1");
    S_NEED(c->num_attention_heads >= 1 && c->hidden_size % c->num_attention_heads == 0 &&
               (c->hidden_size / c->num_attention_heads) % 2 == 0,
           "hidden_size (%d) must be divisible by num_attention_heads (%d) with an even head dim",
           c->hidden_size, c->num_attention_heads);
    S_NEED(c->intermediate_size >= 1, "intermediate_size must be >= 1");
    S_NEED(c->moe_intermediate_size >= 1, "moe_intermediate_size must be >= 1");
    S_NEED(c->n_routed_experts >= 1 && c->n_routed_experts <= MODEL_MAX_EXPERTS,
           "n_routed_experts must be in [1, %d]", MODEL_MAX_EXPERTS);
    S_NEED(c->n_shared_experts >= 0, "n_shared_experts must be >= 0");
    S_NEED(c->n_group >= 1 && c->n_routed_experts % c->n_group == 0,
           "n_routed_experts (%d) must be divisible by n_group (%d)", c->n_routed_experts,
           c->n_group);
    S_NEED(c->topk_group >= 1 && c->topk_group <= c->n_group, "need 1 <= topk_group <= n_group");
    int per_group = c->n_routed_experts / c->n_group;
    S_NEED(c->n_group == 1 || per_group >= 2,
           "group-limited routing needs >= 2 experts per group (a group's score is a top-2 sum)");
    S_NEED(c->num_experts_per_tok >= 1 && c->num_experts_per_tok <= c->topk_group * per_group,
           "need 1 <= num_experts_per_tok <= topk_group * experts per group");
    S_NEED(c->first_k_dense_replace >= 0, "first_k_dense_replace must be >= 0");
    S_NEED(c->routed_scaling_factor > 0, "routed_scaling_factor must be > 0");
    S_NEED(c->rms_norm_eps > 0, "rms_norm_eps must be > 0");
    S_NEED(c->rope_theta > 0, "rope_theta must be > 0");
    S_NEED(c->max_position_embeddings >= 1, "max_position_embeddings must be >= 1");
    S_NEED(c->bias_update_speed >= 0, "bias_update_speed must be >= 0");
#undef S_NEED
    return SHOAL_OK;
}

static shoal_err_t s_check_fixed(json_t *root, const char *path)
{
    const char *str_keys[][2] = {{"scoring_func", "sigmoid"}, {"topk_method", "noaux_tc"}};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, str_keys[i][0]);
        if (v && (!json_is_string(v) || strcmp(json_string_value(v), str_keys[i][1]) != 0))
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s must be \"%s\" in v1", path,
                              str_keys[i][0], str_keys[i][1]);
    }
    json_t *v = json_object_get(root, "norm_topk_prob");
    if (v && !json_is_true(v))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: norm_topk_prob must be true in v1", path);
    v = json_object_get(root, "tie_word_embeddings");
    if (v && !json_is_false(v))
        return shoal_fail(SHOAL_ERR_INVALID, "%s: tie_word_embeddings must be false in v1", path);
    return SHOAL_OK;
}

shoal_err_t model_config_load(const char *path, model_config_t *cfg)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s:%d:%d: %s", path, jerr.line, jerr.column,
                          jerr.text);
    shoal_err_t rc = SHOAL_OK;
    if (!json_is_object(root)) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: config.json must be a JSON object", path);
        goto out;
    }
    model_config_tiny(cfg);
    for (int i = 0; i < S_NKEYS; i++) {
        json_t *v = json_object_get(root, s_keys[i].key);
        if (!v)
            continue;
        if (!json_is_number(v)) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: %s must be a number", path, s_keys[i].key);
            goto out;
        }
        rc = model_config_set(cfg, s_keys[i].key, json_number_value(v));
        if (rc != SHOAL_OK) {
            shoal_fail_context(rc, "%s", path);
            goto out;
        }
    }
    if ((rc = s_check_fixed(root, path)) != SHOAL_OK)
        goto out;
    if ((rc = model_config_validate(cfg)) != SHOAL_OK)
        shoal_fail_context(rc, "%s", path);
out:
    json_decref(root);
    return rc;
}

char *model_config_to_json(const model_config_t *cfg)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (int i = 0; i < S_NKEYS; i++) {
        const char *p = (const char *)cfg + s_keys[i].offset;
        json_object_set_new(root, s_keys[i].key,
                            s_keys[i].is_int ? json_integer(*(const int *)p)
                                             : json_real(*(const double *)p));
    }
    json_object_set_new(root, "norm_topk_prob", json_true());
    json_object_set_new(root, "scoring_func", json_string("sigmoid"));
    json_object_set_new(root, "topk_method", json_string("noaux_tc"));
    json_object_set_new(root, "tie_word_embeddings", json_false());
    json_object_set_new(root, "model_type", json_string("deepseek_v3"));
    json_object_set_new(root, "architectures", json_pack("[s]", "DeepseekV3ForCausalLM"));
    json_object_set_new(root, "torch_dtype", json_string("float32"));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    return text;
}

shoal_err_t model_config_save(const model_config_t *cfg, const char *path)
{
    char *text = model_config_to_json(cfg);
    if (!text)
        return shoal_fail(SHOAL_ERR_NOMEM, "config.json: out of memory");
    FILE *f = fopen(path, "w");
    shoal_err_t rc = SHOAL_OK;
    if (!f || fprintf(f, "%s\n", text) < 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot write", path);
    if (f && fclose(f) != 0 && rc == SHOAL_OK)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot write", path);
    free(text);
    return rc;
}

static void s_add(model_tensor_info_t *out, int cap, int *n, int is_bias, int ndim, int64_t a,
                  int64_t b, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void s_add(model_tensor_info_t *out, int cap, int *n, int is_bias, int ndim, int64_t a,
                  int64_t b, const char *fmt, ...)
{
    if (*n < cap) {
        model_tensor_info_t *t = &out[*n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->name, sizeof t->name, fmt, ap);
        va_end(ap);
        t->ndim = ndim;
        t->shape[0] = a;
        t->shape[1] = ndim == 2 ? b : 1;
        t->is_bias = is_bias;
    }
    (*n)++;
}

int model_tensor_list(const model_config_t *c, model_tensor_info_t *out, int cap)
{
    int n = 0;
    const int64_t V = c->vocab_size, d = c->hidden_size, f = c->intermediate_size;
    const int64_t fe = c->moe_intermediate_size, N = c->n_routed_experts;
    const int64_t fs = (int64_t)c->n_shared_experts * fe;
    s_add(out, cap, &n, 0, 2, V, d, "model.embed_tokens.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        s_add(out, cap, &n, 0, 1, d, 0, "model.layers.%d.input_layernorm.weight", l);
        for (const char *m = "qkvo"; *m; m++)
            s_add(out, cap, &n, 0, 2, d, d, "model.layers.%d.self_attn.%c_proj.weight", l, *m);
        s_add(out, cap, &n, 0, 1, d, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!model_config_is_moe_layer(c, l)) {
            s_add(out, cap, &n, 0, 2, f, d, "model.layers.%d.mlp.gate_proj.weight", l);
            s_add(out, cap, &n, 0, 2, f, d, "model.layers.%d.mlp.up_proj.weight", l);
            s_add(out, cap, &n, 0, 2, d, f, "model.layers.%d.mlp.down_proj.weight", l);
            continue;
        }
        s_add(out, cap, &n, 0, 2, N, d, "model.layers.%d.mlp.gate.weight", l);
        s_add(out, cap, &n, 1, 1, N, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        for (int e = 0; e < N; e++) {
            s_add(out, cap, &n, 0, 2, fe, d, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
            s_add(out, cap, &n, 0, 2, fe, d, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
            s_add(out, cap, &n, 0, 2, d, fe, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
        }
        if (fs > 0) {
            s_add(out, cap, &n, 0, 2, fs, d, "model.layers.%d.mlp.shared_experts.gate_proj.weight", l);
            s_add(out, cap, &n, 0, 2, fs, d, "model.layers.%d.mlp.shared_experts.up_proj.weight", l);
            s_add(out, cap, &n, 0, 2, d, fs, "model.layers.%d.mlp.shared_experts.down_proj.weight", l);
        }
    }
    s_add(out, cap, &n, 0, 1, d, 0, "model.norm.weight");
    s_add(out, cap, &n, 0, 2, V, d, "lm_head.weight");
    return n;
}
