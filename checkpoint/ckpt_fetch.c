/* ckpt_fetch.c: copying a checkpoint shard from its holders (ShardRequest chunks over a DEALER,
 * a window in flight, every file's SHA-256 checked, the dir renamed into place), and the
 * replicator thread that runs such copies in the background. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "ckpt_int.h"
#include "ckpt_repl.h"
#include "clock.h"
#include "fsutil.h"
#include "log.h"
#include "sha256.h"
#include "shoal.pb-c.h"

/* ---- verification ----------------------------------------------------------------------- */

static shoal_err_t s_check_want(const ckpt_digests_t *want)
{
    int manifest = 0;
    uint8_t d[SHA256_LEN];
    if (want->n_files < 1 || want->n_files > CKPT_MANIFEST_MAX_FILES + 1)
        return shoal_fail(SHOAL_ERR_INVALID, "shard lists %d files", want->n_files);
    for (int i = 0; i < want->n_files; i++) {
        const ckpt_file_t *f = &want->files[i];
        if (!f->name[0] || f->name[0] == '.' || strchr(f->name, '/') ||
            sha256_from_hex(f->sha256, d) != SHOAL_OK)
            return shoal_fail(SHOAL_ERR_INVALID,
                              "shard file '%s': not a plain name with a "
                              "SHA-256",
                              f->name);
        manifest |= strcmp(f->name, CKPT_MANIFEST_NAME) == 0;
    }
    if (!manifest)
        return shoal_fail(SHOAL_ERR_INVALID, "shard digests do not list " CKPT_MANIFEST_NAME);
    return SHOAL_OK;
}

shoal_err_t ckpt_repl_digests(const char *dir, ckpt_digests_t *out)
{
    char path[PATH_MAX];
    ckpt_manifest_t *m = malloc(sizeof *m);
    shoal_err_t rc = m ? ckpt_manifest_read(dir, m) : shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    if (rc == SHOAL_OK) {
        out->n_files = m->n_files;
        memcpy(out->files, m->files, (size_t)m->n_files * sizeof *m->files);
        ckpt_file_t *f = &out->files[out->n_files];
        uint8_t digest[SHA256_LEN];
        if ((rc = fsutil_path(path, sizeof path, "%s/" CKPT_MANIFEST_NAME, dir)) == SHOAL_OK &&
            (rc = sha256_file(path, digest, &f->size)) == SHOAL_OK) {
            snprintf(f->name, sizeof f->name, CKPT_MANIFEST_NAME);
            sha256_hex(digest, f->sha256);
            out->n_files++;
        }
    }
    free(m);
    return rc;
}

shoal_err_t ckpt_repl_verify(const char *dir, const ckpt_digests_t *want)
{
    char path[PATH_MAX];
    shoal_err_t rc = s_check_want(want);
    for (int i = 0; rc == SHOAL_OK && i < want->n_files; i++) {
        const ckpt_file_t *f = &want->files[i];
        uint8_t got[SHA256_LEN], exp[SHA256_LEN];
        uint64_t size = 0;
        if ((rc = fsutil_path(path, sizeof path, "%s/%s", dir, f->name)) != SHOAL_OK)
            break;
        if (fsutil_file_size(path, &size) != SHOAL_OK)
            return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: missing", path);
        if (size != f->size)
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: %llu bytes, the manifest says %llu", path,
                              (unsigned long long)size, (unsigned long long)f->size);
        if ((rc = sha256_file(path, got, NULL)) != SHOAL_OK)
            break;
        sha256_from_hex(f->sha256, exp);
        if (memcmp(got, exp, SHA256_LEN) != 0)
            return shoal_fail(SHOAL_ERR_FORMAT,
                              "%s: SHA-256 differs from the committed "
                              "manifest's (corrupt copy)",
                              path);
    }
    if (rc == SHOAL_OK) { /* its own manifest parses and lists the layout (same digests) */
        ckpt_manifest_t *m = malloc(sizeof *m);
        rc = m ? ckpt_manifest_read(dir, m) : shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
        free(m);
    }
    return rc;
}

/* ---- one file from one holder ----------------------------------------------------------- */

static shoal_err_t s_send_request(void *sock, uint64_t id, const char *path, const char *file,
                                  uint64_t offset)
{
    Shoal__ShardRequest q = SHOAL__SHARD_REQUEST__INIT;
    q.id = id;
    q.path = (char *)path;
    q.file = (char *)file;
    q.offset = offset;
    q.length = CKPT_REPL_CHUNK;
    uint8_t buf[PATH_MAX + 512];
    const size_t n = shoal__shard_request__get_packed_size(&q);
    if (n > sizeof buf)
        return shoal_fail(SHOAL_ERR_INVALID, "%s/%s: request too long", path, file);
    shoal__shard_request__pack(&q, buf);
    if (zmq_send(sock, buf, n, 0) < 0)
        return shoal_fail(SHOAL_ERR_IO, "send: %s", zmq_strerror(errno));
    return SHOAL_OK;
}

