/* ckpt.c: atomic step checkpoints (write in a temp dir, fsync everything, rename), verified
 * loading against manifest.json digests, pruning, and the asynchronous writer thread. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
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

#define S_MANIFEST_FORMAT "shoal-checkpoint-v1"

static const char *const s_files[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                                      "trainer_state.json"};
enum { S_NFILES = sizeof s_files / sizeof s_files[0] };

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

static int s_is_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
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
static shoal_err_t s_prune(const char *root, int keep, int64_t current)
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

/* ---- saving ---------------------------------------------------------------------------- */

static shoal_err_t s_write_optimizer(const char *path, const model_config_t *cfg, const float *m,
                                     const float *v)
{
    int n = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    st_tensor_t *st = calloc(2 * (size_t)n, sizeof *st);
    char(*names)[128] = calloc(2 * (size_t)n, sizeof *names);
    shoal_err_t rc = SHOAL_OK;
    if (!t || !st || !names) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    model_tensor_list(cfg, t, n);
    int k = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = model_tensor_numel(&t[i]);
        if (!t[i].is_bias) {
            for (int which = 0; which < 2; which++, k++) {
                snprintf(names[k], sizeof names[k], "%s.%s", t[i].name,
                         which ? "exp_avg_sq" : "exp_avg");
                st[k] = model_dir_st_tensor(&t[i], names[k], (which ? v : m) + off);
            }
        }
        off += numel;
    }
    static const char *const meta[] = {"format", "pt", "content", "adam moments", NULL};
    rc = st_write_file(path, st, k, meta);
out:
    free(names);
    free(st);
    free(t);
    return rc;
}

static shoal_err_t s_write_manifest(const char *dir, int64_t step)
{
    json_t *root = json_object();
    json_t *files = json_array();
    char *text = NULL;
    shoal_err_t rc = SHOAL_OK;
    char path[PATH_MAX];
    if (!root || !files) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: manifest: out of memory", dir);
        goto out;
    }
    json_object_set_new(root, "format", json_string(S_MANIFEST_FORMAT));
    json_object_set_new(root, "step", json_integer(step));
    json_object_set(root, "files", files);
    for (int i = 0; i < S_NFILES; i++) {
        uint8_t digest[SHA256_LEN];
        char hex[SHA256_HEX_LEN + 1];
        uint64_t size = 0;
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/%s", dir, s_files[i]), rc, out);
        SHOAL_CHECK_GOTO(sha256_file(path, digest, &size), rc, out);
        sha256_hex(digest, hex);
        json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "name", s_files[i], "size",
                                               (json_int_t)size, "sha256", hex));
    }
    text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: manifest: out of memory", dir);
        goto out;
    }
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/" CKPT_MANIFEST_NAME, dir), rc, out);
    rc = fsutil_write_file(path, text, strlen(text));
out:
    free(text);
    json_decref(files);
    json_decref(root);
    return rc;
}

/* Moves the finished tmp dir to its final name; an existing checkpoint of the same step is
 * swapped out atomically (RENAME_EXCHANGE) and then removed. */
static shoal_err_t s_commit(const char *root, const char *tmp, const char *final)
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

