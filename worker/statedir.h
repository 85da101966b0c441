/* statedir.h: the worker daemon's state directory, the one place that knows its layout:
 *   <state dir>/lock                       flock'd while a worker uses the directory
 *   <state dir>/worker_id                  the id the coordinator gave (sent as prev_id)
 *   <state dir>/runs/<run id>/<ckpt dir>/  a run's checkpoints (checkpoint/ckpt.h layout),
 *                                          unless the run spec's checkpoint.dir is absolute
 * and what a checkpoint report to the coordinator lists. ops/WORKER.md documents it for
 * operators. */
#ifndef SHOAL_WORKER_STATEDIR_H
#define SHOAL_WORKER_STATEDIR_H

#include <limits.h>
#include <stddef.h>

#include "err.h"
#include "session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char path[PATH_MAX]; /* absolute, symlinks resolved */
    int lock_fd;         /* -1: not locked */
} statedir_t;

/* Opens the state directory: `configured` (--state-dir) if not NULL, else $STATE_DIRECTORY
 * (systemd's StateDirectory=), else /var/lib/shoal/worker-<worker_name>; creates it and takes
 * its lock. Errors: SHOAL_ERR_IO (cannot create, resolve or lock), SHOAL_ERR_STATE (another
 * worker holds the lock), SHOAL_ERR_INVALID (path too long). sd->lock_fd is -1 or the lock on
 * return either way: call statedir_close. */
shoal_err_t statedir_open(statedir_t *sd, const char *configured, const char *worker_name);

/* Releases the lock; idempotent. */
void statedir_close(statedir_t *sd);

/* The file that keeps the worker id across restarts, into out[cap]. */
shoal_err_t statedir_id_file(const statedir_t *sd, char *out, size_t cap);

/* The worker id kept by an earlier run of this worker into out[cap]; "" when there is none or
 * it is not a valid name. Never fails. */
void statedir_prev_id(const statedir_t *sd, char *out, size_t cap);

/* The checkpoint root of run `run_id` (a valid name) whose spec says checkpoint.dir is
 * `spec_dir`: spec_dir itself when absolute, else <state dir>/runs/<run_id>/<spec_dir>; created.
 * Errors: SHOAL_ERR_INVALID (path too long), SHOAL_ERR_IO. */
shoal_err_t statedir_ckpt_root(const statedir_t *sd, const char *run_id, const char *spec_dir,
                               char *out, size_t cap);

/* Fills r->files / r->n_files from the committed checkpoint in `dir`: every file its manifest
 * lists (checked by ckpt_manifest_read) and the manifest itself, since the coordinator records
 * every file a holder serves. Errors: ckpt_manifest_read's, SHOAL_ERR_FORMAT when the files do
 * not fit a report, sha256_file's for the manifest. */
shoal_err_t statedir_ckpt_report(const char *dir, sess_req_t *r);

#ifdef __cplusplus
}
#endif
#endif
