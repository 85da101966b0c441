/* comm_zmq.c: the ZeroMQ backend of comm.h, lifetimes: the listener (one PULL socket bound on tcp
 * and on a same-host ipc socket), the PUSH connections it shares among its live comms, the stash
 * of messages held for later, and comm creation and destruction. The wire, the routing and the
 * progress loop are in comm_zmq_engine.c; the operations in comm_zmq_coll.c and comm_zmq_p2p.c.
 *
 * Same-host ipc. A tcp listener also binds "<ipc_dir>/shoal-comm-<fnv32(host)>-<port>", a name
 * that only the holder of that advertised host and tcp port can claim, so the advertised endpoint
 * stays a plain tcp endpoint (the coordinator, tools and tests treat it as one) and a comm_new on
 * the same host derives the ipc name from it. Unix sockets skip the TCP stack: fewer copies'
 * worth of CPU per byte, which is what bounds a loopback transfer. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "comm_zmq_int.h"
#include "log.h"

/* Kernel socket buffers asked for (the kernel caps them at its rmem_max/wmem_max): larger
 * buffers mean fewer wakeups per megabyte. */
#define SOCK_BUF_BYTES (4 << 20)
/* zmq I/O threads per listener: receiving and sending run on different cores from the caller. */
#define IO_THREADS 2

/* ---------------------------------------------------------------------------------------------
 * Stash. */

static void s_held_free(held_t **hp)
{
    if (*hp) {
        zmq_msg_close(&(*hp)->msg);
        free(*hp);
        *hp = NULL;
    }
}

void comm_zmq_stash_put(comm_listener_t *l, const wire_hdr_t *h, zmq_msg_t *msg)
{
    size_t size = zmq_msg_size(msg);
    if (l->stash_bytes + size > STASH_MAX_BYTES) {
        log_warn("comm: stash full (%zu bytes): dropping early message from rank %" PRIu32
                 " (generation %" PRIu64 ", group %" PRIu32 ", seq %" PRIu64 ")",
                 l->stash_bytes, h->src, h->generation, h->group, h->seq);
        zmq_msg_close(msg);
        return;
    }
    if (l->nstash == l->cap_stash) {
        size_t cap = l->cap_stash ? 2 * l->cap_stash : 64;
        held_t **s = realloc(l->stash, cap * sizeof *s);
        if (!s) {
            zmq_msg_close(msg);
            return;
        }
        l->stash = s;
        l->cap_stash = cap;
    }
    held_t *e = malloc(sizeof *e);
    if (!e) {
        zmq_msg_close(msg);
        return;
    }
    e->h = *h;
    zmq_msg_init(&e->msg);
    zmq_msg_move(&e->msg, msg);
    zmq_msg_close(msg);
    l->stash[l->nstash++] = e;
    l->stash_bytes += size;
}

/* Drops stashed messages of generations below gen_min, or of exactly (gen, group) when
 * whole_group. */
static void s_stash_purge(comm_listener_t *l, uint64_t gen_min, bool whole_group, uint64_t gen,
                          uint32_t group)
{
    size_t k = 0;
    for (size_t i = 0; i < l->nstash; i++) {
        const wire_hdr_t *h = &l->stash[i]->h;
        bool drop = whole_group ? h->generation == gen && h->group == group
                                : h->generation < gen_min;
        if (drop) {
            l->stash_bytes -= zmq_msg_size(&l->stash[i]->msg);
            s_held_free(&l->stash[i]);
        } else {
            l->stash[k++] = l->stash[i];
        }
    }
    l->nstash = k;
}

/* ---------------------------------------------------------------------------------------------
 * Listener. */

static uint32_t s_fnv32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The same-host ipc socket path of the listener advertised as tcp://host:port; false when it
 * would not fit a unix socket address. */
static bool s_ipc_path(const char *dir, const char *host, const char *port, char *out, size_t cap)
{
    struct sockaddr_un sa;
    size_t lim = cap < sizeof sa.sun_path ? cap : sizeof sa.sun_path;
    int w = snprintf(out, lim, "%s/shoal-comm-%08x-%s", dir, s_fnv32(host), port);
    return w > 0 && (size_t)w < lim;
}

