/* ckpt.c: atomic step checkpoints of a set of tensors (write in a temp dir, fsync everything,
 * rename), their names, listing and pruning. Loading: ckpt_load.c; manifest: ckpt_manifest.c;
 * the asynchronous writer: ckpt_writer.c. */
#include "ckpt_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "log.h"
#include "model_dir.h"
#include "numparse.h"
#include "safetensors.h"
#include "sha256.h"

/* ckpt_save calls in flight in this process: with only one, tmp dirs carrying our own pid are
 * leftovers of an earlier process that had the same pid (common in containers). */
static atomic_int s_saves_in_flight;

/* ---- names ----------------------------------------------------------------------------- */

/* "step-" followed by at least 8 decimal digits and nothing else. */
int ckpt_step_dir_parse(const char *name, int64_t *step)
{
    if (strncmp(name, "step-", 5) != 0)
        return 0;
    const char *p = name + 5;
    size_t nd = strspn(p, "0123456789");
    if (nd < 8 || nd > 18 || p[nd] != '\0')
        return 0;
    /* 8 to 18 digits: always an int64 */
    return numparse_i64(p, 0, INT64_MAX, step) == SHOAL_OK;
}

shoal_err_t ckpt_step_dir_name(int64_t step, char *out, size_t cap)
{
    if (step < 0)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint step %lld < 0", (long long)step);
    int n = snprintf(out, cap, "step-%08" PRId64, step);
    if (n < 0 || (size_t)n >= cap)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint name of step %lld is too long",
                          (long long)step);
    return SHOAL_OK;
}

shoal_err_t ckpt_step_dir(const char *root, int64_t step, char *out, size_t cap)
{
    if (step < 0)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint step %lld < 0", (long long)step);
    int n = snprintf(out, cap, "%s/step-%08" PRId64, root, step);
    if (n < 0 || (size_t)n >= cap)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint path of step %lld under %s is too long",
                          (long long)step, root);
    return SHOAL_OK;
}

/* The pid at the end of ".tmp-...-<pid>", or -1 when the name does not end so. */
static long s_tmp_pid(const char *name)
{
    const char *dash = strrchr(name, '-');
    if (!dash || !dash[1] || strspn(dash + 1, "0123456789") != strlen(dash + 1) ||
        strlen(dash + 1) > 9)
        return -1;
    int64_t pid;
    return numparse_i64(dash + 1, 0, 999999999, &pid) == SHOAL_OK ? (long)pid : -1;
}

static int s_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---- listing, cleanup, pruning --------------------------------------------------------- */

shoal_err_t ckpt_list(const char *root, int64_t *steps, int cap, int *count)
{
    *count = 0;
    DIR *d = opendir(root);
    if (!d) {
        if (errno == ENOENT)
            return SHOAL_OK;
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot list: %s", root, strerror(errno));
    }
    int64_t *all = NULL;
    int n = 0, room = 0;
    shoal_err_t rc = SHOAL_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        if (!ckpt_step_dir_parse(e->d_name, &step))
            continue;
        char path[PATH_MAX];
        if (fsutil_path(path, sizeof path, "%s/%s/" CKPT_MANIFEST_NAME, root, e->d_name) !=
            SHOAL_OK)
            continue;
        /* Committed dirs always hold a manifest (it is written before the rename); anything
         * else named step-* was not made by ckpt_save. */
        if (!s_exists(path)) {
            log_warn("checkpoint: %s/%s has no manifest.json: ignored", root, e->d_name);
            continue;
        }
        if (n == room) {
            room = room ? 2 * room : 16;
            int64_t *grown = realloc(all, (size_t)room * sizeof *all);
            if (!grown) {
                rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", root);
                goto out;
            }
            all = grown;
        }
        all[n++] = step;
    }
    if (n > 1)
        qsort(all, (size_t)n, sizeof *all, s_cmp_i64);
    for (int i = 0; i < n && i < cap; i++)
        steps[i] = all[i];
    *count = n;
out:
    free(all);
    closedir(d);
    return rc;
}