/* Receives the reply to request `id` (offset `offset`) of file f within timeout_ms, checks it
 * and hands its bytes to the writer and the digest. Replies to older requests are dropped. */
static shoal_err_t s_take_reply(void *sock, uint64_t id, uint64_t offset, const ckpt_file_t *f,
                                int fd, sha256_t *h, int timeout_ms, const char *where)
{
    const int64_t until = clock_mono_ms() + timeout_ms;
    for (;;) {
        const int64_t left = until - clock_mono_ms();
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&it, 1, (long)left) <= 0)
            return shoal_fail(SHOAL_ERR_TIMEOUT, "%s: no answer within %d ms", where, timeout_ms);
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            continue;
        }
        Shoal__ShardReply *r =
            shoal__shard_reply__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
        zmq_msg_close(&msg);
        if (!r)
            return shoal_fail(SHOAL_ERR_FORMAT, "%s: undecodable reply", where);
        shoal_err_t rc = SHOAL_OK;
        const uint64_t want_len =
            f->size - offset < CKPT_REPL_CHUNK ? f->size - offset : CKPT_REPL_CHUNK;
        if (r->id < id) { /* an earlier attempt's: ignore */
            shoal__shard_reply__free_unpacked(r, NULL);
            continue;
        }
        if (r->code != SHOAL__ERROR_CODE__ERR_NONE)
            rc = shoal_fail(r->code == SHOAL__ERROR_CODE__ERR_NOT_FOUND ? SHOAL_ERR_NOTFOUND
                                                                        : SHOAL_ERR_INVALID,
                            "%s: refused: %s", where, r->message);
        else if (r->id != id || r->offset != offset || r->file_size != f->size ||
                 r->data.len != want_len)
            rc = shoal_fail(SHOAL_ERR_FORMAT,
                            "%s: reply for offset %llu of a %llu-byte file "
                            "(%zu bytes) does not match the request (offset %llu of %llu)",
                            where, (unsigned long long)r->offset, (unsigned long long)r->file_size,
                            r->data.len, (unsigned long long)offset, (unsigned long long)f->size);
        else if ((rc = sha256_update(h, r->data.data, r->data.len)) == SHOAL_OK)
            rc = fsutil_write_all(fd, r->data.data, r->data.len, where);
        shoal__shard_reply__free_unpacked(r, NULL);
        return rc;
    }
}

static shoal_err_t s_fetch_file(void *sock, const ckpt_source_t *src, const ckpt_file_t *f,
                                const char *out, int timeout_ms, uint64_t *next_id)
{
    char where[CKPT_REPL_ENDPOINT_MAX + PATH_MAX + CKPT_FILE_NAME_MAX + 4];
    snprintf(where, sizeof where, "%s:%s/%s", src->endpoint, src->path, f->name);
    const int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", out, strerror(errno));
    sha256_t *h = sha256_new();
    shoal_err_t rc = h ? SHOAL_OK : shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    const uint64_t n_chunks = f->size ? (f->size + CKPT_REPL_CHUNK - 1) / CKPT_REPL_CHUNK : 1;
    const uint64_t first_id = *next_id;
    uint64_t sent = 0, got = 0;
    while (rc == SHOAL_OK && got < n_chunks) {
        while (rc == SHOAL_OK && sent < n_chunks && sent - got < CKPT_REPL_WINDOW) {
            rc = s_send_request(sock, first_id + sent, src->path, f->name, sent * CKPT_REPL_CHUNK);
            sent++;
        }
        if (rc == SHOAL_OK)
            rc = s_take_reply(sock, first_id + got, got * CKPT_REPL_CHUNK, f, fd, h, timeout_ms,
                              where);
        got++;
    }
    *next_id = first_id + sent;
    uint8_t digest[SHA256_LEN], exp[SHA256_LEN];
    if (rc == SHOAL_OK && (rc = sha256_final(h, digest)) == SHOAL_OK) {
        sha256_from_hex(f->sha256, exp);
        if (memcmp(digest, exp, SHA256_LEN) != 0)
            rc = shoal_fail(SHOAL_ERR_FORMAT,
                            "%s: SHA-256 differs from the committed "
                            "manifest's (corrupt copy at that holder)",
                            where);
    }
    if (rc == SHOAL_OK && fsync(fd) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "%s: fsync: %s", out, strerror(errno));
    close(fd);
    sha256_destroy(&h);
    return rc;
}

