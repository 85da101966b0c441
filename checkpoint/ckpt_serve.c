/* ckpt_serve.c: the checkpoint shard server: a ROUTER on its own thread answering ShardRequest
 * with chunks of committed shard files below its roots; every other request gets an error reply
 * and the server keeps running. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "ckpt_int.h"
#include "ckpt_repl.h"
#include "log.h"
#include "shoal.pb-c.h"

#define S_POLL_MS 100
#define S_MAX_REQUEST 8192 /* bytes of one ShardRequest at most */
#define S_ZAP_DOMAIN "shoal-shards"

struct ckpt_server {
    void *ctx, *sock;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_ullong served, refused;
    pthread_mutex_t mu; /* roots: added by the daemon, read by the server thread */
    int n_roots;
    char roots[CKPT_REPL_MAX_ROOTS][PATH_MAX];
    char endpoint[CKPT_REPL_ENDPOINT_MAX];
    zsec_zap_t *zap; /* CURVE (ckpt_repl_set_curve): admits the vouched-for keys, or any */
};

static zsec_keys_t s_curve_keys;
static atomic_int s_curve;
static vouch_t *_Atomic s_vouch;

void ckpt_repl_set_vouch(vouch_t *v)
{
    atomic_store(&s_vouch, v);
}

void ckpt_repl_set_curve(const zsec_keys_t *keys)
{
    if (keys)
        s_curve_keys = *keys;
    atomic_store(&s_curve, keys != NULL);
}

int ckpt_repl_curve_keys(zsec_keys_t *out)
{
    if (!atomic_load(&s_curve))
        return 0;
    *out = s_curve_keys;
    return 1;
}

/* A request's file: resolved, checked, opened. code/message describe a refusal. */
typedef struct {
    Shoal__ErrorCode code;
    char message[PATH_MAX + 128];
} s_refusal_t;

static int s_refuse(s_refusal_t *r, Shoal__ErrorCode code, const char *fmt, const char *a,
                    const char *b)
{
    r->code = code;
    snprintf(r->message, sizeof r->message, fmt, a, b);
    return -1;
}

static int s_under_root(ckpt_server_t *s, const char *real)
{
    int ok = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_roots && !ok; i++) {
        const size_t n = strlen(s->roots[i]);
        ok = strncmp(real, s->roots[i], n) == 0 && (real[n] == '/' || s->roots[i][n - 1] == '/');
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static int s_plain_name(const char *name)
{
    return name[0] && name[0] != '.' && !strchr(name, '/') && strlen(name) < CKPT_FILE_NAME_MAX;
}

/* Opens the file a request names, or fills *why and returns -1. */
static int s_open_requested(ckpt_server_t *s, const Shoal__ShardRequest *q, s_refusal_t *why)
{
    char real[PATH_MAX], path[PATH_MAX * 2];
    if (!q->path[0] || q->path[0] != '/' || strlen(q->path) >= PATH_MAX)
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_INVALID, "%s%s: not an absolute shard path",
                        q->path, "");
    if (!realpath(q->path, real))
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_NOT_FOUND, "%s: no such shard dir (%s)",
                        q->path, strerror(errno));
    if (!s_under_root(s, real))
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_INVALID, "%s%s: outside the shard store",
                        q->path, "");
    const char *base = strrchr(real, '/') + 1;
    int64_t step;
    if (!ckpt_step_dir_parse(base, &step))
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_INVALID, "%s%s: not a checkpoint step dir",
                        q->path, "");
    if (!s_plain_name(q->file))
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_INVALID, "%s/%s: not a plain file name",
                        q->path, q->file);
    if (strcmp(q->file, CKPT_MANIFEST_NAME) != 0) {
        ckpt_manifest_t *m = malloc(sizeof *m);
        int listed = 0;
        if (m && ckpt_manifest_read(real, m) == SHOAL_OK)
            for (int i = 0; i < m->n_files; i++)
                listed |= strcmp(m->files[i].name, q->file) == 0;
        free(m);
        shoal_err_clear();
        if (!listed)
            return s_refuse(why, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                            "%s/%s: not a file of a committed checkpoint", q->path, q->file);
    }
    snprintf(path, sizeof path, "%s/%s", real, q->file);
    const int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return s_refuse(why, SHOAL__ERROR_CODE__ERR_NOT_FOUND, "%s/%s: missing", q->path, q->file);
    }
    return fd;
}

