/* ckpt_export.c: checkpoint shards -> one Hugging Face model directory, atomically. Every
 * output file is written from the mapped shard files (F32 bytes as they are; bf16 converted one
 * tensor at a time), so memory holds at most one converted output file. */
#include "ckpt_export.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_int.h"
#include "ckpt_shards.h"
#include "fsutil.h"
#include "log.h"
#include "model_dir.h"

#define S_INDEX_NAME "model.safetensors.index.json"

/* One output tensor: where it comes from and what it becomes. */
typedef struct {
    const model_tensor_info_t *info;
    int holder; /* shard dir index */
    st_dtype_t dtype;
    uint64_t bytes;
    int file; /* output file index */
} s_out_t;

/* `out` may be replaced: absent, or an empty directory. */
static shoal_err_t s_check_target(const char *out)
{
    struct stat st;
    if (lstat(out, &st) != 0)
        return errno == ENOENT ? SHOAL_OK
                               : shoal_fail(SHOAL_ERR_IO, "%s: %s", out, strerror(errno));
    DIR *d = S_ISDIR(st.st_mode) ? opendir(out) : NULL;
    int empty = d != NULL;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    if (d)
        closedir(d);
    return empty ? SHOAL_OK
                 : shoal_fail(SHOAL_ERR_STATE, "%s already exists (not an empty directory)", out);
}

/* Assigns each tensor its output file: one file when all fit, else consecutive files of at most
 * `max` bytes (a larger tensor alone). Returns the number of files. */
static int s_plan_files(s_out_t *o, int n, uint64_t max, uint64_t *total)
{
    *total = 0;
    for (int i = 0; i < n; i++)
        *total += o[i].bytes;
    int file = 0;
    uint64_t acc = 0;
    for (int i = 0; i < n; i++) {
        if (*total > max && acc > 0 && acc + o[i].bytes > max) {
            file++;
            acc = 0;
        }
        acc += o[i].bytes;
        o[i].file = file;
    }
    return n ? file + 1 : 1;
}

static void s_file_name(int file, int n_files, char *out, size_t cap)
{
    if (n_files == 1)
        snprintf(out, cap, CKPT_MODEL_FILE);
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", file + 1, n_files);
}

/* The bytes of tensor o in its output dtype: the mapped source when it already is, else a
 * converted copy into *owned (caller frees). */
static shoal_err_t s_tensor_bytes(const ckpt_shards_t *s, const s_out_t *o, const void **data,
                                  void **owned)
{
    const st_file_t *f = ckpt_shards_model(s, o->holder);
    st_info_t in;
    uint64_t nbytes;
    shoal_err_t rc = st_info(f, o->info->name, &in);
    if (rc != SHOAL_OK)
        return rc;
    if (in.dtype == o->dtype)
        return st_data(f, o->info->name, data, &nbytes);
    int64_t numel = model_tensor_numel(o->info);
    float *wide = malloc((size_t)numel * sizeof *wide);
    if (!wide)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", o->info->name);
    if ((rc = st_read_f32(f, o->info->name, wide, numel)) != SHOAL_OK) {
        free(wide);
        return rc;
    }
    for (int64_t j = 0; o->dtype == ST_BF16 && j < numel; j++) {
        /* narrowed in place: bytes 2j, 2j+1 hold floats already read (j/2 <= j) */
        uint16_t h = st_f32_to_bf16(wide[j]);
        memcpy((char *)wide + 2 * j, &h, sizeof h);
    }
    *data = *owned = wide;
    return SHOAL_OK;
}

static shoal_err_t s_write_file(const ckpt_shards_t *s, const s_out_t *o, int n, int file,
                                const char *path)
{
    st_tensor_t *st = calloc((size_t)n + 1, sizeof *st);
    void **owned = calloc((size_t)n + 1, sizeof *owned);
    shoal_err_t rc = SHOAL_OK;
    int k = 0;
    if (!st || !owned) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (o[i].file != file)
            continue;
        st[k] = model_dir_st_tensor(o[i].info, o[i].info->name, NULL);
        st[k].dtype = o[i].dtype;
        SHOAL_CHECK_GOTO(s_tensor_bytes(s, &o[i], &st[k].data, &owned[k]), rc, out);
        k++;
    }
    rc = st_write_file(path, st, k, model_dir_st_meta);
out:
    for (int i = 0; owned && i < k; i++)
        free(owned[i]);
    free(owned);
    free(st);
    return rc;
}

static shoal_err_t s_write_index(const char *dir, const s_out_t *o, int n, int n_files,
                                 uint64_t total)
{
    json_t *map = json_object();
    json_t *doc = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total,
                            "weight_map", map);
    char name[64], path[PATH_MAX], *text = NULL;
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; map && doc && i < n; i++) {
        s_file_name(o[i].file, n_files, name, sizeof name);
        json_object_set_new(map, o[i].info->name, json_string(name));
    }
    if (!map || !doc || !(text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: " S_INDEX_NAME ": out of memory", dir);
        goto out;
    }
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/" S_INDEX_NAME, dir), rc, out);
    rc = fsutil_write_file(path, text, strlen(text));
out:
    free(text);
    json_decref(doc);
    json_decref(map);
    return rc;
}

