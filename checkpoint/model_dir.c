/* model_dir.c: Hugging Face style model directories <-> the flat float32 parameter array. */
#include "model_dir.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "safetensors.h"

static shoal_err_t s_tensor_list(const model_config_t *cfg, model_tensor_info_t **out, int *n)
{
    *out = NULL;
    *n = model_tensor_list(cfg, NULL, 0);
    if (*n <= 0)
        return shoal_fail(SHOAL_ERR_INVALID, "model config has no tensors");
    *out = calloc((size_t)*n, sizeof **out);
    if (!*out)
        return shoal_fail(SHOAL_ERR_NOMEM, "tensor list: out of memory");
    model_tensor_list(cfg, *out, *n);
    return SHOAL_OK;
}

int64_t model_dir_param_count(const model_config_t *cfg)
{
    model_tensor_info_t *t;
    int n;
    if (s_tensor_list(cfg, &t, &n) != SHOAL_OK)
        return 0;
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += model_tensor_numel(&t[i]);
    free(t);
    return total;
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted canonical names for "is this tensor expected?" lookups. Caller frees the array. */
static const char **s_sorted_names(const model_tensor_info_t *t, int n)
{
    const char **s = malloc((size_t)n * sizeof *s);
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++)
        s[i] = t[i].name;
    qsort(s, (size_t)n, sizeof *s, s_cmp_str);
    return s;
}

static int s_is_canonical(const char **sorted, int n, const char *name)
{
    return bsearch(&name, sorted, (size_t)n, sizeof *sorted, s_cmp_str) != NULL;
}

static void s_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

shoal_err_t model_dir_read_tensor(const st_file_t *f, const model_tensor_info_t *t,
                                  const char *name, float *dst)
{
    st_info_t in;
    if (!name)
        name = t->name;
    if (!st_has(f, name))
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: missing tensor %s", st_path(f), name);
    st_info(f, name, &in);
    int same = in.ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = in.shape[d] == t->shape[d];
    if (!same) {
        char got[128], want[64];
        s_shape_str(in.ndim, in.shape, got, sizeof got);
        s_shape_str(t->ndim, t->shape, want, sizeof want);
        return shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", st_path(f),
                          name, got, want);
    }
    return dst ? st_read_f32(f, name, dst, model_tensor_numel(t)) : SHOAL_OK;
}

static shoal_err_t s_read_tensor(const st_file_t *f, const model_tensor_info_t *t, float *dst)
{
    return model_dir_read_tensor(f, t, NULL, dst);
}

static shoal_err_t s_check_extras(const st_file_t *f, const char **sorted, int n)
{
    for (int i = 0; i < st_count(f); i++)
        if (!s_is_canonical(sorted, n, st_name(f, i)))
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: unexpected tensor %s (not in the model)",
                              st_path(f), st_name(f, i));
    return SHOAL_OK;
}

shoal_err_t model_dir_read_file(const char *path, const model_config_t *cfg, float *params)
{
    model_tensor_info_t *t = NULL;
    const char **sorted = NULL;
    st_file_t *f = NULL;
    int n = 0;
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(s_tensor_list(cfg, &t, &n), rc, out);
    if (!(sorted = s_sorted_names(t, n))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    SHOAL_CHECK_GOTO(st_open(path, &f), rc, out);
    SHOAL_CHECK_GOTO(s_check_extras(f, sorted, n), rc, out);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        SHOAL_CHECK_GOTO(s_read_tensor(f, &t[i], params + off), rc, out);
        off += model_tensor_numel(&t[i]);
    }
out:
    st_close(&f);
    free(sorted);
    free(t);
    return rc;
}

/* A shard name from the index must be a plain file name inside the directory. */
static int s_plain_name(const char *s)
{
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static shoal_err_t s_load_sharded(const char *dir, const char *index_path,
                                  const model_config_t *cfg, float *params)
{
    model_tensor_info_t *t = NULL;
    const char **sorted = NULL;
    const char **files = NULL;
    st_file_t **shards = NULL;
    int n = 0, nfiles = 0;
    shoal_err_t rc = SHOAL_OK;
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s:%d:%d: %s", index_path, jerr.line, jerr.column,
                          jerr.text);
    json_t *wmap = json_object_get(root, "weight_map");
    if (!json_is_object(wmap)) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto out;
    }
    SHOAL_CHECK_GOTO(s_tensor_list(cfg, &t, &n), rc, out);
    size_t nmap = json_object_size(wmap);
    sorted = s_sorted_names(t, n);
    files = calloc(nmap + 1, sizeof *files);
    shards = calloc(nmap + 1, sizeof *shards);
    if (!sorted || !files || !shards) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", index_path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(wmap, key, val)
    {
        if (!json_is_string(val) || !s_plain_name(json_string_value(val))) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: weight_map entry of %s is not a plain file name",
                            index_path, key);
            goto out;
        }
        if (!s_is_canonical(sorted, n, key)) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: unexpected tensor %s (not in the model)",
                            index_path, key);
            goto out;
        }
        const char *fn = json_string_value(val);
        int k = 0;
        while (k < nfiles && strcmp(files[k], fn) != 0)
            k++;
        if (k == nfiles)
            files[nfiles++] = fn;
    }
    for (int k = 0; k < nfiles; k++) {
        char path[PATH_MAX];
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/%s", dir, files[k]), rc, out);
        SHOAL_CHECK_GOTO(st_open(path, &shards[k]), rc, out);
        SHOAL_CHECK_GOTO(s_check_extras(shards[k], sorted, n), rc, out);
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *fv = json_object_get(wmap, t[i].name);
        if (!fv) {
            rc = shoal_fail(SHOAL_ERR_NOTFOUND, "%s: missing tensor %s (not in weight_map)",
                            index_path, t[i].name);
            goto out;
        }
        int k = 0;
        while (strcmp(files[k], json_string_value(fv)) != 0)
            k++;
        SHOAL_CHECK_GOTO(s_read_tensor(shards[k], &t[i], params + off), rc, out);
        off += model_tensor_numel(&t[i]);
    }