shoal_err_t ckpt_save(const char *root, int64_t step, const model_config_t *cfg,
                      const float *params, const float *adam_m, const float *adam_v,
                      const char *trainer_state_json, int keep)
{
    if (!root || !root[0] || step < 0 || !cfg || !params || !adam_m || !adam_v)
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_save: bad arguments (root, step %lld)",
                          (long long)step);
    const char *state = trainer_state_json ? trainer_state_json : "{}";
    json_error_t jerr;
    json_t *probe = json_loads(state, JSON_DECODE_ANY, &jerr);
    if (!probe)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint step %lld: trainer state is not JSON: %s",
                          (long long)step, jerr.text);
    json_decref(probe);

    atomic_fetch_add(&s_saves_in_flight, 1);
    char step_name[32], name[64], tmp[PATH_MAX], final[PATH_MAX], path[PATH_MAX];
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(ckpt_step_dir_name(step, step_name, sizeof step_name), rc, fail);
    snprintf(name, sizeof name, ".tmp-%s-%ld", step_name, (long)getpid());
    SHOAL_CHECK_GOTO(fsutil_path(tmp, sizeof tmp, "%s/%s", root, name), rc, fail);
    SHOAL_CHECK_GOTO(ckpt_step_dir(root, step, final, sizeof final), rc, fail);
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/optimizer.safetensors", tmp), rc, fail);
    SHOAL_CHECK_GOTO(fsutil_mkdir_p(root), rc, fail);
    s_remove_stale(root, name); /* before writing: frees the space of crashed writes */
    SHOAL_CHECK_GOTO(fsutil_remove_tree(tmp), rc, fail);
    if (mkdir(tmp, 0755) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    SHOAL_CHECK_GOTO(model_dir_save(tmp, cfg, params), rc, fail_tmp);
    fsutil_path(path, sizeof path, "%s/optimizer.safetensors", tmp); /* fits: checked above */
    SHOAL_CHECK_GOTO(s_write_optimizer(path, cfg, adam_m, adam_v), rc, fail_tmp);
    fsutil_path(path, sizeof path, "%s/trainer_state.json", tmp);
    SHOAL_CHECK_GOTO(fsutil_write_file(path, state, strlen(state)), rc, fail_tmp);
    SHOAL_CHECK_GOTO(s_write_manifest(tmp, step), rc, fail_tmp);
    SHOAL_CHECK_GOTO(fsutil_fsync_dir(tmp), rc, fail_tmp);
    SHOAL_CHECK_GOTO(s_commit(root, tmp, final), rc, fail_tmp);
    /* committed: what follows is housekeeping and cannot undo the checkpoint */
    if (s_prune(root, keep, step) != SHOAL_OK)
        log_warn("checkpoint: pruning %s: %s", root, shoal_errmsg());
    atomic_fetch_sub(&s_saves_in_flight, 1);
    log_info("checkpoint: committed %s", final);
    return SHOAL_OK;

fail_tmp : {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", shoal_errmsg());
    fsutil_remove_tree(tmp); /* may overwrite the message: restore it below */
    shoal_fail(rc, "%s", msg);
}
fail:
    atomic_fetch_sub(&s_saves_in_flight, 1);
    return shoal_fail_context(rc, "checkpoint step %lld", (long long)step);
}

/* ---- loading --------------------------------------------------------------------------- */

