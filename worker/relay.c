/* relay.c: the host relay (relay.h). */
#include "relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"
#include "idmap.h"
#include "log.h"
#include "relay_hold.h"
#include "wire.h"

#define S_CLOSED_KEPT_MS 60000 /* a closed worker's entry drops what its connection still held */
#define S_BURST 256

/* A worker connected to the relay: its routing id on the local ROUTER and its slot upstream. */
typedef struct {
    unsigned char id[WIRE_MAX_ROUTE_BYTES];
    size_t id_len;
    unsigned char slot_key[WIRE_RELAY_SLOT_LEN];
    uint32_t slot;
    int fd;            /* its connection's descriptor (-1: unknown) */
    int64_t closed_ms; /* monotonic: its connection closed (0: open) */
} s_entry_t;

struct relay {
    relay_config_t cfg;
    void *zctx, *local, *up, *mon;
    relay_hold_t hold;
    idmap_t by_id, by_slot;
    s_entry_t **e;
    int n, cap;
    uint32_t next_slot;
    int64_t next_purge_ms;
    relay_stats_t st;
};

static shoal_err_t s_monitor(relay_t *r)
{
    char addr[64];
    snprintf(addr, sizeof addr, "inproc://relay-monitor-%p", (void *)r);
    if (zmq_socket_monitor(r->local, addr, ZMQ_EVENT_DISCONNECTED) != 0 ||
        !(r->mon = zmq_socket(r->zctx, ZMQ_PAIR)) || zmq_connect(r->mon, addr) != 0)
        return shoal_fail(SHOAL_ERR_IO, "monitoring the relay's local socket: %s",
                          zmq_strerror(errno));
    return SHOAL_OK;
}

shoal_err_t relay_open(const relay_config_t *cfg, relay_t **out)
{
    relay_t *r = calloc(1, sizeof *r);
    if (!r)
        return shoal_fail(SHOAL_ERR_NOMEM, "relay");
    r->cfg = *cfg;
    relay_hold_init(&r->hold, cfg->hold_ms, cfg->name);
    r->next_slot = 1;
    r->zctx = zmq_ctx_new();
    shoal_err_t rc = SHOAL_ERR_IO;
    if (!r->zctx || !(r->local = zmq_socket(r->zctx, ZMQ_ROUTER)) ||
        !(r->up = zmq_socket(r->zctx, ZMQ_DEALER))) {
        shoal_fail(SHOAL_ERR_IO, "relay sockets: %s", zmq_strerror(errno));
        goto fail;
    }
    if ((rc = wire_socket_limits(r->local)) != SHOAL_OK ||
        (rc = wire_socket_limits(r->up)) != SHOAL_OK)
        goto fail;
    rc = SHOAL_ERR_IO;
    if (strncmp(cfg->listen, "ipc://", 6) == 0)
        (void)unlink(cfg->listen + 6); /* a killed relay's socket file */
    if (zmq_bind(r->local, cfg->listen) != 0) {
        shoal_fail(SHOAL_ERR_IO, "binding the relay's endpoint %s: %s", cfg->listen,
                   zmq_strerror(errno));
        goto fail;
    }
    if (zmq_connect(r->up, cfg->coordinator) != 0) {
        shoal_fail(SHOAL_ERR_IO, "connecting to the coordinator %s: %s", cfg->coordinator,
                   zmq_strerror(errno));
        goto fail;
    }
    if ((rc = s_monitor(r)) != SHOAL_OK)
        goto fail;
    r->next_purge_ms = clock_mono_ms() + S_CLOSED_KEPT_MS;
    *out = r;
    return SHOAL_OK;
fail:
    relay_close(r);
    return rc;
}

void relay_close(relay_t *r)
{
    if (!r)
        return;
    if (r->mon)
        zmq_close(r->mon);
    if (r->local)
        zmq_close(r->local);
    if (r->up)
        zmq_close(r->up);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    for (int i = 0; i < r->n; i++)
        free(r->e[i]);
    free(r->e);
    idmap_fini(&r->by_id);
    idmap_fini(&r->by_slot);
    relay_hold_fini(&r->hold);
    free(r);
}