shoal_err_t ckpt_latest(const char *root, int64_t *step, char *path, size_t cap)
{
    int n = 0;
    shoal_err_t rc = ckpt_list(root, NULL, 0, &n);
    if (rc != SHOAL_OK)
        return rc;
    if (n == 0)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: no committed checkpoint", root);
    int64_t *steps = malloc((size_t)n * sizeof *steps);
    if (!steps)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", root);
    int n2 = 0;
    rc = ckpt_list(root, steps, n, &n2);
    if (rc == SHOAL_OK && n2 == 0)
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "%s: no committed checkpoint", root);
    if (rc == SHOAL_OK) {
        int last = (n2 < n ? n2 : n) - 1;
        *step = steps[last];
        if (path && cap)
            rc = ckpt_step_dir(root, steps[last], path, cap);
    }
    free(steps);
    return rc;
}

/* Removes .tmp-* dirs left by dead processes (and by an earlier process with our pid). */
static void s_remove_stale(const char *root, const char *keep_name)
{
    DIR *d = opendir(root);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".tmp-", 5) != 0 || strcmp(e->d_name, keep_name) == 0)
            continue;
        long pid = s_tmp_pid(e->d_name);
        if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue; /* another live process may be writing it */
        if (pid == (long)getpid() && atomic_load(&s_saves_in_flight) > 1)
            continue; /* another thread of ours may be writing it */
        char path[PATH_MAX];
        if (fsutil_path(path, sizeof path, "%s/%s", root, e->d_name) != SHOAL_OK)
            continue;
        log_info("checkpoint: removing stale %s", path);
        if (fsutil_remove_tree(path) != SHOAL_OK)
            log_warn("checkpoint: %s", shoal_errmsg());
    }
    closedir(d);
}

/* Keeps `keep` committed steps: the one just written (`current`) and the highest others. The
 * just-written one is never pruned, even when higher steps of an abandoned run are present.
 * Each removed one is first renamed to a .tmp-del- name (atomic) so that a crash in the middle
 * of the removal never leaves a partial step-* dir. */
shoal_err_t ckpt_prune_steps(const char *root, int keep, int64_t current)
{
    int n = 0;
    shoal_err_t rc = ckpt_list(root, NULL, 0, &n);
    if (rc != SHOAL_OK || keep <= 0 || n <= keep)
        return rc;
    int64_t *steps = malloc((size_t)n * sizeof *steps);
    if (!steps)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", root);
    int n2 = 0;
    rc = ckpt_list(root, steps, n, &n2);
    if (n2 > n)
        n2 = n;
    int others = 0; /* committed steps other than `current`, ascending in steps[0..others) */
    for (int i = 0; i < n2; i++)
        if (steps[i] != current)
            steps[others++] = steps[i];
    int drop = others - (keep - 1);
    for (int i = 0; rc == SHOAL_OK && i < drop; i++) {
        char from[PATH_MAX], to[PATH_MAX];
        rc = ckpt_step_dir(root, steps[i], from, sizeof from);
        if (rc == SHOAL_OK)
            rc = fsutil_path(to, sizeof to, "%s/.tmp-del-%s-%ld", root, strrchr(from, '/') + 1,
                             (long)getpid());
        if (rc == SHOAL_OK)
            rc = fsutil_rename(from, to);
        if (rc == SHOAL_OK)
            rc = fsutil_remove_tree(to);
    }
    free(steps);
    return rc;
}

void ckpt_discard_tmp(const char *tmp, shoal_err_t rc)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", shoal_errmsg());
    fsutil_remove_tree(tmp); /* may overwrite the message: restore it */
    shoal_fail(rc, "%s", msg);
}

/* ---- saving ---------------------------------------------------------------------------- */

void ckpt_tensors_flat(const model_tensor_info_t *info, int n, float *params, float *m, float *v,
                       ckpt_tensor_t *out)
{
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        out[i] = (ckpt_tensor_t){.info = &info[i],
                                 .param = params ? params + off : NULL,
                                 .m = m ? m + off : NULL,
                                 .v = v ? v + off : NULL};
        off += model_tensor_numel(&info[i]);
    }
}

/* Every tensor is a canonical one of cfg with its buffers: a shard that would not load again is
 * refused before anything is written. */