static void s_send_reply(ckpt_server_t *s, zmq_msg_t *ident, const Shoal__ShardReply *rep)
{
    const size_t n = shoal__shard_reply__get_packed_size(rep);
    zmq_msg_t body;
    if (zmq_msg_init_size(&body, n) != 0)
        return;
    shoal__shard_reply__pack(rep, zmq_msg_data(&body));
    if (zmq_msg_send(ident, s->sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_msg_send(&body, s->sock, ZMQ_DONTWAIT) < 0)
        zmq_msg_close(&body); /* the peer is gone or slow: it will retry */
}

/* Answers one request held in `req` to `ident`. */
static void s_answer(ckpt_server_t *s, zmq_msg_t *ident, zmq_msg_t *req)
{
    Shoal__ShardReply rep = SHOAL__SHARD_REPLY__INIT;
    s_refusal_t why = {SHOAL__ERROR_CODE__ERR_NONE, ""};
    uint8_t *buf = NULL;
    Shoal__ShardRequest *q = NULL;
    int fd = -1;
    if (zmq_msg_size(req) > S_MAX_REQUEST ||
        !(q = shoal__shard_request__unpack(NULL, zmq_msg_size(req), zmq_msg_data(req)))) {
        s_refuse(&why, SHOAL__ERROR_CODE__ERR_BAD_MESSAGE, "%s%s", "undecodable shard request", "");
        goto reply;
    }
    rep.id = q->id;
    if ((fd = s_open_requested(s, q, &why)) < 0)
        goto reply;
    struct stat st;
    fstat(fd, &st);
    const uint64_t size = (uint64_t)st.st_size;
    if (q->offset > size) {
        s_refuse(&why, SHOAL__ERROR_CODE__ERR_INVALID, "%s/%s: offset past the end", q->path,
                 q->file);
        goto reply;
    }
    uint64_t len = q->length ? q->length : CKPT_REPL_CHUNK;
    if (len > CKPT_REPL_CHUNK)
        len = CKPT_REPL_CHUNK;
    if (len > size - q->offset)
        len = size - q->offset;
    if (len && !(buf = malloc(len))) {
        s_refuse(&why, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s%s", "out of memory", "");
        goto reply;
    }
    size_t got = 0;
    while (got < len) {
        const ssize_t k = pread(fd, buf + got, len - got, (off_t)(q->offset + got));
        if (k <= 0) {
            s_refuse(&why, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s/%s: read failed", q->path, q->file);
            goto reply;
        }
        got += (size_t)k;
    }
    rep.file_size = size;
    rep.offset = q->offset;
    rep.data.data = buf;
    rep.data.len = len;
reply:
    rep.code = why.code;
    rep.message = why.message;
    if (why.code != SHOAL__ERROR_CODE__ERR_NONE) {
        rep.data.len = 0;
        atomic_fetch_add(&s->refused, 1);
        log_warn("shard server: refused: %s", why.message);
    } else {
        atomic_fetch_add(&s->served, 1);
    }
    s_send_reply(s, ident, &rep);
    if (fd >= 0)
        close(fd);
    free(buf);
    if (q)
        shoal__shard_request__free_unpacked(q, NULL);
}

static void *s_main(void *arg)
{
    ckpt_server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, S_POLL_MS) <= 0)
            continue;
        zmq_msg_t ident, req;
        zmq_msg_init(&ident);
        zmq_msg_init(&req);
        int more = 0;
        size_t ml = sizeof more;
        if (zmq_msg_recv(&ident, s->sock, ZMQ_DONTWAIT) >= 0 &&
            zmq_getsockopt(s->sock, ZMQ_RCVMORE, &more, &ml) == 0 && more &&
            zmq_msg_recv(&req, s->sock, 0) >= 0) {
            /* drop any further frames: a request is one frame */
            while (zmq_getsockopt(s->sock, ZMQ_RCVMORE, &more, &ml) == 0 && more) {
                zmq_msg_t extra;
                zmq_msg_init(&extra);
                zmq_msg_recv(&extra, s->sock, 0);
                zmq_msg_close(&extra);
            }
            s_answer(s, &ident, &req);
        }
        zmq_msg_close(&req);
        zmq_msg_close(&ident);
    }
    return NULL;
}