/* Splits "tcp://host:port" (host may be [v6]); false for anything else. */
static bool s_tcp_split(const char *ep, char *host, size_t hcap, const char **port)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *h = ep + 6, *colon = strrchr(h, ':');
    if (!colon || colon == h || !colon[1] || (size_t)(colon - h) >= hcap)
        return false;
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    *port = colon + 1;
    return true;
}

static shoal_err_t s_advertised(const char *last, const char *host, char *out, size_t cap)
{
    /* ZMQ_LAST_ENDPOINT of a wildcard bind reads tcp://0.0.0.0:PORT or tcp://[::]:PORT. */
    const char *wild[] = {"tcp://0.0.0.0:", "tcp://[::]:", "tcp://*:"};
    for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
        size_t n = strlen(wild[i]);
        if (strncmp(last, wild[i], n) == 0) {
            int w = snprintf(out, cap, "tcp://%s:%s", host ? host : "127.0.0.1", last + n);
            if (w < 0 || (size_t)w >= cap)
                return shoal_fail(SHOAL_ERR_INVALID, "advertised endpoint for %s too long", last);
            return SHOAL_OK;
        }
    }
    if (strlen(last) >= cap)
        return shoal_fail(SHOAL_ERR_INVALID, "endpoint %s too long", last);
    snprintf(out, cap, "%s", last);
    return SHOAL_OK;
}

/* Binds the same-host ipc socket next to a tcp endpoint. Failing is not an error: peers then use
 * tcp (they find no socket). */
static void s_bind_ipc(comm_listener_t *l, const char *dir)
{
    const char *port;
    if (!s_tcp_split(l->endpoint, l->host, sizeof l->host, &port)) {
        l->host[0] = '\0';
        return;
    }
    snprintf(l->ipc_dir, sizeof l->ipc_dir, "%s", dir);
    char path[sizeof l->ipc_path], ep[sizeof l->ipc_path + 8];
    if (!s_ipc_path(l->ipc_dir, l->host, port, path, sizeof path)) {
        log_debug("comm: %s: ipc path under %s too long: tcp only", l->endpoint, dir);
        return;
    }
    /* A leftover of a dead listener that held this host and port (we hold them now). */
    unlink(path);
    snprintf(ep, sizeof ep, "ipc://%s", path);
    if (zmq_bind(l->pull, ep) != 0) {
        log_debug("comm: %s: cannot bind %s (%s): tcp only", l->endpoint, ep, zmq_strerror(errno));
        return;
    }
    snprintf(l->ipc_path, sizeof l->ipc_path, "%s", path);
}

static void s_sockopt_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

