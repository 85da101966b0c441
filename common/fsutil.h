/* fsutil.h: the file-system steps durable files need (mkdir -p, whole-file read, write + fsync,
 * fsync of a directory, atomic rename, recursive removal), each failure named with its path. */
#ifndef SHOAL_FSUTIL_H
#define SHOAL_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates `path` and its missing parents (mode 0755 & ~umask), fsyncing the parent of each
 * directory it creates. Existing directories are fine; an existing non-directory is
 * SHOAL_ERR_IO. */
shoal_err_t fsutil_mkdir_p(const char *path);

/* Reads the whole file. On success *data is malloc'd (caller frees) and NUL-terminated one byte
 * past *len, so text files can be used as strings. Missing file: SHOAL_ERR_NOTFOUND. */
shoal_err_t fsutil_read_file(const char *path, uint8_t **data, size_t *len);

/* Writes all of `len` bytes to `fd` (retrying short writes and EINTR); `path` names it in errors.
 */
shoal_err_t fsutil_write_all(int fd, const void *data, size_t len, const char *path);

/* Creates or truncates `path`, writes `data`, fsyncs and closes it. Not atomic: use
 * fsutil_write_file_atomic where a reader may see the file while it is written. */
shoal_err_t fsutil_write_file(const char *path, const void *data, size_t len);

/* Writes `path`.tmp, fsyncs it, renames it over `path` and fsyncs the directory: a reader (or a
 * crash) sees the old file or the new one, never a mix. */
shoal_err_t fsutil_write_file_atomic(const char *path, const void *data, size_t len);

/* fsync of a directory, so that entries created, renamed or removed in it are durable. */
shoal_err_t fsutil_fsync_dir(const char *path);

/* fsync of an existing file by path. */
shoal_err_t fsutil_fsync_file(const char *path);

/* rename(2) `from` to `to` then fsyncs the directory of `to` (and of `from` when different). */
shoal_err_t fsutil_rename(const char *from, const char *to);

/* Removes `path` and everything under it without following symlinks. A missing path is OK. */
shoal_err_t fsutil_remove_tree(const char *path);

/* Size of a regular file. Missing: SHOAL_ERR_NOTFOUND. */
shoal_err_t fsutil_file_size(const char *path, uint64_t *size);

/* Formats a path into out[cap]; SHOAL_ERR_INVALID ("path too long") instead of truncating. */
shoal_err_t fsutil_path(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies the directory part of `path` ("." when it has none) into `out`. */
void fsutil_dirname(const char *path, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