static shoal_err_t s_advertise(ckpt_server_t *s, const char *host)
{
    char last[CKPT_REPL_ENDPOINT_MAX];
    size_t n = sizeof last;
    if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &n) != 0)
        return shoal_fail(SHOAL_ERR_IO, "shard server: endpoint: %s", zmq_strerror(errno));
    const char *wild[] = {"tcp://0.0.0.0:", "tcp://[::]:"};
    for (size_t i = 0; i < 2; i++)
        if (strncmp(last, wild[i], strlen(wild[i])) == 0) {
            snprintf(s->endpoint, sizeof s->endpoint, "tcp://%s:%s", host ? host : "127.0.0.1",
                     last + strlen(wild[i]));
            return SHOAL_OK;
        }
    snprintf(s->endpoint, sizeof s->endpoint, "%s", last);
    return SHOAL_OK;
}

shoal_err_t ckpt_server_new(const char *bind, const char *advertise_host, const char *root,
                            ckpt_server_t **out)
{
    *out = NULL;
    ckpt_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return shoal_fail(SHOAL_ERR_NOMEM, "shard server: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    shoal_err_t rc = SHOAL_OK;
    const int linger = 0, hwm = 64;
    if (!(s->ctx = zmq_ctx_new()) || !(s->sock = zmq_socket(s->ctx, ZMQ_ROUTER))) {
        rc = shoal_fail(SHOAL_ERR_IO, "shard server: socket: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zsec_keys_t keys;
    if (ckpt_repl_curve_keys(&keys)) {
        SHOAL_CHECK_GOTO(zsec_zap_new(s->ctx, &s->zap), rc, fail);
        vouch_t *v = atomic_load(&s_vouch);
        if (v) {
            /* libzmq never retries a refused handshake: a fetcher's key is held while the
             * coordinator is asked, not refused at once */
            SHOAL_CHECK_GOTO(zsec_zap_vouch(s->zap, S_ZAP_DOMAIN, vouch_lookup, v), rc, fail);
            SHOAL_CHECK_GOTO(zsec_zap_hold(s->zap, S_ZAP_DOMAIN, CKPT_REPL_VOUCH_HOLD_MS), rc,
                             fail);
        } else {
            SHOAL_CHECK_GOTO(zsec_zap_allow_any(s->zap, S_ZAP_DOMAIN), rc, fail);
        }
        SHOAL_CHECK_GOTO(zsec_server(s->sock, &keys, S_ZAP_DOMAIN), rc, fail);
    }
    if (zmq_bind(s->sock, bind) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "shard server: bind %s: %s", bind, zmq_strerror(errno));
        goto fail;
    }
    SHOAL_CHECK_GOTO(s_advertise(s, advertise_host), rc, fail);
    if (root && (rc = ckpt_server_allow(s, root)) != SHOAL_OK)
        goto fail;
    if (pthread_create(&s->thread, NULL, s_main, s) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "shard server: cannot start its thread");
        goto fail;
    }
    s->started = 1;
    log_debug("shard server on %s", s->endpoint);
    *out = s;
    return SHOAL_OK;
fail:
    ckpt_server_destroy(&s);
    return rc;
}

const char *ckpt_server_endpoint(const ckpt_server_t *s)
{
    return s->endpoint;
}

shoal_err_t ckpt_server_allow(ckpt_server_t *s, const char *root)
{
    char real[PATH_MAX];
    if (!realpath(root, real))
        return shoal_fail(SHOAL_ERR_INVALID, "shard server: root %s: %s", root, strerror(errno));
    shoal_err_t rc = SHOAL_OK;
    pthread_mutex_lock(&s->mu);
    int have = 0;
    for (int i = 0; i < s->n_roots; i++)
        have |= strcmp(s->roots[i], real) == 0;
    if (!have && s->n_roots == CKPT_REPL_MAX_ROOTS)
        rc = shoal_fail(SHOAL_ERR_INVALID, "shard server: more than %d roots (%s)",
                        CKPT_REPL_MAX_ROOTS, root);
    else if (!have)
        snprintf(s->roots[s->n_roots++], PATH_MAX, "%s", real);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void ckpt_server_counts(ckpt_server_t *s, uint64_t *served, uint64_t *refused)
{
    *served = atomic_load(&s->served);
    *refused = atomic_load(&s->refused);
}

unsigned long long ckpt_server_denied_handshakes(const ckpt_server_t *s)
{
    return s && s->zap ? zsec_zap_denied(s->zap) : 0;
}

void ckpt_server_destroy(ckpt_server_t **sp)
{
    ckpt_server_t *s = sp ? *sp : NULL;
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->stop, 1);
        pthread_join(s->thread, NULL);
    }
    if (s->sock)
        zmq_close(s->sock);
    zsec_zap_destroy(&s->zap);
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}