shoal_err_t comm_listener_new_opts(const comm_listener_opts_t *o, comm_listener_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    *out = NULL;
    if (!o || !o->bind_endpoint)
        return shoal_fail(SHOAL_ERR_INVALID, "comm listener: no bind endpoint");
    comm_listener_t *l = calloc(1, sizeof *l);
    if (!l)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm listener: out of memory");
    pthread_mutex_init(&l->bad_lock, NULL);
    l->ctx = zmq_ctx_new();
    if (!l->ctx) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: zmq_ctx_new: %s", zmq_strerror(errno));
        goto out_free;
    }
    zmq_ctx_set(l->ctx, ZMQ_IO_THREADS, IO_THREADS);
    l->pull = zmq_socket(l->ctx, ZMQ_PULL);
    if (!l->pull) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: zmq_socket: %s", zmq_strerror(errno));
        goto out_ctx;
    }
    /* A frame larger than a header plus the largest chunk is hostile: zmq drops the sender. */
    int64_t maxmsg = (int64_t)(HDR_SIZE + COMM_CHUNK_MAX);
    s_sockopt_int(l->pull, ZMQ_LINGER, 0);
    /* No receive high-water mark: every sender bounds what it has in flight (windows), and a
     * frame zmq refused to read would stall the peer's whole connection, all groups on it. */
    s_sockopt_int(l->pull, ZMQ_RCVHWM, 0);
    s_sockopt_int(l->pull, ZMQ_RCVBUF, SOCK_BUF_BYTES);
    zmq_setsockopt(l->pull, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (o->keys) {
        /* Only the keys of the plans we hold complete the handshake (comm_listener_peer_keys);
         * a peer that dials before our plan arrived is held, not refused (libzmq never retries a
         * refused handshake). What an admitted key may claim is checked per frame against the
         * plan's key of the rank (comm_zmq_engine.c). */
        l->curve = true;
        l->keys = *o->keys;
        SHOAL_CHECK_GOTO(zsec_zap_new(l->ctx, &l->zap), rc, out_sock);
        SHOAL_CHECK_GOTO(zsec_zap_set(l->zap, COMM_ZAP_DOMAIN, NULL, 0), rc, out_sock);
        SHOAL_CHECK_GOTO(zsec_zap_hold(l->zap, COMM_ZAP_DOMAIN,
                                       o->admit_hold_ms > 0 ? o->admit_hold_ms
                                                            : COMM_ADMIT_HOLD_MS),
                         rc, out_sock);
        SHOAL_CHECK_GOTO(zsec_server(l->pull, &l->keys, COMM_ZAP_DOMAIN), rc, out_sock);
    }
    if (zmq_bind(l->pull, o->bind_endpoint) != 0) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "comm listener: cannot bind %s: %s", o->bind_endpoint,
                        zmq_strerror(errno));
        goto out_sock;
    }
    char last[256];
    size_t len = sizeof last;
    if (zmq_getsockopt(l->pull, ZMQ_LAST_ENDPOINT, last, &len) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm listener: %s: ZMQ_LAST_ENDPOINT: %s", o->bind_endpoint,
                        zmq_strerror(errno));
        goto out_sock;
    }
    SHOAL_CHECK_GOTO(s_advertised(last, o->advertise_host, l->endpoint, sizeof l->endpoint), rc,
                     out_sock);
    if (!o->no_ipc)
        s_bind_ipc(l, o->ipc_dir ? o->ipc_dir : "/tmp");
    const char *env_no_shm = getenv("SHOAL_COMM_NO_SHM");
    l->no_shm = o->no_shm || (env_no_shm && env_no_shm[0] && strcmp(env_no_shm, "0") != 0);
    char ipc_ep[sizeof l->ipc_path + 8];
    snprintf(ipc_ep, sizeof ipc_ep, "ipc://%s", l->ipc_path);
    if (l->ipc_path[0] && comm_zmq_shm_id(ipc_ep, l->shm_id, sizeof l->shm_id))
        comm_shm_sweep(l->shm_id); /* segments of a dead listener that held our host and port */
    log_debug("comm: listening on %s (bound %s%s%s)", l->endpoint, o->bind_endpoint,
              l->ipc_path[0] ? ", same host: ipc://" : "", l->ipc_path);
    *out = l;
    return SHOAL_OK;

out_sock:
    zmq_close(l->pull);
    zsec_zap_destroy(&l->zap);
out_ctx:
    zmq_ctx_term(l->ctx);
out_free:
    pthread_mutex_destroy(&l->bad_lock);
    free(l);
    return rc;
}

shoal_err_t comm_listener_new_advertise(const char *bind_endpoint, const char *advertise_host,
                                        comm_listener_t **out)
{
    comm_listener_opts_t o = {.bind_endpoint = bind_endpoint, .advertise_host = advertise_host};
    return comm_listener_new_opts(&o, out);
}

shoal_err_t comm_listener_new(const char *bind_endpoint, comm_listener_t **out)
{
    return comm_listener_new_advertise(bind_endpoint, NULL, out);
}

const char *comm_listener_endpoint(const comm_listener_t *l)
{
    return l->endpoint;
}

static void s_conn_close(conn_t *k, int linger)
{
    if (k->push) {
        s_sockopt_int(k->push, ZMQ_LINGER, linger);
        zmq_close(k->push);
    }
    free(k->endpoint);
    free(k->target);
    free(k);
}