out:
    if (shards)
        for (int k = 0; k < nfiles; k++)
            st_close(&shards[k]);
    free(shards);
    free(files);
    free(sorted);
    free(t);
    json_decref(root);
    return rc;
}

shoal_err_t model_dir_load(const char *dir, model_config_t *cfg, float **params, int64_t *n_params)
{
    *params = NULL;
    *n_params = 0;
    char path[PATH_MAX], index[PATH_MAX];
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (rc != SHOAL_OK)
        return rc;
    fsutil_path(path, sizeof path, "%s/config.json", dir); /* shorter: fits */
    rc = model_config_load(path, cfg);
    if (rc != SHOAL_OK)
        return rc;
    int64_t total = model_dir_param_count(cfg);
    float *p = malloc((size_t)total * sizeof *p);
    if (!p)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: cannot allocate %lld parameters", dir,
                          (long long)total);
    fsutil_path(path, sizeof path, "%s/model.safetensors", dir);
    fsutil_path(index, sizeof index, "%s/model.safetensors.index.json", dir);
    uint64_t size;
    if (fsutil_file_size(path, &size) == SHOAL_OK)
        rc = model_dir_read_file(path, cfg, p);
    else if (fsutil_file_size(index, &size) == SHOAL_OK)
        rc = s_load_sharded(dir, index, cfg, p);
    else
        rc = shoal_fail(SHOAL_ERR_NOTFOUND,
                        "%s: no model.safetensors nor model.safetensors.index.json", dir);
    if (rc != SHOAL_OK) {
        free(p);
        return rc;
    }
    *params = p;
    *n_params = total;
    return SHOAL_OK;
}

st_tensor_t model_dir_st_tensor(const model_tensor_info_t *t, const char *name, const float *data)
{
    return (st_tensor_t){.name = name,
                         .dtype = ST_F32,
                         .ndim = t->ndim,
                         .shape = {t->shape[0], t->shape[1]},
                         .data = data};
}

shoal_err_t model_dir_write_config(const char *dir, const model_config_t *cfg,
                                   const char *torch_dtype)
{
    char *text = NULL;
    json_t *doc = NULL;
    char path[PATH_MAX];
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/config.json", dir), rc, out);
    if (!(text = model_config_to_json(cfg)))
        goto oom;
    if (torch_dtype) { /* the one key that depends on how the weights are stored */
        if (!(doc = json_loads(text, 0, NULL)) ||
            json_object_set_new(doc, "torch_dtype", json_string(torch_dtype)) != 0)
            goto oom;
        free(text);
        if (!(text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER)))
            goto oom;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves the NUL; the file ends with a newline instead */
    rc = fsutil_write_file_atomic(path, text, len + 1);
    goto out;
oom:
    rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: config.json: out of memory", dir);
out:
    json_decref(doc);
    free(text);
    return rc;
}

shoal_err_t model_dir_save(const char *dir, const model_config_t *cfg, const float *params)
{
    model_tensor_info_t *t = NULL;
    st_tensor_t *st = NULL;
    int n = 0;
    char path[PATH_MAX];
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(fsutil_mkdir_p(dir), rc, out);
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/model.safetensors", dir), rc, out);
    SHOAL_CHECK_GOTO(model_dir_write_config(dir, cfg, NULL), rc, out);

    SHOAL_CHECK_GOTO(s_tensor_list(cfg, &t, &n), rc, out);
    if (!(st = calloc((size_t)n, sizeof *st))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        st[i] = model_dir_st_tensor(&t[i], t[i].name, params + off);
        off += model_tensor_numel(&t[i]);
    }
    rc = st_write_file(path, st, n, model_dir_st_meta);
out:
    free(st);
    free(t);
    return rc;
}

const char *const model_dir_st_meta[] = {"format", "pt", NULL};

static int s_cmp_info(const void *a, const void *b)
{
    return strcmp(((const model_tensor_info_t *)a)->name, ((const model_tensor_info_t *)b)->name);
}

shoal_err_t model_dir_sorted_tensors(const model_config_t *cfg, model_tensor_info_t **sorted,
                                     int *n)
{
    shoal_err_t rc = s_tensor_list(cfg, sorted, n);
    if (rc == SHOAL_OK)
        qsort(*sorted, (size_t)*n, sizeof **sorted, s_cmp_info);
    return rc;
}

const model_tensor_info_t *model_dir_lookup(const model_tensor_info_t *sorted, int n,
                                            const char *name)
{
    model_tensor_info_t key;
    if (snprintf(key.name, sizeof key.name, "%s", name) >= (int)sizeof key.name)
        return NULL;
    return bsearch(&key, sorted, (size_t)n, sizeof *sorted, s_cmp_info);
}
