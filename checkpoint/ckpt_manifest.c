/* ckpt_manifest.c: manifest.json of a checkpoint dir: written last (sizes and SHA-256 of every
 * other file), read with every field checked, and the files verified against it. */
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_int.h"
#include "fsutil.h"
#include "sha256.h"

#define S_MANIFEST_FORMAT "shoal-checkpoint-v1"

const char *const ckpt_layout_files[] = {CKPT_CONFIG_FILE, CKPT_MODEL_FILE, CKPT_OPTIMIZER_FILE,
                                         CKPT_STATE_FILE};

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

shoal_err_t ckpt_manifest_write(const char *dir, int64_t step)
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
    for (int i = 0; i < CKPT_LAYOUT_NFILES; i++) {
        uint8_t digest[SHA256_LEN];
        char hex[SHA256_HEX_LEN + 1];
        uint64_t size = 0;
        SHOAL_CHECK_GOTO(fsutil_path(path, sizeof path, "%s/%s", dir, ckpt_layout_files[i]), rc, out);
        SHOAL_CHECK_GOTO(sha256_file(path, digest, &size), rc, out);
        sha256_hex(digest, hex);
        json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "name", ckpt_layout_files[i], "size",
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

shoal_err_t ckpt_manifest_read(const char *dir, ckpt_manifest_t *m)
{
    char mpath[PATH_MAX];
    shoal_err_t rc = fsutil_path(mpath, sizeof mpath, "%s/" CKPT_MANIFEST_NAME, dir);
    if (rc != SHOAL_OK)
        return rc;
    if (!s_exists(mpath))
        return shoal_fail(s_is_dir(dir) ? SHOAL_ERR_FORMAT : SHOAL_ERR_NOTFOUND,
                          "%s: missing (not a committed checkpoint)", mpath);
    uint8_t *text = NULL;
    size_t len = 0;
    if ((rc = fsutil_read_file(mpath, &text, &len)) != SHOAL_OK)
        return rc;
    rc = ckpt_manifest_parse((const char *)text, len, mpath, m);
    free(text);
    return rc;
}

shoal_err_t ckpt_manifest_parse(const char *text, size_t len, const char *mpath,
                                ckpt_manifest_t *m)
{
    shoal_err_t rc = SHOAL_OK;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
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
    int seen[CKPT_LAYOUT_NFILES] = {0};
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
        for (int k = 0; k < CKPT_LAYOUT_NFILES; k++)
            if (strcmp(name, ckpt_layout_files[k]) == 0)
                seen[k] = 1;
        ckpt_file_t *f = &m->files[m->n_files++];
        snprintf(f->name, sizeof f->name, "%s", name);
        snprintf(f->sha256, sizeof f->sha256, "%s", hex);
        f->size = (uint64_t)json_integer_value(jsize);
    }
    for (int k = 0; k < CKPT_LAYOUT_NFILES; k++)
        if (!seen[k]) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: does not list %s", mpath, ckpt_layout_files[k]);
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

shoal_err_t ckpt_manifest_verify(const char *dir)
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