static shoal_err_t s_check_tensors(const model_config_t *cfg, const ckpt_tensor_t *t, int n)
{
    model_tensor_info_t *sorted = NULL;
    int n_sorted = 0;
    shoal_err_t rc = model_dir_sorted_tensors(cfg, &sorted, &n_sorted);
    for (int i = 0; rc == SHOAL_OK && i < n; i++) {
        const model_tensor_info_t *want =
            t[i].info ? model_dir_lookup(sorted, n_sorted, t[i].info->name) : NULL;
        if (!want || want->ndim != t[i].info->ndim || want->shape[0] != t[i].info->shape[0] ||
            (want->ndim == 2 && want->shape[1] != t[i].info->shape[1]) ||
            want->is_bias != t[i].info->is_bias)
            rc = shoal_fail(SHOAL_ERR_INVALID, "tensor %d (%s) is not a tensor of the model", i,
                            t[i].info ? t[i].info->name : "no info");
        else if (!t[i].param || (!want->is_bias && (!t[i].m || !t[i].v)))
            rc = shoal_fail(SHOAL_ERR_INVALID, "tensor %s: missing buffers", want->name);
    }
    free(sorted);
    return rc;
}

/* model.safetensors (moments 0) or optimizer.safetensors (moments 1) of the tensors t[0..n). */
static shoal_err_t s_write_tensors(const char *path, const ckpt_tensor_t *t, int n, int moments)
{
    st_tensor_t *st = calloc(2 * (size_t)n + 1, sizeof *st);
    char(*names)[128] = calloc(2 * (size_t)n + 1, sizeof *names);
    shoal_err_t rc = SHOAL_OK;
    if (!st || !names) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!moments) {
            st[k++] = model_dir_st_tensor(t[i].info, t[i].info->name, t[i].param);
            continue;
        }
        for (int which = 0; !t[i].info->is_bias && which < 2; which++, k++) {
            ckpt_moment_name(t[i].info->name, which, names[k], sizeof names[k]);
            st[k] = model_dir_st_tensor(t[i].info, names[k], which ? t[i].v : t[i].m);
        }
    }
    static const char *const opt_meta[] = {"format", "pt", "content", "adam moments", NULL};
    rc = st_write_file(path, st, k, moments ? opt_meta : model_dir_st_meta);
out:
    free(names);
    free(st);
    return rc;
}

/* Moves the finished tmp dir to its final name; an existing checkpoint of the same step is
 * swapped out atomically (RENAME_EXCHANGE) and then removed. */
shoal_err_t ckpt_commit_dir(const char *root, const char *tmp, const char *final)
{
    if (s_exists(final)) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
            shoal_err_t rc = fsutil_fsync_dir(root);
            if (rc == SHOAL_OK && fsutil_remove_tree(tmp) != SHOAL_OK) /* now the old one */
                log_warn("checkpoint: %s", shoal_errmsg());            /* committed all the same */
            return rc;
        }
        if (errno != EINVAL && errno != ENOSYS)
            return shoal_fail(SHOAL_ERR_IO, "rename %s <-> %s: %s", tmp, final, strerror(errno));
        /* No RENAME_EXCHANGE on this file system: move the old one aside first. */
        char old[PATH_MAX];
        shoal_err_t rc = fsutil_path(old, sizeof old, "%s.old-%ld", tmp, (long)getpid());
        if (rc == SHOAL_OK)
            rc = fsutil_rename(final, old);
        if (rc == SHOAL_OK)
            rc = fsutil_rename(tmp, final);
        if (rc == SHOAL_OK && fsutil_remove_tree(old) != SHOAL_OK)
            log_warn("checkpoint: %s", shoal_errmsg());
        return rc;
    }
    return fsutil_rename(tmp, final);
}