void comm_listener_destroy(comm_listener_t **lp)
{
    comm_listener_t *l = *lp;
    if (!l)
        return;
    for (int i = 0; i < l->ncomms; i++) {
        /* A programmer error; detach the comm so that zmq_ctx_term cannot hang on its sockets. */
        comm_t *c = l->comms[i];
        log_error("comm: listener %s destroyed under the live comm of group %" PRIu32
                  " (destroy the comms first)",
                  l->endpoint, c->group);
        for (int j = 0; j < c->nranks; j++) {
            if (c->peers[j].has_out) {
                zmq_msg_close(&c->peers[j].out);
                c->peers[j].has_out = false;
            }
            c->peers[j].conn = NULL;
        }
        c->l = NULL;
    }
    for (int i = 0; i < l->nconns; i++)
        s_conn_close(l->conns[i], 0);
    free(l->conns);
    /* every held frame, those claiming the largest generation included */
    for (size_t i = 0; i < l->nstash; i++)
        s_held_free(&l->stash[i]);
    l->nstash = 0;
    l->stash_bytes = 0;
    free(l->stash);
    zmq_close(l->pull);
    zsec_zap_destroy(&l->zap);
    for (int i = 0; i < l->nkeys; i++) {
        free(l->key_eps[i]);
        free(l->key_vals[i]);
    }
    free(l->key_eps);
    free(l->key_vals);
    free(l->admit_prev);
    if (l->ipc_path[0])
        unlink(l->ipc_path);
    /* Waits only for sockets of healthy comms still flushing, each at most FLUSH_MAX_MS. */
    zmq_ctx_term(l->ctx);
    pthread_mutex_destroy(&l->bad_lock);
    free(l);
    *lp = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Connections, shared by the comms of a listener. */

/* Whether a unix socket at path accepts connections now (a non-blocking probe, never waits). */
static bool s_ipc_alive(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path) {
        close(fd);
        return false;
    }
    memcpy(sa.sun_path, path, n + 1);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    bool alive = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
    close(fd);
    return alive;
}

/* The address to connect for a peer endpoint: its ipc socket when it is on this host. */
static char *s_target(const comm_listener_t *l, const char *endpoint)
{
    char host[sizeof l->host], path[sizeof l->ipc_path], ep[sizeof path + 8];
    const char *port;
    if (l->ipc_dir[0] && s_tcp_split(endpoint, host, sizeof host, &port) &&
        (strcmp(host, l->host) == 0 || strcmp(host, "127.0.0.1") == 0 ||
         strcmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0) &&
        s_ipc_path(l->ipc_dir, host, port, path, sizeof path) && s_ipc_alive(path)) {
        snprintf(ep, sizeof ep, "ipc://%s", path);
        return strdup(ep);
    }
    return strdup(endpoint);
}

bool comm_zmq_shm_id(const char *ipc_target, char *out, size_t cap)
{
    if (strncmp(ipc_target, "ipc://", 6) != 0)
        return false;
    const char *slash = strrchr(ipc_target, '/'), *base = slash + 1;
    /* Only the sockets derived from a tcp identity (s_ipc_path) are unique per host. */
    if (strncmp(base, "shoal-comm-", 11) != 0)
        return false;
    int w = snprintf(out, cap, "%s", base);
    return w > 0 && (size_t)w < cap;
}

static _Atomic unsigned long long s_dropped_frames;

unsigned long long comm_dropped_frames(void)
{
    return atomic_load(&s_dropped_frames);
}

unsigned long long comm_zmq_count_forged(void)
{
    return atomic_fetch_add(&s_dropped_frames, 1) + 1;
}

/* Admits at the handshake the keys of this plan (n keys) and of the previous one (a peer still
 * finishing the old generation, or dialling for it, during a hand-over); one atomic swap of the
 * ZAP list. Keeps this plan's keys as the next call's previous ones. */
static shoal_err_t s_admit_plan(comm_listener_t *l, const char *const *keys, int n)
{
    int cap = n + l->n_admit_prev;
    zsec_rule_t *rules = cap > 0 ? calloc((size_t)cap, sizeof *rules) : NULL;
    zsec_rule_t *now = n > 0 ? calloc((size_t)n, sizeof *now) : NULL;
    if ((cap > 0 && !rules) || (n > 0 && !now)) {
        free(rules);
        free(now);
        return shoal_fail(SHOAL_ERR_NOMEM, "comm: admitted keys");
    }
    int m = 0;
    for (int i = 0; i < cap; i++) {
        const char *k = i < n ? keys[i] : l->admit_prev[i - n].key;
        bool dup = false;
        for (int j = 0; j < m && !dup; j++)
            dup = strcmp(rules[j].key, k) == 0;
        if (dup)
            continue;
        /* User-Id = the key itself: what the per-frame check compares with the rank's key */
        snprintf(rules[m].key, sizeof rules[m].key, "%s", k);
        snprintf(rules[m].user, sizeof rules[m].user, "%s", k);
        m++;
    }
    shoal_err_t rc = zsec_zap_set(l->zap, COMM_ZAP_DOMAIN, rules, m);
    free(rules);
    if (rc != SHOAL_OK) {
        free(now);
        return rc;
    }
    for (int i = 0; i < n; i++)
        snprintf(now[i].key, sizeof now[i].key, "%s", keys[i]);
    free(l->admit_prev);
    l->admit_prev = now;
    l->n_admit_prev = n;
    return SHOAL_OK;
}