void relay_stats(const relay_t *r, relay_stats_t *out)
{
    *out = r->st;
    out->up = r->hold.sent;
    out->dropped_up = r->hold.dropped;
}

/* The entry of a new local connection (NULL: out of memory). */
static s_entry_t *s_entry_new(relay_t *r, const void *id, size_t len, int fd)
{
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        s_entry_t **e = realloc(r->e, (size_t)cap * sizeof *e);
        if (!e)
            return NULL;
        r->e = e;
        r->cap = cap;
    }
    s_entry_t *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    memcpy(x->id, id, len);
    x->id_len = len;
    x->slot = r->next_slot++;
    wire_relay_slot_put(x->slot_key, x->slot);
    x->fd = fd;
    if (idmap_put(&r->by_id, x->id, x->id_len, x) != SHOAL_OK ||
        idmap_put(&r->by_slot, x->slot_key, sizeof x->slot_key, x) != SHOAL_OK) {
        idmap_del(&r->by_id, x->id, x->id_len);
        free(x);
        return NULL;
    }
    r->e[r->n++] = x;
    r->st.workers++;
    log_debug("relay: worker connection on fd %d is slot %u", fd, x->slot);
    return x;
}

/* Reads one whole message into frames (at most 2 kept); returns the frame count, -1 when none. */
static int s_recv(void *sock, zmq_msg_t parts[2])
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, n ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < n && i < 2; i++)
                zmq_msg_close(&parts[i]);
            return -1;
        }
        more = zmq_msg_more(&m);
        if (n < 2)
            parts[n] = m;
        else
            zmq_msg_close(&m);
        n++;
    }
    return n;
}

/* Worker -> coordinator: [routing id][envelope] becomes [slot][envelope]. */
static void s_from_workers(relay_t *r, int64_t now)
{
    for (int i = 0; i < S_BURST; i++) {
        zmq_msg_t p[2];
        int n = s_recv(r->local, p);
        if (n < 0)
            return;
        if (n == 2) {
            s_entry_t *x = idmap_get(&r->by_id, zmq_msg_data(&p[0]), zmq_msg_size(&p[0]));
            if (!x && zmq_msg_size(&p[0]) <= WIRE_MAX_ROUTE_BYTES)
                x = s_entry_new(r, zmq_msg_data(&p[0]), zmq_msg_size(&p[0]),
                                zmq_msg_get(&p[1], ZMQ_SRCFD));
            if (x && !x->closed_ms)
                (void)relay_hold_send(&r->hold, r->up, x->slot, zmq_msg_data(&p[1]),
                                      zmq_msg_size(&p[1]), now);
            else
                r->st.dropped_up++; /* sent before its connection closed, or no memory */
        } else {
            r->st.dropped_up++; /* a worker's DEALER sends one frame: this is no worker */
        }
        for (int k = 0; k < n && k < 2; k++)
            zmq_msg_close(&p[k]);
    }
}