shoal_err_t ckpt_manifest_read(const char *dir, ckpt_manifest_t *m)
{
    char mpath[PATH_MAX];
    shoal_err_t rc = fsutil_path(mpath, sizeof mpath, "%s/" CKPT_MANIFEST_NAME, dir);
    if (rc != SHOAL_OK)
        return rc;
    if (!s_exists(mpath))
        return shoal_fail(s_is_dir(dir) ? SHOAL_ERR_FORMAT : SHOAL_ERR_NOTFOUND,
                          "%s: missing (not a committed checkpoint)", mpath);
    json_error_t jerr;
    json_t *root = json_load_file(mpath, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return shoal_fail(SHOAL_ERR_FORMAT, "%s:%d:%d: %s", mpath, jerr.line, jerr.column,
                          jerr.text);
    json_t *files = json_object_get(root, "files");
    json_t *jstep = json_object_get(root, "step");
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, S_MANIFEST_FORMAT) != 0 || !json_is_array(files) ||
        (jstep && (!json_is_integer(jstep) || json_integer_value(jstep) < 0))) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: not a %s manifest", mpath, S_MANIFEST_FORMAT);
        goto out;
    }
    if (json_array_size(files) > CKPT_MANIFEST_MAX_FILES) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: %zu files listed (at most %d)", mpath,
                        json_array_size(files), CKPT_MANIFEST_MAX_FILES);
        goto out;
    }
    m->step = jstep ? (int64_t)json_integer_value(jstep) : -1;
    m->n_files = 0;
    int seen[S_NFILES] = {0};
    size_t i;
    json_t *ent;
    json_array_foreach(files, i, ent)
    {
        const char *name = json_string_value(json_object_get(ent, "name"));
        json_t *jsize = json_object_get(ent, "size");
        const char *hex = json_string_value(json_object_get(ent, "sha256"));
        uint8_t digest[SHA256_LEN];
        if (!name || !name[0] || strchr(name, '/') || strcmp(name, "..") == 0 ||
            strlen(name) >= CKPT_FILE_NAME_MAX || !json_is_integer(jsize) ||
            json_integer_value(jsize) < 0 || !hex || sha256_from_hex(hex, digest) != SHOAL_OK) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: files[%zu] is malformed", mpath, i);
            goto out;
        }
        for (int k = 0; k < S_NFILES; k++)
            if (strcmp(name, s_files[k]) == 0)
                seen[k] = 1;
        ckpt_file_t *f = &m->files[m->n_files++];
        snprintf(f->name, sizeof f->name, "%s", name);
        snprintf(f->sha256, sizeof f->sha256, "%s", hex);
        f->size = (uint64_t)json_integer_value(jsize);
    }
    for (int k = 0; k < S_NFILES; k++)
        if (!seen[k]) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: does not list %s", mpath, s_files[k]);
            goto out;
        }
out:
    json_decref(root);
    return rc;
}

/* Checks every file the manifest lists: present, its size, then its SHA-256. */
static shoal_err_t s_verify_files(const char *dir, const ckpt_manifest_t *m)
{
    char path[PATH_MAX];
    shoal_err_t rc = SHOAL_OK;
    for (int i = 0; i < m->n_files; i++) {
        const ckpt_file_t *f = &m->files[i];
        uint8_t want[SHA256_LEN], got[SHA256_LEN];
        uint64_t size = 0;
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/%s", dir, f->name), rc, out);
        if (fsutil_file_size(path, &size) != SHOAL_OK)
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: listed in manifest.json but missing", path);
        if (size != f->size)
            return shoal_fail(SHOAL_ERR_FORMAT,
                              "%s: %llu bytes but manifest.json says %llu (truncated or altered)",
                              path, (unsigned long long)size, (unsigned long long)f->size);
        SHOAL_CHECK_GOTO(sha256_from_hex(f->sha256, want), rc, out);
        SHOAL_CHECK_GOTO(sha256_file(path, got, NULL), rc, out);
        if (memcmp(got, want, SHA256_LEN) != 0) {
            char hgot[SHA256_HEX_LEN + 1];
            sha256_hex(got, hgot);
            return shoal_fail(SHOAL_ERR_FORMAT,
                              "%s: SHA-256 %s does not match manifest.json (%s): file altered",
                              path, hgot, f->sha256);
        }
    }
out:
    return rc;
}

