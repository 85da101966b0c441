/* ckpt_shards.c: reading tensors from a set of verified checkpoint shard dirs. */
#include "ckpt_shards.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_int.h"
#include "fsutil.h"
#include "model_dir.h"

struct ckpt_shards {
    int n;
    char **dirs;
    st_file_t **model;
    st_file_t **opt; /* opened on first use */
    model_config_t cfg;
    model_tensor_info_t *sorted; /* canonical tensors by name */
    int n_sorted;
};

/* Names the first key in which two configs differ. */
static const struct {
    const char *key;
    size_t offset;
    int is_int;
} s_cfg_keys[] = {
/* clang-format off */
#define S_KEY(k, is_int) {#k, offsetof(model_config_t, k), is_int}
    /* clang-format on */
    S_KEY(vocab_size, 1),
    S_KEY(hidden_size, 1),
    S_KEY(num_hidden_layers, 1),
    S_KEY(num_attention_heads, 1),
    S_KEY(intermediate_size, 1),
    S_KEY(moe_intermediate_size, 1),
    S_KEY(n_routed_experts, 1),
    S_KEY(n_shared_experts, 1),
    S_KEY(num_experts_per_tok, 1),
    S_KEY(n_group, 1),
    S_KEY(topk_group, 1),
    S_KEY(first_k_dense_replace, 1),
    S_KEY(routed_scaling_factor, 0),
    S_KEY(rms_norm_eps, 0),
    S_KEY(rope_theta, 0),
    S_KEY(max_position_embeddings, 1),
    S_KEY(bias_update_speed, 0),
#undef S_KEY
};

static shoal_err_t s_config_mismatch(const char *path, const model_config_t *got,
                                     const model_config_t *want)
{
    for (size_t i = 0; i < sizeof s_cfg_keys / sizeof s_cfg_keys[0]; i++) {
        const char *g = (const char *)got + s_cfg_keys[i].offset;
        const char *w = (const char *)want + s_cfg_keys[i].offset;
        if (s_cfg_keys[i].is_int && *(const int *)g != *(const int *)w)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s is %d but the run expects %d", path,
                              s_cfg_keys[i].key, *(const int *)g, *(const int *)w);
        if (!s_cfg_keys[i].is_int && *(const double *)g != *(const double *)w)
            return shoal_fail(SHOAL_ERR_INVALID, "%s: %s is %.17g but the run expects %.17g", path,
                              s_cfg_keys[i].key, *(const double *)g, *(const double *)w);
    }
    return shoal_fail(SHOAL_ERR_INVALID, "%s: differs from the run's model config", path);
}

shoal_err_t ckpt_config_check(const char *path, const model_config_t *expect)
{
    model_config_t got;
    shoal_err_t rc = model_config_load(path, &got);
    if (rc == SHOAL_OK && !model_config_equal(&got, expect))
        rc = s_config_mismatch(path, &got, expect);
    return rc;
}

/* Every tensor of dir i's model file is canonical. */
static shoal_err_t s_check_model(const ckpt_shards_t *s, int i)
{
    const st_file_t *f = s->model[i];
    for (int k = 0; k < st_count(f); k++)
        if (!model_dir_lookup(s->sorted, s->n_sorted, st_name(f, k)))
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: unexpected tensor %s (not in the model)",
                              st_path(f), st_name(f, k));
    return SHOAL_OK;
}