/* One message for the worker of `slot` (its packed Envelope, handed on as it is). */
static void s_to_worker(relay_t *r, const unsigned char slot_key[WIRE_RELAY_SLOT_LEN],
                        const void *buf, size_t len)
{
    s_entry_t *x = idmap_get(&r->by_slot, slot_key, WIRE_RELAY_SLOT_LEN);
    if (x && !x->closed_ms &&
        zmq_send(r->local, x->id, x->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
        zmq_send(r->local, buf, len, ZMQ_DONTWAIT) >= 0)
        r->st.down++;
    else
        r->st.dropped_down++; /* its worker is gone */
}

static void s_on_batch(const Shoal__Envelope *env, void *ctx)
{
    relay_t *r = ctx;
    if (env->type != SHOAL__MSG_TYPE__MSG_RELAY_BATCH) {
        r->st.dropped_down++; /* the coordinator sends a relay nothing else unrouted */
        return;
    }
    for (size_t i = 0; i < env->relay_batch->n_items; i++) {
        const Shoal__RelayItem *it = env->relay_batch->items[i];
        unsigned char key[WIRE_RELAY_SLOT_LEN];
        wire_relay_slot_put(key, it->slot);
        s_to_worker(r, key, it->envelope.data, it->envelope.len);
    }
}

/* Coordinator -> workers: a RelayBatch of answers, or a push as [slot][envelope]. */
static void s_from_coordinator(relay_t *r)
{
    for (int i = 0; i < S_BURST; i++) {
        zmq_msg_t p[2];
        int n = s_recv(r->up, p);
        if (n < 0)
            return;
        if (n == 2 && zmq_msg_size(&p[0]) == WIRE_RELAY_SLOT_LEN)
            s_to_worker(r, zmq_msg_data(&p[0]), zmq_msg_data(&p[1]), zmq_msg_size(&p[1]));
        else if (n != 1 || wire_decode(zmq_msg_data(&p[0]), zmq_msg_size(&p[0]), s_on_batch, r) !=
                               SHOAL_OK)
            r->st.dropped_down++;
        for (int k = 0; k < n && k < 2; k++)
            zmq_msg_close(&p[k]);
    }
}

/* A closed worker connection: the coordinator hears it on the worker's route at once. */
static void s_closed(relay_t *r, s_entry_t *x, int64_t now)
{
    x->closed_ms = now ? now : 1;
    r->st.workers--;
    r->st.closed++;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_RELAY_CLOSED, "", r->cfg.name, 0, r->st.closed);
    Shoal__RelayClosed rc = SHOAL__RELAY_CLOSED__INIT;
    rc.reason = "connection to the host relay closed";
    env.body_case = SHOAL__ENVELOPE__BODY_RELAY_CLOSED;
    env.relay_closed = &rc;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_pack(&env, &buf, &len) == SHOAL_OK)
        (void)relay_hold_send(&r->hold, r->up, x->slot, buf, len, now);
    free(buf);
    log_debug("relay: slot %u closed", x->slot);
}

static void s_monitor_drain(relay_t *r, int64_t now)
{
    uint16_t what;
    uint32_t fd;
    while (wire_monitor_event(r->mon, &what, &fd))
        if (what == ZMQ_EVENT_DISCONNECTED)
            for (int i = 0; i < r->n; i++)
                if (!r->e[i]->closed_ms && r->e[i]->fd == (int)fd)
                    s_closed(r, r->e[i], now);
}

/* Forgets closed entries once their connections can hold nothing more. */
static void s_purge(relay_t *r, int64_t now)
{
    int k = 0;
    for (int i = 0; i < r->n; i++) {
        s_entry_t *x = r->e[i];
        if (x->closed_ms && now - x->closed_ms > S_CLOSED_KEPT_MS) {
            idmap_del(&r->by_id, x->id, x->id_len);
            idmap_del(&r->by_slot, x->slot_key, sizeof x->slot_key);
            free(x);
        } else {
            r->e[k++] = x;
        }
    }
    r->n = k;
}

shoal_err_t relay_poll_once(relay_t *r, int timeout_ms)
{
    zmq_pollitem_t items[3] = {{r->local, 0, ZMQ_POLLIN, 0},
                               {r->up, 0, ZMQ_POLLIN, 0},
                               {r->mon, 0, ZMQ_POLLIN, 0}};
    int due = relay_hold_due_in(&r->hold, clock_mono_ms());
    if (due >= 0 && due < timeout_ms)
        timeout_ms = due;
    int n = zmq_poll(items, 3, timeout_ms);
    if (n < 0 && errno != EINTR)
        return shoal_fail(SHOAL_ERR_IO, "zmq_poll: %s", zmq_strerror(errno));
    int64_t now = clock_mono_ms();
    if (n > 0 && (items[0].revents & ZMQ_POLLIN))
        s_from_workers(r, now);
    if (n > 0 && (items[1].revents & ZMQ_POLLIN))
        s_from_coordinator(r);
    if (n > 0 && (items[2].revents & ZMQ_POLLIN))
        s_monitor_drain(r, now);
    relay_hold_flush(&r->hold, r->up, now, 0);
    if (now >= r->next_purge_ms) {
        s_purge(r, now);
        r->next_purge_ms = now + S_CLOSED_KEPT_MS / 4;
    }
    return SHOAL_OK;
}

shoal_err_t relay_run(relay_t *r, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        shoal_err_t rc = relay_poll_once(r, 1000);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}