void comm_zmq_note_bad(comm_listener_t *l, zmq_msg_t *m, const char *why)
{
    char user[ZSEC_USER_MAX];
    zsec_msg_user(m, user);
    if (!l->curve || !zsec_key_valid(user))
        return;
    pthread_mutex_lock(&l->bad_lock);
    int i = 0;
    while (i < l->nbad && strcmp(l->bad[i].key, user) != 0)
        i++;
    if (i == l->nbad && l->nbad < COMM_BAD_SENDERS_MAX) {
        memset(&l->bad[i], 0, sizeof l->bad[i]);
        memcpy(l->bad[i].key, user, ZSEC_KEY_LEN + 1); /* a valid key: 40 characters */
        l->nbad++;
    }
    if (i < l->nbad) {
        l->bad[i].frames++;
        snprintf(l->bad[i].why, sizeof l->bad[i].why, "%s", why);
    }
    pthread_mutex_unlock(&l->bad_lock);
}

int comm_listener_take_bad_senders(comm_listener_t *l, comm_bad_sender_t *out, int max)
{
    if (!l)
        return 0;
    pthread_mutex_lock(&l->bad_lock);
    int n = l->nbad < max ? l->nbad : max;
    memcpy(out, l->bad, (size_t)n * sizeof *out);
    /* what did not fit stays for the next take */
    memmove(l->bad, l->bad + n, (size_t)(l->nbad - n) * sizeof *l->bad);
    l->nbad -= n;
    pthread_mutex_unlock(&l->bad_lock);
    return n;
}

unsigned long long comm_listener_denied_handshakes(const comm_listener_t *l)
{
    return l && l->zap ? zsec_zap_denied(l->zap) : 0;
}

shoal_err_t comm_listener_peer_keys(comm_listener_t *l, const char *const *endpoints,
                                    const char *const *keys, int n)
{
    if (!l->curve)
        return SHOAL_OK;
    for (int i = 0; i < n; i++)
        if (!keys[i] || !zsec_key_valid(keys[i]))
            return shoal_fail(SHOAL_ERR_INVALID, "comm: the plan gives %s no CURVE key",
                              endpoints[i]);
    shoal_err_t rc = s_admit_plan(l, keys, n);
    if (rc != SHOAL_OK)
        return rc;
    for (int i = 0; i < n; i++) {
        if (!keys[i] || !zsec_key_valid(keys[i]))
            return shoal_fail(SHOAL_ERR_INVALID, "comm: the plan gives %s no CURVE key",
                              endpoints[i]);
        int k = 0;
        while (k < l->nkeys && strcmp(l->key_eps[k], endpoints[i]) != 0)
            k++;
        if (k == l->nkeys) {
            if (l->nkeys == l->cap_keys) {
                int cap = l->cap_keys ? 2 * l->cap_keys : 16;
                char **e = realloc(l->key_eps, (size_t)cap * sizeof *e);
                if (e)
                    l->key_eps = e;
                char **v = realloc(l->key_vals, (size_t)cap * sizeof *v);
                if (v)
                    l->key_vals = v;
                if (!e || !v)
                    return shoal_fail(SHOAL_ERR_NOMEM, "comm: peer keys");
                l->cap_keys = cap;
            }
            if (!(l->key_eps[k] = strdup(endpoints[i])))
                return shoal_fail(SHOAL_ERR_NOMEM, "comm: peer keys");
            l->key_vals[k] = NULL;
            l->nkeys++;
        }
        free(l->key_vals[k]);
        if (!(l->key_vals[k] = strdup(keys[i])))
            return shoal_fail(SHOAL_ERR_NOMEM, "comm: peer keys");
    }
    return SHOAL_OK;
}

/* The plan's key of a peer endpoint (NULL: none given). */
static const char *s_peer_key(const comm_listener_t *l, const char *endpoint)
{
    for (int k = 0; k < l->nkeys; k++)
        if (strcmp(l->key_eps[k], endpoint) == 0)
            return l->key_vals[k];
    return NULL;
}