/* ---- one shard from one holder, then from the next ------------------------------------- */

static shoal_err_t s_fetch_from(void *zctx, const ckpt_source_t *src, const ckpt_digests_t *want,
                                const char *tmp, int timeout_ms)
{
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    if (!sock)
        return shoal_fail(SHOAL_ERR_IO, "socket: %s", zmq_strerror(errno));
    const int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    shoal_err_t rc = SHOAL_OK;
    char path[PATH_MAX];
    uint64_t next_id = 1;
    zsec_keys_t keys;
    if (ckpt_repl_curve_keys(&keys) && zsec_client(sock, &keys, src->public_key) != SHOAL_OK) {
        rc = shoal_fail_context(SHOAL_ERR_INVALID, "%s (holder %s)", src->endpoint, src->worker);
        goto out;
    }
    if (zmq_connect(sock, src->endpoint) != 0) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "%s: %s", src->endpoint, zmq_strerror(errno));
        goto out;
    }
    for (int i = 0; rc == SHOAL_OK && i < want->n_files; i++)
        if ((rc = fsutil_path(path, sizeof path, "%s/%s", tmp, want->files[i].name)) == SHOAL_OK)
            rc = s_fetch_file(sock, src, &want->files[i], path, timeout_ms, &next_id);
out:
    zmq_close(sock);
    return rc;
}

shoal_err_t ckpt_repl_fetch(void *zctx, const ckpt_source_t *src, int n_src,
                            const ckpt_digests_t *want, const char *dest, int timeout_ms, int *used)
{
    return ckpt_repl_fetch_checked(zctx, src, n_src, want, dest, timeout_ms, used, NULL);
}

shoal_err_t ckpt_repl_fetch_checked(void *zctx, const ckpt_source_t *src, int n_src,
                                    const ckpt_digests_t *want, const char *dest, int timeout_ms,
                                    int *used, uint32_t *corrupt)
{
    if (corrupt)
        *corrupt = 0;
    char parent[PATH_MAX], tmp[PATH_MAX], why[2048] = "";
    size_t wl = 0;
    shoal_err_t rc = s_check_want(want);
    if (used)
        *used = -1;
    if (rc != SHOAL_OK)
        return rc;
    struct stat st;
    if (stat(dest, &st) == 0) {
        if (ckpt_repl_verify(dest, want) == SHOAL_OK)
            return SHOAL_OK;
        log_warn("shard copy %s discarded: %s", dest, shoal_errmsg());
        if ((rc = fsutil_remove_tree(dest)) != SHOAL_OK)
            return rc;
    }
    fsutil_dirname(dest, parent, sizeof parent);
    if ((rc = fsutil_mkdir_p(parent)) != SHOAL_OK ||
        (rc = fsutil_path(tmp, sizeof tmp, "%s.fetch-%ld", dest, (long)getpid())) != SHOAL_OK)
        return rc;
    for (int i = 0; i < n_src; i++) {
        const double t0 = clock_mono_s();
        fsutil_remove_tree(tmp);
        if (mkdir(tmp, 0755) != 0)
            return shoal_fail(SHOAL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        rc = s_fetch_from(zctx, &src[i], want, tmp, timeout_ms);
        if (rc == SHOAL_OK)
            rc = ckpt_repl_verify(tmp, want);
        if (rc == SHOAL_ERR_FORMAT && corrupt && i < 32)
            *corrupt |= 1u << i; /* it answered, with bytes that are not the shard's */
        if (rc == SHOAL_OK && (rc = fsutil_fsync_dir(tmp)) == SHOAL_OK &&
            (rc = ckpt_commit_dir(parent, tmp, dest)) == SHOAL_OK) {
            log_info("shard %s copied from %s (%s) in %.2f s", dest, src[i].worker, src[i].endpoint,
                     clock_mono_s() - t0);
            if (used)
                *used = i;
            return SHOAL_OK;
        }
        log_warn("shard %s from %s: %s", dest, src[i].worker, shoal_errmsg());
        int w = snprintf(why + wl, sizeof why - wl, "%s%s: %s", wl ? "; " : "", src[i].worker,
                         shoal_errmsg());
        if (w > 0 && (size_t)w < sizeof why - wl)
            wl += (size_t)w;
    }
    fsutil_remove_tree(tmp);
    return shoal_fail(SHOAL_ERR_NOTFOUND, "no holder gave a valid copy of %s (%d tried%s%s)", dest,
                      n_src, wl ? ": " : "", why);
}

/* ---- the replicator thread -------------------------------------------------------------- */

struct ckpt_replicator {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, running, held, timeout_ms;
    ckpt_repl_job_t *queue;
    int n_queue, cap_queue;
    ckpt_repl_done_t *done;
    int n_done, cap_done;
};

static void *s_repl_main(void *arg)
{
    ckpt_replicator_t *r = arg;
    void *zctx = zmq_ctx_new();
    ckpt_repl_job_t *job = malloc(sizeof *job);
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        if (r->n_queue == 0 || r->held || !zctx || !job) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        *job = r->queue[0];
        memmove(r->queue, r->queue + 1, (size_t)(--r->n_queue) * sizeof *r->queue);
        r->running = 1;
        pthread_mutex_unlock(&r->mu);
        ckpt_repl_done_t d = {.step = job->step};
        snprintf(d.tag, sizeof d.tag, "%s", job->tag);
        snprintf(d.dest, sizeof d.dest, "%s", job->dest);
        const double t0 = clock_mono_s();
        uint32_t bad = 0;
        d.rc = ckpt_repl_fetch_checked(zctx, job->src, job->n_src, &job->want, job->dest,
                                       r->timeout_ms, NULL, &bad);
        for (int i = 0; i < job->n_src && i < CKPT_REPL_MAX_SOURCES; i++)
            if (bad & (1u << i)) {
                /* memcpy, not snprintf: gcc -O3 cannot bound the string and warns */
                _Static_assert(sizeof d.corrupt[0] == sizeof job->src[i].worker, "same size");
                memcpy(d.corrupt[d.n_corrupt], job->src[i].worker, sizeof d.corrupt[0]);
                d.corrupt[d.n_corrupt++][sizeof d.corrupt[0] - 1] = 0;
            }
        d.seconds = clock_mono_s() - t0;
        if (d.rc != SHOAL_OK)
            snprintf(d.message, sizeof d.message, "%s", shoal_errmsg());
        else if (job->prune_dir[0] && job->keep > 0 &&
                 ckpt_prune_steps(job->prune_dir, job->keep, job->step) != SHOAL_OK)
            log_warn("replicas: %s", shoal_errmsg());
        pthread_mutex_lock(&r->mu);
        r->running = 0;
        if (r->n_done == r->cap_done) {
            const int cap = r->cap_done ? 2 * r->cap_done : 8;
            ckpt_repl_done_t *g = realloc(r->done, (size_t)cap * sizeof *g);
            if (!g) {
                log_error("replicator: out of memory: outcome of %s lost", d.tag);
                continue;
            }
            r->done = g;
            r->cap_done = cap;
        }
        r->done[r->n_done++] = d;
    }
    pthread_mutex_unlock(&r->mu);
    free(job);
    if (zctx)
        zmq_ctx_term(zctx);
    return NULL;
}

