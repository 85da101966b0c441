/* ckpt_load.c: loading checkpoints: a set of tensors from shard dirs (ckpt_load_tensors), the
 * whole model from one dir (ckpt_load, the shard holding everything). */
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_int.h"
#include "ckpt_shards.h"
#include "fsutil.h"

/* The trainer state of dir: malloc'd text that parses as JSON. */
static shoal_err_t s_read_state(const char *dir, char **out)
{
    char path[PATH_MAX];
    uint8_t *text = NULL;
    size_t len = 0;
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/" CKPT_STATE_FILE, dir);
    if (rc == SHOAL_OK)
        rc = fsutil_read_file(path, &text, &len);
    if (rc != SHOAL_OK)
        return rc;
    json_error_t jerr;
    json_t *probe = json_loadb((const char *)text, len, JSON_DECODE_ANY, &jerr);
    if (!probe) {
        free(text);
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: not JSON: %s", path, jerr.text);
    }
    json_decref(probe);
    *out = (char *)text;
    return SHOAL_OK;
}

/* The error for a tensor that none of the dirs holds. */
static shoal_err_t s_missing(const char *const *dirs, int n_dirs, const char *name)
{
    if (n_dirs == 1)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s/" CKPT_MODEL_FILE ": missing tensor %s",
                          dirs[0], name);
    return shoal_fail(SHOAL_ERR_NOTFOUND,
                      "missing tensor %s: none of the %d checkpoint shards holds it (%s, ...)",
                      name, n_dirs, dirs[0]);
}

shoal_err_t ckpt_load_tensors(const char *const *dirs, int n_dirs, const model_config_t *expect,
                              ckpt_tensor_t *t, int n, char **state_json)
{
    if (state_json)
        *state_json = NULL;
    if (!dirs || n_dirs < 1 || !expect || n < 0 || (n > 0 && !t))
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_load: bad arguments");
    ckpt_shards_t *s = NULL;
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(ckpt_shards_open(dirs, n_dirs, expect, &s), rc, out);
    for (int i = 0; i < n; i++) {
        const model_tensor_info_t *info = t[i].info;
        int at = ckpt_shards_holder(s, info->name);
        if (at < 0) {
            rc = s_missing(dirs, n_dirs, info->name);
            goto out;
        }
        SHOAL_CHECK_GOTO(ckpt_shards_read_param(s, at, info, t[i].param), rc, out);
        if (!info->is_bias && t[i].m)
            SHOAL_CHECK_GOTO(ckpt_shards_read_moment(s, at, info, 0, t[i].m), rc, out);
        if (!info->is_bias && t[i].v)
            SHOAL_CHECK_GOTO(ckpt_shards_read_moment(s, at, info, 1, t[i].v), rc, out);
    }
    if (state_json)
        rc = s_read_state(dirs[0], state_json);
out:
    ckpt_shards_close(&s);
    return rc;
}

shoal_err_t ckpt_load(const char *dir, const model_config_t *expect, float *params, float *adam_m,
                      float *adam_v, char **trainer_state_json)
{
    if (trainer_state_json)
        *trainer_state_json = NULL;
    if (!dir || !expect)
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_load: bad arguments");
    int n = model_tensor_list(expect, NULL, 0);
    model_tensor_info_t *info = calloc((size_t)n + 1, sizeof *info);
    ckpt_tensor_t *t = calloc((size_t)n + 1, sizeof *t);
    shoal_err_t rc;
    if (!info || !t) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    model_tensor_list(expect, info, n);
    ckpt_tensors_flat(info, n, params, adam_m, adam_v, t);
    rc = ckpt_load_tensors(&dir, 1, expect, t, n, trainer_state_json);
    /* the balancing biases have no moments: their slots read as 0 */
    for (int i = 0; rc == SHOAL_OK && i < n; i++) {
        size_t bytes = (size_t)model_tensor_numel(&info[i]) * sizeof(float);
        if (info[i].is_bias && t[i].m)
            memset(t[i].m, 0, bytes);
        if (info[i].is_bias && t[i].v)
            memset(t[i].v, 0, bytes);
    }
out:
    free(t);
    free(info);
    return rc;
}