/* The connection to `endpoint` (rank j of the comm being created), shared or new. */
static shoal_err_t s_conn_get(comm_listener_t *l, const char *endpoint, int j, conn_t **out)
{
    const char *key = "";
    if (l->curve && !(key = s_peer_key(l, endpoint)))
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: rank %d endpoint '%s' has no CURVE key "
                                             "(comm_listener_peer_keys)",
                          j, endpoint);
    for (int i = 0; i < l->nconns; i++) {
        if (strcmp(l->conns[i]->endpoint, endpoint) == 0 && strcmp(l->conns[i]->key, key) == 0) {
            l->conns[i]->refs++;
            *out = l->conns[i];
            return SHOAL_OK;
        }
    }
    if (l->nconns == l->cap_conns) {
        int cap = l->cap_conns ? 2 * l->cap_conns : 16;
        conn_t **v = realloc(l->conns, (size_t)cap * sizeof *v);
        if (!v)
            return shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory for connections");
        l->conns = v;
        l->cap_conns = cap;
    }
    conn_t *k = calloc(1, sizeof *k);
    if (!k)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory for connections");
    k->endpoint = strdup(endpoint);
    k->target = s_target(l, endpoint);
    k->push = zmq_socket(l->ctx, ZMQ_PUSH);
    if (!k->endpoint || !k->target || !k->push) {
        shoal_err_t rc = shoal_fail(SHOAL_ERR_IO, "comm_new: socket for rank %d: %s", j,
                                    zmq_strerror(errno));
        s_conn_close(k, 0);
        return rc;
    }
    s_sockopt_int(k->push, ZMQ_LINGER, 0);
    /* No send high-water mark: a send queues at once and never waits for the receiver (windows
     * bound the collectives; point to point is bounded by the caller's pipeline depth). */
    s_sockopt_int(k->push, ZMQ_SNDHWM, 0);
    s_sockopt_int(k->push, ZMQ_SNDBUF, SOCK_BUF_BYTES);
    snprintf(k->key, sizeof k->key, "%s", key);
    if (l->curve && zsec_client(k->push, &l->keys, key) != SHOAL_OK) {
        shoal_err_t rc = shoal_fail_context(SHOAL_ERR_IO, "comm_new: rank %d", j);
        s_conn_close(k, 0);
        return rc;
    }
    if (zmq_connect(k->push, k->target) != 0) {
        shoal_err_t rc = shoal_fail(SHOAL_ERR_INVALID, "comm_new: rank %d endpoint '%s': %s", j,
                                    endpoint, zmq_strerror(errno));
        s_conn_close(k, 0);
        return rc;
    }
    if (strcmp(k->target, endpoint) != 0)
        log_debug("comm: %s reached over %s (same host)", endpoint, k->target);
    k->refs = 1;
    l->conns[l->nconns++] = k;
    *out = k;
    return SHOAL_OK;
}

static void s_conn_put(comm_listener_t *l, conn_t *k, int linger)
{
    if (--k->refs > 0)
        return;
    for (int i = 0; i < l->nconns; i++) {
        if (l->conns[i] == k) {
            l->conns[i] = l->conns[--l->nconns];
            break;
        }
    }
    s_conn_close(k, linger);
}

/* ---------------------------------------------------------------------------------------------
 * Comm lifetime. */

int comm_rank(const comm_t *c)
{
    return c->rank;
}

int comm_nranks(const comm_t *c)
{
    return c->nranks;
}

uint64_t comm_generation(const comm_t *c)
{
    return c->generation;
}

uint32_t comm_group(const comm_t *c)
{
    return c->group;
}

comm_t *comm_zmq_find(const comm_listener_t *l, uint64_t generation, uint32_t group)
{
    for (int i = 0; i < l->ncomms; i++)
        if (l->comms[i]->generation == generation && l->comms[i]->group == group)
            return l->comms[i];
    return NULL;
}

static bool s_group_used(const comm_listener_t *l, uint64_t generation, uint32_t group)
{
    if (!l->used || generation != l->generation)
        return false;
    for (int i = 0; i < l->ngroups_used; i++)
        if (l->groups_used[i] == group)
            return true;
    return false;
}

bool comm_zmq_group_gone(const comm_listener_t *l, uint64_t generation, uint32_t group)
{
    return s_group_used(l, generation, group) && !comm_zmq_find(l, generation, group);
}