static shoal_err_t s_verify_manifest(const char *dir)
{
    ckpt_manifest_t *m = malloc(sizeof *m);
    if (!m)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", dir);
    shoal_err_t rc = ckpt_manifest_read(dir, m);
    if (rc == SHOAL_OK)
        rc = s_verify_files(dir, m);
    free(m);
    return rc;
}

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

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static shoal_err_t s_read_optimizer(const char *path, const model_config_t *cfg, float *m, float *v)
{
    int n = model_tensor_list(cfg, NULL, 0);
    model_tensor_info_t *t = calloc((size_t)n, sizeof *t);
    char(*names)[128] = calloc(2 * (size_t)n, sizeof *names);
    const char **sorted = calloc(2 * (size_t)n, sizeof *sorted);
    st_file_t *f = NULL;
    shoal_err_t rc = SHOAL_OK;
    if (!t || !names || !sorted) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    model_tensor_list(cfg, t, n);
    SHOAL_CHECK_GOTO(st_open(path, &f), rc, out);
    int k = 0;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = model_tensor_numel(&t[i]);
        if (t[i].is_bias) {
            if (m)
                memset(m + off, 0, (size_t)numel * sizeof *m);
            if (v)
                memset(v + off, 0, (size_t)numel * sizeof *v);
        }
        for (int which = 0; !t[i].is_bias && which < 2; which++, k++) {
            snprintf(names[k], sizeof names[k], "%s.%s", t[i].name,
                     which ? "exp_avg_sq" : "exp_avg");
            sorted[k] = names[k];
            float *dst = which ? v : m;
            st_info_t in;
            if (!st_has(f, names[k])) {
                rc = shoal_fail(SHOAL_ERR_NOTFOUND, "%s: missing tensor %s", path, names[k]);
                goto out;
            }
            st_info(f, names[k], &in);
            if (in.ndim != t[i].ndim || in.shape[0] != t[i].shape[0] ||
                (t[i].ndim == 2 && in.shape[1] != t[i].shape[1])) {
                char want[64];
                if (t[i].ndim == 1)
                    snprintf(want, sizeof want, "[%lld]", (long long)t[i].shape[0]);
                else
                    snprintf(want, sizeof want, "[%lld, %lld]", (long long)t[i].shape[0],
                             (long long)t[i].shape[1]);
                rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: tensor %s has the wrong shape (expected %s)",
                                path, names[k], want);
                goto out;
            }
            if (dst)
                SHOAL_CHECK_GOTO(st_read_f32(f, names[k], dst + off, numel), rc, out);
        }
        off += numel;
    }
    qsort(sorted, (size_t)k, sizeof *sorted, s_cmp_str);
    for (int i = 0; i < st_count(f); i++) {
        const char *nm = st_name(f, i);
        if (!bsearch(&nm, sorted, (size_t)k, sizeof *sorted, s_cmp_str)) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: unexpected tensor %s", path, nm);
            goto out;
        }
    }
out:
    st_close(&f);
    free(sorted);
    free(names);
    free(t);
    return rc;
}

shoal_err_t ckpt_load(const char *dir, const model_config_t *expect, float *params, float *adam_m,
                      float *adam_v, char **trainer_state_json)
{
    if (trainer_state_json)
        *trainer_state_json = NULL;
    if (!dir || !expect)
        return shoal_fail(SHOAL_ERR_INVALID, "ckpt_load: bad arguments");
    char path[PATH_MAX];
    model_config_t got;
    shoal_err_t rc;
    SHOAL_CHECK_GOTO(s_verify_manifest(dir), rc, out);
    SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/config.json", dir), rc, out);
    SHOAL_CHECK_GOTO(model_config_load(path, &got), rc, out);
    if (!model_config_equal(&got, expect)) {
        rc = s_config_mismatch(path, &got, expect);
        goto out;
    }
    if (params) {
        fsutil_path(path, sizeof path, "%s/model.safetensors", dir); /* shorter than above */
        SHOAL_CHECK_GOTO(model_dir_read_file(path, expect, params), rc, out);
    }
    if (adam_m || adam_v) {
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/optimizer.safetensors", dir), rc, out);
        SHOAL_CHECK_GOTO(s_read_optimizer(path, expect, adam_m, adam_v), rc, out);
    }
    if (trainer_state_json) {
        uint8_t *text = NULL;
        size_t len = 0;
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/trainer_state.json", dir), rc, out);
        SHOAL_CHECK_GOTO(fsutil_read_file(path, &text, &len), rc, out);
        json_error_t jerr;
        json_t *probe = json_loadb((const char *)text, len, JSON_DECODE_ANY, &jerr);
        if (!probe) {
            free(text);
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: not JSON: %s", path, jerr.text);
            goto out;
        }
        json_decref(probe);
        *trainer_state_json = (char *)text;
    }
out:
    return rc;
}

/* ---- asynchronous writer --------------------------------------------------------------- */