ckpt_replicator_t *ckpt_replicator_new(int timeout_ms)
{
    ckpt_replicator_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->timeout_ms = timeout_ms;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->thread, NULL, s_repl_main, r) != 0) {
        log_error("replicator: cannot start its thread");
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    return r;
}

shoal_err_t ckpt_replicator_submit(ckpt_replicator_t *r, const ckpt_repl_job_t *job)
{
    shoal_err_t rc = SHOAL_OK;
    pthread_mutex_lock(&r->mu);
    if (r->n_queue == r->cap_queue) {
        const int cap = r->cap_queue ? 2 * r->cap_queue : 8;
        ckpt_repl_job_t *g = realloc(r->queue, (size_t)cap * sizeof *g);
        if (!g)
            rc = shoal_fail(SHOAL_ERR_NOMEM, "replicator: out of memory");
        else {
            r->queue = g;
            r->cap_queue = cap;
        }
    }
    if (rc == SHOAL_OK) {
        r->queue[r->n_queue++] = *job;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int ckpt_replicator_poll(ckpt_replicator_t *r, ckpt_repl_done_t *out)
{
    int got = 0;
    pthread_mutex_lock(&r->mu);
    if (r->n_done > 0) {
        *out = r->done[0];
        memmove(r->done, r->done + 1, (size_t)(--r->n_done) * sizeof *r->done);
        got = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

void ckpt_replicator_hold(ckpt_replicator_t *r, int hold)
{
    pthread_mutex_lock(&r->mu);
    r->held = hold != 0;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int ckpt_replicator_busy(ckpt_replicator_t *r)
{
    pthread_mutex_lock(&r->mu);
    const int n = r->n_queue + r->running;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void ckpt_replicator_destroy(ckpt_replicator_t **rp)
{
    ckpt_replicator_t *r = rp ? *rp : NULL;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->queue);
    free(r->done);
    free(r);
    *rp = NULL;
}
