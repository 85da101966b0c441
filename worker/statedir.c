/* statedir.c: where the worker daemon keeps its state (statedir.h): resolving and locking the
 * directory, the kept worker id, run checkpoint roots, and checkpoint reports. */
#include "statedir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ckpt.h"
#include "fsutil.h"
#include "name.h"
#include "sha256.h"

#define S_LOCK_NAME "lock"
#define S_ID_NAME "worker_id"

shoal_err_t statedir_open(statedir_t *sd, const char *configured, const char *worker_name)
{
    sd->path[0] = 0;
    sd->lock_fd = -1;
    char dir[PATH_MAX];
    const char *env_dir = getenv("STATE_DIRECTORY");
    shoal_err_t rc;
    if (configured)
        rc = fsutil_path(dir, sizeof dir, "%s", configured);
    else if (env_dir && env_dir[0])
        rc = fsutil_path(dir, sizeof dir, "%s", env_dir);
    else
        rc = fsutil_path(dir, sizeof dir, "/var/lib/shoal/worker-%s", worker_name);
    if (rc != SHOAL_OK || (rc = fsutil_mkdir_p(dir)) != SHOAL_OK)
        return rc;
    if (!realpath(dir, sd->path))
        return shoal_fail(SHOAL_ERR_IO, "state dir %s: %s", dir, strerror(errno));
    char lock_path[PATH_MAX + 16];
    snprintf(lock_path, sizeof lock_path, "%s/" S_LOCK_NAME, sd->path);
    sd->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (sd->lock_fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: %s", lock_path, strerror(errno));
    if (flock(sd->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return shoal_fail(SHOAL_ERR_STATE, "state dir %s is in use by another worker", sd->path);
    return SHOAL_OK;
}

void statedir_close(statedir_t *sd)
{
    if (sd->lock_fd >= 0)
        close(sd->lock_fd);
    sd->lock_fd = -1;
}

shoal_err_t statedir_id_file(const statedir_t *sd, char *out, size_t cap)
{
    return fsutil_path(out, cap, "%s/" S_ID_NAME, sd->path);
}

void statedir_prev_id(const statedir_t *sd, char *out, size_t cap)
{
    char path[PATH_MAX + 16];
    uint8_t *buf = NULL;
    size_t len = 0;
    out[0] = 0;
    if (statedir_id_file(sd, path, sizeof path) == SHOAL_OK &&
        fsutil_read_file(path, &buf, &len) == SHOAL_OK && len > 0 && len < cap) {
        memcpy(out, buf, len);
        out[len] = 0;
        if (!name_ok(out))
            out[0] = 0;
    }
    free(buf);
    shoal_err_clear();
}

shoal_err_t statedir_ckpt_root(const statedir_t *sd, const char *run_id, const char *spec_dir,
                               char *out, size_t cap)
{
    shoal_err_t rc;
    if (spec_dir[0] == '/')
        rc = fsutil_path(out, cap, "%s", spec_dir);
    else
        rc = fsutil_path(out, cap, "%s/runs/%s/%s", sd->path, run_id, spec_dir);
    if (rc == SHOAL_OK)
        rc = fsutil_mkdir_p(out);
    return rc;
}

shoal_err_t statedir_ckpt_report(const char *dir, sess_req_t *r)
{
    char path[PATH_MAX];
    shoal_err_t rc = fsutil_path(path, sizeof path, "%s/" CKPT_MANIFEST_NAME, dir);
    if (rc != SHOAL_OK)
        return rc;
    ckpt_manifest_t *m = malloc(sizeof *m);
    if (!m)
        return shoal_fail(SHOAL_ERR_NOMEM, "%s: out of memory", path);
    SHOAL_CHECK_GOTO(ckpt_manifest_read(dir, m), rc, out);
    if (m->n_files > SESS_MAX_FILES - 1) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: %d files do not fit a report of %d", path,
                        m->n_files, SESS_MAX_FILES - 1);
        goto out;
    }
    r->n_files = 0;
    for (int i = 0; i < m->n_files; i++) {
        sess_file_t *o = &r->files[r->n_files++];
        snprintf(o->name, sizeof o->name, "%s", m->files[i].name);
        snprintf(o->sha256, sizeof o->sha256, "%s", m->files[i].sha256);
        o->size = m->files[i].size;
    }
    /* The manifest itself: the coordinator records every file a holder serves. */
    uint8_t digest[SHA256_LEN];
    uint64_t size = 0;
    SHOAL_CHECK_GOTO(sha256_file(path, digest, &size), rc, out);
    sess_file_t *mf = &r->files[r->n_files++];
    snprintf(mf->name, sizeof mf->name, CKPT_MANIFEST_NAME);
    mf->size = size;
    sha256_hex(digest, mf->sha256);
out:
    free(m);
    return rc;
}