/* Every canonical tensor's holder and output form. */
static shoal_err_t s_collect(const ckpt_shards_t *s, const model_tensor_info_t *info, int n,
                             const ckpt_export_opts_t *opts, int n_dirs, s_out_t *o)
{
    for (int i = 0; i < n; i++) {
        int at = ckpt_shards_holder(s, info[i].name);
        if (at < 0)
            return shoal_fail(SHOAL_ERR_NOTFOUND,
                              "missing tensor %s: none of the %d checkpoint shards holds it",
                              info[i].name, n_dirs);
        shoal_err_t rc = ckpt_shards_read_param(s, at, &info[i], NULL); /* its shape */
        if (rc != SHOAL_OK)
            return rc;
        o[i].info = &info[i];
        o[i].holder = at;
        o[i].dtype = opts->dtype == CKPT_EXPORT_BF16 && !info[i].is_bias ? ST_BF16 : ST_F32;
        o[i].bytes = (uint64_t)model_tensor_numel(&info[i]) * st_dtype_size(o[i].dtype);
    }
    return SHOAL_OK;
}

shoal_err_t ckpt_export(const char *const *dirs, int n_dirs, const char *out,
                        const ckpt_export_opts_t *opts)
{
    const ckpt_export_opts_t defaults = {CKPT_EXPORT_F32, 0};
    if (!opts)
        opts = &defaults;
    if (!out || !out[0] || (opts->dtype != CKPT_EXPORT_F32 && opts->dtype != CKPT_EXPORT_BF16))
        return shoal_fail(SHOAL_ERR_INVALID, "export: bad arguments");
    const uint64_t max = opts->max_shard_bytes ? opts->max_shard_bytes
                                               : CKPT_EXPORT_DEFAULT_SHARD_BYTES;
    ckpt_shards_t *s = NULL;
    model_tensor_info_t *info = NULL;
    s_out_t *o = NULL;
    char tmp[PATH_MAX], path[PATH_MAX], name[64];
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(s_check_target(out), rc, fail);
    SHOAL_CHECK_GOTO(fsutil_path(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid()), rc, fail);
    SHOAL_CHECK_GOTO(ckpt_shards_open(dirs, n_dirs, NULL, &s), rc, fail);
    const model_config_t *cfg = ckpt_shards_config(s);
    int n = model_tensor_list(cfg, NULL, 0);
    info = calloc((size_t)n + 1, sizeof *info);
    o = calloc((size_t)n + 1, sizeof *o);
    if (!info || !o) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "export: out of memory");
        goto fail;
    }
    model_tensor_list(cfg, info, n);
    SHOAL_CHECK_GOTO(s_collect(s, info, n, opts, n_dirs, o), rc, fail);
    uint64_t total = 0;
    int n_files = s_plan_files(o, n, max, &total);

    SHOAL_CHECK_GOTO(fsutil_remove_tree(tmp), rc, fail); /* an earlier process with our pid */
    SHOAL_CHECK_GOTO(fsutil_mkdir_p(tmp), rc, fail);
    SHOAL_CHECK_GOTO(model_dir_write_config(tmp, cfg,
                                            opts->dtype == CKPT_EXPORT_BF16 ? "bfloat16" : NULL),
                     rc, fail_tmp);
    for (int f = 0; f < n_files; f++) {
        s_file_name(f, n_files, name, sizeof name);
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/%s", tmp, name), rc, fail_tmp);
        SHOAL_CHECK_GOTO(s_write_file(s, o, n, f, path), rc, fail_tmp);
    }
    if (n_files > 1)
        SHOAL_CHECK_GOTO(s_write_index(tmp, o, n, n_files, total), rc, fail_tmp);
    SHOAL_CHECK_GOTO(fsutil_fsync_dir(tmp), rc, fail_tmp);
    SHOAL_CHECK_GOTO(s_check_target(out), rc, fail_tmp); /* still free: nobody raced us */
    SHOAL_CHECK_GOTO(fsutil_rename(tmp, out), rc, fail_tmp);
    log_info("export: %s: %d tensors, %llu bytes in %d file(s), from %d shard dir(s)", out, n,
             (unsigned long long)total, n_files, n_dirs);
    ckpt_shards_close(&s);
    free(o);
    free(info);
    return SHOAL_OK;

fail_tmp:
    ckpt_discard_tmp(tmp, rc);
fail:
    ckpt_shards_close(&s);
    free(o);
    free(info);
    return shoal_fail_context(rc, "export to %s", out);
}