void comm_destroy(comm_t **cp)
{
    comm_t *c = *cp;
    if (!c)
        return;
    int linger = 0;
    if ((c->broken == SHOAL_OK && !atomic_load(&c->aborted)) || c->gave_up)
        linger = c->timeout_ms < FLUSH_MAX_MS ? c->timeout_ms : FLUSH_MAX_MS;
    for (int j = 0; c->peers && j < c->nranks; j++) {
        peer_t *p = &c->peers[j];
        if (p->has_out)
            zmq_msg_close(&p->out);
        if (p->conn && c->l)
            s_conn_put(c->l, p->conn, linger);
    }
    comm_zmq_shm_fini(c);
    free(c->peers);
    free(c->items);
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    comm_listener_t *l = c->l;
    for (int i = 0; l && i < l->ncomms; i++) {
        if (l->comms[i] == c) {
            l->comms[i] = l->comms[--l->ncomms];
            /* Held messages of this group are of no use to a later comm. (A comm_new that failed
             * was never listed: what it held stays for the next try.) */
            s_stash_purge(l, 0, true, c->generation, c->group);
            break;
        }
    }
    free(c);
    *cp = NULL;
}

static shoal_err_t s_config_check(const comm_listener_t *l, const comm_config_t *cfg,
                                  size_t *chunk)
{
    if (cfg->nranks < 1 || cfg->nranks > COMM_MAX_RANKS)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: nranks %d outside 1..%d", cfg->nranks,
                          COMM_MAX_RANKS);
    if (cfg->rank < 0 || cfg->rank >= cfg->nranks)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: rank %d outside 0..%d", cfg->rank,
                          cfg->nranks - 1);
    if (cfg->timeout_ms <= 0)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: timeout_ms %d must be > 0",
                          cfg->timeout_ms);
    *chunk = cfg->chunk_bytes ? cfg->chunk_bytes : COMM_CHUNK_DEFAULT;
    if (*chunk % 4 != 0 || *chunk > COMM_CHUNK_MAX)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm_new: chunk_bytes %zu must be a multiple of 4 up to %u",
                          cfg->chunk_bytes, COMM_CHUNK_MAX);
    if (cfg->nranks > 1 && !cfg->endpoints)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: no endpoint list");
    if (l->used && cfg->generation < l->generation)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm_new: generation %" PRIu64 " older than %" PRIu64 " used on %s",
                          cfg->generation, l->generation, l->endpoint);
    if (comm_zmq_find(l, cfg->generation, cfg->group))
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm_new: listener %s already carries the comm of generation %" PRIu64
                          ", group %" PRIu32,
                          l->endpoint, cfg->generation, cfg->group);
    if (s_group_used(l, cfg->generation, cfg->group))
        return shoal_fail(SHOAL_ERR_INVALID,
                          "comm_new: generation %" PRIu64 ", group %" PRIu32
                          " already used on %s (generations must increase)",
                          cfg->generation, cfg->group, l->endpoint);
    if (l->ncomms > 0 && cfg->generation != l->generation)
        return shoal_fail(SHOAL_ERR_STATE,
                          "comm_new: %d comm(s) of generation %" PRIu64
                          " still live on %s: destroy them before generation %" PRIu64,
                          l->ncomms, l->generation, l->endpoint, cfg->generation);
    if (l->ncomms == COMM_MAX_GROUPS ||
        (cfg->generation == l->generation && l->ngroups_used == GROUPS_USED_MAX))
        return shoal_fail(SHOAL_ERR_STATE, "comm_new: too many groups on %s", l->endpoint);
    return SHOAL_OK;
}