shoal_err_t ckpt_save_tensors(const char *root, int64_t step, const model_config_t *cfg,
                              const ckpt_tensor_t *t, int n, const char *state_json, int keep)
{
    if (!root || !root[0] || step < 0 || !cfg || n < 0 || (n > 0 && !t))
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_save: bad arguments (root, step %lld)",
                          (long long)step);
    const char *state = state_json ? state_json : "{}";
    json_error_t jerr;
    json_t *probe = json_loads(state, JSON_DECODE_ANY, &jerr);
    if (!probe)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint step %lld: trainer state is not JSON: %s",
                          (long long)step, jerr.text);
    json_decref(probe);
    shoal_err_t rc = s_check_tensors(cfg, t, n);
    if (rc != SHOAL_OK)
        return shoal_fail_context(rc, "checkpoint step %lld", (long long)step);

    atomic_fetch_add(&s_saves_in_flight, 1);
    char step_name[32], name[64], tmp[PATH_MAX], final[PATH_MAX], path[PATH_MAX];
    SHOAL_CHECK_GOTO(ckpt_step_dir_name(step, step_name, sizeof step_name), rc, fail);
    snprintf(name, sizeof name, ".tmp-%s-%ld", step_name, (long)getpid());
    SHOAL_CHECK_GOTO(fsutil_path(tmp, sizeof tmp, "%s/%s", root, name), rc, fail);
    SHOAL_CHECK_GOTO(ckpt_step_dir(root, step, final, sizeof final), rc, fail);
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/" CKPT_OPTIMIZER_FILE, tmp), rc, fail);
    SHOAL_CHECK_GOTO(fsutil_mkdir_p(root), rc, fail);
    s_remove_stale(root, name); /* before writing: frees the space of crashed writes */
    SHOAL_CHECK_GOTO(fsutil_remove_tree(tmp), rc, fail);
    if (mkdir(tmp, 0755) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    /* the paths below are no longer than the optimizer's: they fit */
    SHOAL_CHECK_GOTO(model_dir_write_config(tmp, cfg, NULL), rc, fail_tmp);
    fsutil_path(path, sizeof path, "%s/" CKPT_MODEL_FILE, tmp);
    SHOAL_CHECK_GOTO(s_write_tensors(path, t, n, 0), rc, fail_tmp);
    fsutil_path(path, sizeof path, "%s/" CKPT_OPTIMIZER_FILE, tmp);
    SHOAL_CHECK_GOTO(s_write_tensors(path, t, n, 1), rc, fail_tmp);
    fsutil_path(path, sizeof path, "%s/" CKPT_STATE_FILE, tmp);
    SHOAL_CHECK_GOTO(fsutil_write_file(path, state, strlen(state)), rc, fail_tmp);
    SHOAL_CHECK_GOTO(ckpt_manifest_write(tmp, step), rc, fail_tmp);
    SHOAL_CHECK_GOTO(fsutil_fsync_dir(tmp), rc, fail_tmp);
    SHOAL_CHECK_GOTO(ckpt_commit_dir(root, tmp, final), rc, fail_tmp);
    /* committed: what follows is housekeeping and cannot undo the checkpoint */
    if (ckpt_prune_steps(root, keep, step) != SHOAL_OK)
        log_warn("checkpoint: pruning %s: %s", root, shoal_errmsg());
    atomic_fetch_sub(&s_saves_in_flight, 1);
    log_info("checkpoint: committed %s", final);
    return SHOAL_OK;

fail_tmp:
    ckpt_discard_tmp(tmp, rc);
fail:
    atomic_fetch_sub(&s_saves_in_flight, 1);
    return shoal_fail_context(rc, "checkpoint step %lld", (long long)step);
}

shoal_err_t ckpt_save(const char *root, int64_t step, const model_config_t *cfg,
                      const float *params, const float *adam_m, const float *adam_v,
                      const char *trainer_state_json, int keep)
{
    if (!root || !root[0] || step < 0 || !cfg || !params || !adam_m || !adam_v)
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_save: bad arguments (root, step %lld)",
                          (long long)step);
    int n = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *info = calloc((size_t)n + 1, sizeof *info);
    ckpt_tensor_t *t = calloc((size_t)n + 1, sizeof *t);
    shoal_err_t rc;
    if (!info || !t) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "checkpoint step %lld: out of memory", (long long)step);
        goto out;
    }
    model_tensor_list(cfg, info, n);
    /* the buffers are only read: the casts serve the shared tensor type */
    ckpt_tensors_flat(info, n, (float *)params, (float *)adam_m, (float *)adam_v, t);
    rc = ckpt_save_tensors(root, step, cfg, t, n, trainer_state_json, keep);
out:
    free(t);
    free(info);
    return rc;
}