shoal_err_t ckpt_shards_open(const char *const *dirs, int n_dirs, const model_config_t *expect,
                             ckpt_shards_t **out)
{
    *out = NULL;
    if (!dirs || n_dirs < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint: no shard dir given");
    ckpt_shards_t *s = calloc(1, sizeof *s);
    char path[PATH_MAX];
    shoal_err_t rc = SHOAL_OK;
    if (!s || !(s->dirs = calloc((size_t)n_dirs, sizeof *s->dirs)) ||
        !(s->model = calloc((size_t)n_dirs, sizeof *s->model)) ||
        !(s->opt = calloc((size_t)n_dirs, sizeof *s->opt))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "checkpoint shards: out of memory");
        goto fail;
    }
    s->n = n_dirs;
    for (int i = 0; i < n_dirs; i++) {
        if (!dirs[i] || !(s->dirs[i] = strdup(dirs[i]))) {
            rc = shoal_fail(dirs[i] ? SHOAL_ERR_NOMEM : SHOAL_ERR_INVALID,
                            "checkpoint shard %d: %s", i, dirs[i] ? "out of memory" : "no dir");
            goto fail;
        }
        SHOAL_CHECK_GOTO(ckpt_manifest_verify(dirs[i]), rc, fail);
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/" CKPT_CONFIG_FILE, dirs[i]), rc, fail);
        if (i == 0 && !expect) {
            SHOAL_CHECK_GOTO(model_config_load(path, &s->cfg), rc, fail);
            SHOAL_CHECK_GOTO(model_dir_sorted_tensors(&s->cfg, &s->sorted, &s->n_sorted), rc, fail);
        } else {
            if (i == 0) {
                s->cfg = *expect;
                SHOAL_CHECK_GOTO(model_dir_sorted_tensors(&s->cfg, &s->sorted, &s->n_sorted), rc,
                                 fail);
            }
            SHOAL_CHECK_GOTO(ckpt_config_check(path, &s->cfg), rc, fail);
        }
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/" CKPT_MODEL_FILE, dirs[i]), rc, fail);
        SHOAL_CHECK_GOTO(st_open(path, &s->model[i]), rc, fail);
        SHOAL_CHECK_GOTO(s_check_model(s, i), rc, fail);
    }
    *out = s;
    return SHOAL_OK;
fail:
    ckpt_shards_close(&s);
    return rc;
}

void ckpt_shards_close(ckpt_shards_t **sp)
{
    if (!sp || !*sp)
        return;
    ckpt_shards_t *s = *sp;
    for (int i = 0; i < s->n; i++) {
        if (s->model)
            st_close(&s->model[i]);
        if (s->opt)
            st_close(&s->opt[i]);
        if (s->dirs)
            free(s->dirs[i]);
    }
    free(s->model);
    free(s->opt);
    free(s->dirs);
    free(s->sorted);
    free(s);
    *sp = NULL;
}

const model_config_t *ckpt_shards_config(const ckpt_shards_t *s)
{
    return &s->cfg;
}

int ckpt_shards_holder(const ckpt_shards_t *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (st_has(s->model[i], name))
            return i;
    return -1;
}

const char *ckpt_shards_dir(const ckpt_shards_t *s, int i)
{
    return s->dirs[i];
}

const st_file_t *ckpt_shards_model(const ckpt_shards_t *s, int i)
{
    return s->model[i];
}

shoal_err_t ckpt_shards_read_param(const ckpt_shards_t *s, int i, const model_tensor_info_t *t,
                                   float *dst)
{
    return model_dir_read_tensor(s->model[i], t, NULL, dst);
}

/* Every tensor of the optimizer file is a moment of a non-bias canonical tensor. */
static shoal_err_t s_check_optimizer(const ckpt_shards_t *s, int i)
{
    const st_file_t *f = s->opt[i];
    for (int k = 0; k < st_count(f); k++) {
        const char *nm = st_name(f, k);
        const char *dot = strrchr(nm, '.');
        char base[sizeof s->sorted[0].name];
        const model_tensor_info_t *t = NULL;
        if (dot && (strcmp(dot, ".exp_avg") == 0 || strcmp(dot, ".exp_avg_sq") == 0) &&
            (size_t)(dot - nm) < sizeof base) {
            memcpy(base, nm, (size_t)(dot - nm));
            base[dot - nm] = 0;
            t = model_dir_lookup(s->sorted, s->n_sorted, base);
        }
        if (!t || t->is_bias)
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: unexpected tensor %s", st_path(f), nm);
    }
    return SHOAL_OK;
}

shoal_err_t ckpt_shards_read_moment(ckpt_shards_t *s, int i, const model_tensor_info_t *t,
                                    int which, float *dst)
{
    shoal_err_t rc = SHOAL_OK;
    if (!s->opt[i]) {
        char path[PATH_MAX];
        rc = fsutil_path(path, sizeof path, "%s/" CKPT_OPTIMIZER_FILE, s->dirs[i]);
        if (rc == SHOAL_OK)
            rc = st_open(path, &s->opt[i]);
        if (rc == SHOAL_OK && (rc = s_check_optimizer(s, i)) != SHOAL_OK)
            st_close(&s->opt[i]);
        if (rc != SHOAL_OK)
            return rc;
    }
    char name[sizeof t->name + 16];
    ckpt_moment_name(t->name, which, name, sizeof name);
    return model_dir_read_tensor(s->opt[i], t, name, dst);
}