shoal_err_t comm_new(comm_listener_t *l, const comm_config_t *cfg, comm_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    size_t chunk = 0;
    *out = NULL;
    if (!l || !cfg)
        return shoal_fail(SHOAL_ERR_INVALID, "comm_new: NULL listener or config");
    if ((rc = s_config_check(l, cfg, &chunk)) != SHOAL_OK)
        return rc;

    comm_t *c = calloc(1, sizeof *c);
    if (!c)
        return shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory");
    c->rank = cfg->rank;
    c->nranks = cfg->nranks;
    c->group = cfg->group;
    c->generation = cfg->generation;
    c->timeout_ms = cfg->timeout_ms;
    c->chunk = chunk;
    c->wake[0] = c->wake[1] = -1;
    c->l = l;
    atomic_init(&c->aborted, 0);
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        rc = shoal_fail(SHOAL_ERR_IO, "comm_new: pipe2: %s", strerror(errno));
        goto out_free;
    }
    c->peers = calloc((size_t)c->nranks, sizeof *c->peers);
    c->items = calloc((size_t)c->nranks + 2, sizeof *c->items);
    if (!c->peers || !c->items) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "comm_new: out of memory for %d peers", c->nranks);
        goto out_free;
    }
    for (int j = 0; j < c->nranks && c->nranks > 1; j++) {
        if (!cfg->endpoints[j]) {
            rc = shoal_fail(SHOAL_ERR_INVALID, "comm_new: no endpoint for rank %d", j);
            goto out_free;
        }
        if (j != c->rank) {
            SHOAL_CHECK_GOTO(s_conn_get(l, cfg->endpoints[j], j, &c->peers[j].conn), rc,
                             out_free);
            snprintf(c->peers[j].key, sizeof c->peers[j].key, "%s", c->peers[j].conn->key);
        }
    }
    /* The shm path needs every peer on this host (reached over its ipc socket) and our own
     * identity; the peers decide the same from the same endpoint list. */
    c->shm = c->nranks > 1 && !l->no_shm && l->shm_id[0];
    snprintf(c->shm_id, sizeof c->shm_id, "%s", l->shm_id);
    for (int j = 0; c->shm && j < c->nranks; j++) {
        char id[sizeof c->shm_id];
        if (j != c->rank && !comm_zmq_shm_id(c->peers[j].conn->target, id, sizeof id))
            c->shm = false;
    }
    if (!l->used || cfg->generation != l->generation) {
        /* A new generation: held messages of older ones are of no use any more. */
        l->ngroups_used = 0;
        s_stash_purge(l, cfg->generation, false, 0, 0);
    }
    l->used = true;
    l->generation = c->generation;
    l->groups_used[l->ngroups_used++] = c->group;
    l->comms[l->ncomms++] = c;
    log_debug("comm: rank %d/%d generation %" PRIu64 " group %" PRIu32
              " on %s, chunk %zu, timeout %d ms%s",
              c->rank, c->nranks, c->generation, c->group, l->endpoint, c->chunk, c->timeout_ms,
              c->shm ? ", same-host shared memory" : "");
    *out = c;
    return SHOAL_OK;

out_free:
    c->broken = rc; /* drop anything queued: linger 0 */
    comm_destroy(&c);
    return rc;
}

void comm_abort(comm_t *c)
{
    if (!c)
        return;
    atomic_store(&c->aborted, 1);
    ssize_t w = write(c->wake[1], "a", 1); /* async-signal-safe; a full pipe already wakes */
    (void)w;
}

void comm_give_up(comm_t *c)
{
    if (!c || !c->l || c->gave_up)
        return;
    atomic_store(&c->aborted, 1);
    c->gave_up = true;
    const op_t op = {.name = "give up"};
    const frame_t f = {.kind = KIND_GIVE_UP};
    for (int j = 0; j < c->nranks; j++) {
        if (j == c->rank || j + 1 == c->given_up_by)
            continue; /* the rank that gave up first knows */
        zmq_msg_t m;
        if (comm_zmq_build(c, &op, &f, &m) != SHOAL_OK)
            continue; /* best effort: that peer waits out its timeout, as before */
        if (zmq_msg_send(&m, c->peers[j].conn->push, ZMQ_DONTWAIT) < 0) {
            log_debug("comm give up (generation %" PRIu64 ", group %" PRIu32 "): to rank %d: %s",
                      c->generation, c->group, j, zmq_strerror(errno));
            zmq_msg_close(&m);
        }
    }
}

int comm_given_up_by(const comm_t *c)
{
    return c && c->given_up_by ? c->given_up_by - 1 : -1;
}

int comm_is_aborted(const comm_t *c)
{
    return c && atomic_load(&((comm_t *)c)->aborted);
}

void comm_chunk_range(size_t n, int nranks, int r, size_t *lo, size_t *hi)
{
    size_t q = n / (size_t)nranks, m = n % (size_t)nranks, a = (size_t)r, b = (size_t)r + 1;
    *lo = q * a + (a < m ? a : m);
    *hi = q * b + (b < m ? b : m);
}
