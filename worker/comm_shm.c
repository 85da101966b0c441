/* comm_shm.c: POSIX shared-memory segments of the comm's same-host data path (see comm_shm.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm_shm.h"

/* The header: magic, then the nonce. */
static const char s_magic[8] = "SHOALSHM";

static shoal_err_t s_name_set(comm_shm_seg_t *s, const char *name)
{
    size_t n = strlen(name);
    if (n + 1 > sizeof s->name || name[0] != '/' || strchr(name + 1, '/'))
        return shoal_fail(SHOAL_ERR_INVALID, "comm shm: bad segment name '%s'", name);
    memcpy(s->name, name, n + 1);
    return SHOAL_OK;
}

shoal_err_t comm_shm_create(comm_shm_seg_t *s, const char *name, size_t bytes)
{
    shoal_err_t rc = SHOAL_OK;
    memset(s, 0, sizeof *s);
    SHOAL_CHECK_GOTO(s_name_set(s, name), rc, out);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* The name embeds our listener's host:port identity, which only we hold now. */
        shm_unlink(name);
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: create %s: %s", name, strerror(errno));
        goto out;
    }
    s->linked = true;
    if (getrandom(s->nonce, sizeof s->nonce, 0) != (ssize_t)sizeof s->nonce) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: nonce for %s: %s", name, strerror(errno));
        goto out_fd;
    }
    size_t total = COMM_SHM_HDR_BYTES + bytes;
    int e = ftruncate(fd, (off_t)total) != 0 ? errno : posix_fallocate(fd, 0, (off_t)total);
    if (e != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: reserve %zu bytes for %s: %s", total, name,
                        strerror(e));
        goto out_fd;
    }
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: map %zu bytes of %s: %s", total, name,
                        strerror(errno));
        goto out_fd;
    }
    memcpy(p, s_magic, sizeof s_magic);
    memcpy((unsigned char *)p + sizeof s_magic, s->nonce, sizeof s->nonce);
    s->base = (unsigned char *)p + COMM_SHM_HDR_BYTES;
    s->bytes = bytes;
    close(fd);
    return SHOAL_OK;

out_fd:
    close(fd);
    comm_shm_close(s);
out:
    return rc;
}

shoal_err_t comm_shm_open(comm_shm_seg_t *s, const char *name, size_t min_bytes,
                          const unsigned char nonce[COMM_SHM_NONCE_BYTES])
{
    shoal_err_t rc = SHOAL_OK;
    memset(s, 0, sizeof *s);
    SHOAL_CHECK_GOTO(s_name_set(s, name), rc, out);
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: open %s: %s", name, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: stat %s: %s", name, strerror(errno));
        goto out_fd;
    }
    /* Our own user's, private to it (comm_shm_create makes it so): another local user could
     * otherwise plant or read the segment a peer's name leads to. */
    if (st.st_uid != geteuid() || (st.st_mode & 077)) {
        rc = shoal_fail(SHOAL_ERR_INVALID,
                        "comm shm: %s is owned by uid %u with mode %03o (expected uid %u, 600): "
                        "not a segment of this worker's peer",
                        name, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777),
                        (unsigned)geteuid());
        goto out_fd;
    }
    if (st.st_size < 0 || (size_t)st.st_size < COMM_SHM_HDR_BYTES ||
        (size_t)st.st_size - COMM_SHM_HDR_BYTES < min_bytes) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "comm shm: %s holds %lld bytes, fewer than %zu", name,
                        (long long)st.st_size, COMM_SHM_HDR_BYTES + min_bytes);
        goto out_fd;
    }
    /* Prefaulted: a first touch of every 4 KiB page inside the timed copies costs more than the
     * copies of a 64 MiB op. */
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm shm: map %s: %s", name, strerror(errno));
        goto out_fd;
    }
    const unsigned char *hdr = p;
    if (memcmp(hdr, s_magic, sizeof s_magic) != 0 ||
        memcmp(hdr + sizeof s_magic, nonce, COMM_SHM_NONCE_BYTES) != 0) {
        munmap(p, (size_t)st.st_size);
        rc = shoal_fail(SHOAL_ERR_INVALID,
                        "comm shm: %s does not carry the nonce its creator announced (a stale or "
                        "planted segment)",
                        name);
        goto out_fd;
    }
    memcpy(s->nonce, nonce, COMM_SHM_NONCE_BYTES);
    s->base = (unsigned char *)p + COMM_SHM_HDR_BYTES;
    s->bytes = (size_t)st.st_size - COMM_SHM_HDR_BYTES;

out_fd:
    close(fd);
out:
    return rc;
}

void comm_shm_unlink(comm_shm_seg_t *s)
{
    if (s->linked) {
        shm_unlink(s->name);
        s->linked = false;
    }
}

void comm_shm_close(comm_shm_seg_t *s)
{
    comm_shm_unlink(s);
    if (s->base)
        munmap(s->base - COMM_SHM_HDR_BYTES, COMM_SHM_HDR_BYTES + s->bytes);
    memset(s, 0, sizeof *s);
}

void comm_shm_sweep(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    size_t n = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, n) == 0 && e->d_name[n] == '-') {
            char name[COMM_SHM_NAME_MAX];
            int w = snprintf(name, sizeof name, "/%s", e->d_name);
            if (w > 0 && (size_t)w < sizeof name)
                shm_unlink(name);
        }
    }
    closedir(d);
}
