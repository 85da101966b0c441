/* fsutil.c: durable file-system helpers (see fsutil.h). */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

shoal_err_t fsutil_mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return shoal_fail(SHOAL_ERR_INVALID, "mkdir -p: bad path '%s'", path);
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, 0755) == 0) {
            /* the new entry must survive a crash too: fsync the directory holding it */
            char parent[PATH_MAX];
            fsutil_dirname(buf, parent, sizeof parent);
            shoal_err_t rc = fsutil_fsync_dir(parent);
            if (rc != SHOAL_OK)
                return rc;
        } else if (errno != EEXIST) {
            return shoal_fail(SHOAL_ERR_IO, "%s: cannot create directory: %s", buf,
                              strerror(errno));
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return shoal_fail(SHOAL_ERR_IO, "%s: exists and is not a directory", buf);
    return SHOAL_OK;
}

shoal_err_t fsutil_read_file(const char *path, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO, "%s: %s", path,
                          strerror(errno));
    shoal_err_t rc = SHOAL_OK;
    struct stat st;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: %s", path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = shoal_fail(SHOAL_ERR_IO, "%s: not a regular file", path);
        goto out_close;
    }
    size_t cap = (size_t)st.st_size;
    buf = malloc(cap + 1);
    if (!buf) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, cap + 1);
        goto out_close;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = shoal_fail(SHOAL_ERR_IO, "%s: read: %s", path, strerror(errno));
            goto out_free;
        }
        if (r == 0)
            break; /* shrank while reading: return what is there */
        got += (size_t)r;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    buf = NULL;
out_free:
    free(buf);
out_close:
    close(fd);
    return rc;
}

shoal_err_t fsutil_write_all(int fd, const void *data, size_t len, const char *path)
{
    const uint8_t *p = data;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return shoal_fail(SHOAL_ERR_IO, "%s: write: %s", path,
                              w < 0 ? strerror(errno) : "no progress");
        p += w;
        len -= (size_t)w;
    }
    return SHOAL_OK;
}

shoal_err_t fsutil_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    shoal_err_t rc = fsutil_write_all(fd, data, len, path);
    if (rc == SHOAL_OK && fsync(fd) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == SHOAL_OK)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: close: %s", path, strerror(errno));
    return rc;
}

shoal_err_t fsutil_write_file_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return shoal_fail(SHOAL_ERR_INVALID, "%s: path too long", path);
    shoal_err_t rc = fsutil_write_file(tmp, data, len);
    if (rc == SHOAL_OK)
        rc = fsutil_rename(tmp, path);
    if (rc != SHOAL_OK)
        unlink(tmp);
    return rc;
}

static shoal_err_t s_fsync_open(const char *path, int flags, const char *what)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO,
                          "%s: cannot open %s for fsync: %s", path, what, strerror(errno));
    shoal_err_t rc = SHOAL_OK;
    if (fsync(fd) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

shoal_err_t fsutil_fsync_dir(const char *path)
{
    return s_fsync_open(path, O_RDONLY | O_DIRECTORY, "directory");
}

shoal_err_t fsutil_fsync_file(const char *path)
{
    return s_fsync_open(path, O_RDONLY, "file");
}

void fsutil_dirname(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, cap, ".");
        return;
    }
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/x" -> "/" */
    if (n >= cap)
        n = cap - 1;
    memcpy(out, path, n);
    out[n] = '\0';
}

shoal_err_t fsutil_rename(const char *from, const char *to)
{
    if (rename(from, to) != 0)
        return shoal_fail(SHOAL_ERR_IO, "rename %s -> %s: %s", from, to, strerror(errno));
    char d_to[PATH_MAX], d_from[PATH_MAX];
    fsutil_dirname(to, d_to, sizeof d_to);
    fsutil_dirname(from, d_from, sizeof d_from);
    shoal_err_t rc = fsutil_fsync_dir(d_to);
    if (rc == SHOAL_OK && strcmp(d_to, d_from) != 0)
        rc = fsutil_fsync_dir(d_from);
    return rc;
}

static int s_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = (type == FTW_DP) ? rmdir(path) : unlink(path);
    if (r != 0 && errno != ENOENT)
        return errno;
    return 0;
}

shoal_err_t fsutil_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return SHOAL_OK;
        return shoal_fail(SHOAL_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0 && errno != ENOENT)
            return shoal_fail(SHOAL_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        return SHOAL_OK;
    }
    int r = nftw(path, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (r != 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot remove tree: %s", path,
                          strerror(r > 0 ? r : errno));
    return SHOAL_OK;
}

shoal_err_t fsutil_file_size(const char *path, uint64_t *size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO, "%s: %s", path,
                          strerror(errno));
    if (!S_ISREG(st.st_mode))
        return shoal_fail(SHOAL_ERR_IO, "%s: not a regular file", path);
    *size = (uint64_t)st.st_size;
    return SHOAL_OK;
}

shoal_err_t fsutil_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return shoal_fail(SHOAL_ERR_INVALID, "path too long: %.200s...", out);
    return SHOAL_OK;
}