struct ckpt_writer {
    pthread_t thread;
    int running;
    /* the job: owned snapshots */
    char *root;
    int64_t step;
    model_config_t cfg;
    float *params, *m, *v;
    int64_t cap;
    char *state;
    int keep;
    /* the result, read only after pthread_join */
    shoal_err_t rc;
    int unreported;
    char msg[1024];
    int64_t last_ok_step;
};

ckpt_writer_t *ckpt_writer_new(void)
{
    ckpt_writer_t *w = calloc(1, sizeof *w);
    if (w)
        w->last_ok_step = -1;
    return w;
}

static void *s_writer_main(void *arg)
{
    ckpt_writer_t *w = arg;
    w->rc = ckpt_save(w->root, w->step, &w->cfg, w->params, w->m, w->v, w->state, w->keep);
    if (w->rc != SHOAL_OK) {
        /* shoal_errmsg() is thread-local: carry the text to the thread that asks */
        snprintf(w->msg, sizeof w->msg, "%s", shoal_errmsg());
        w->unreported = 1;
    } else {
        w->last_ok_step = w->step;
    }
    return NULL;
}

static void s_join(ckpt_writer_t *w)
{
    if (w->running) {
        pthread_join(w->thread, NULL);
        w->running = 0;
    }
}

shoal_err_t ckpt_writer_wait(ckpt_writer_t *w)
{
    s_join(w);
    if (!w->unreported)
        return SHOAL_OK;
    w->unreported = 0;
    return shoal_fail(w->rc, "%s", w->msg);
}

shoal_err_t ckpt_writer_submit(ckpt_writer_t *w, const char *root, int64_t step,
                               const model_config_t *cfg, const float *params, const float *m,
                               const float *v, int64_t n, const char *state_json, int keep)
{
    shoal_err_t rc = ckpt_writer_wait(w);
    if (rc != SHOAL_OK)
        return rc;
    if (!root || !cfg || !params || !m || !v)
        return shoal_fail(SHOAL_ERR_INVALID, "checkpoint writer: bad arguments");
    int64_t want = model_dir_param_count(cfg);
    if (n != want)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "checkpoint writer: %lld floats given, the model has %lld", (long long)n,
                          (long long)want);
    if (n > w->cap) {
        free(w->params);
        free(w->m);
        free(w->v);
        w->params = malloc((size_t)n * sizeof(float));
        w->m = malloc((size_t)n * sizeof(float));
        w->v = malloc((size_t)n * sizeof(float));
        w->cap = (w->params && w->m && w->v) ? n : 0;
        if (!w->cap)
            return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: cannot snapshot %lld floats",
                              (long long)n);
    }
    memcpy(w->params, params, (size_t)n * sizeof(float));
    memcpy(w->m, m, (size_t)n * sizeof(float));
    memcpy(w->v, v, (size_t)n * sizeof(float));
    free(w->root);
    free(w->state);
    w->root = strdup(root);
    w->state = strdup(state_json ? state_json : "{}");
    if (!w->root || !w->state)
        return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint writer: out of memory");
    w->cfg = *cfg;
    w->step = step;
    w->keep = keep;
    w->rc = SHOAL_OK;
    int e = pthread_create(&w->thread, NULL, s_writer_main, w);
    if (e != 0)
        return shoal_fail(SHOAL_ERR_IO, "checkpoint writer: cannot start thread: %s", strerror(e));
    w->running = 1;
    return SHOAL_OK;
}

int64_t ckpt_writer_last_step(const ckpt_writer_t *w)
{
    return w->last_ok_step;
}

void ckpt_writer_destroy(ckpt_writer_t **wp)
{
    if (!wp || !*wp)
        return;
    ckpt_writer_t *w = *wp;
    if (ckpt_writer_wait(w) != SHOAL_OK)
        log_error("checkpoint writer: %s", shoal_errmsg());
    free(w->params);
    free(w->m);
    free(w->v);
    free(w->root);
    free(w->state);
    free(w);
    *wp = NULL;
}
