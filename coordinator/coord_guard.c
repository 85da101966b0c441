/* coord_guard.c: what the coordinator does about workers that misbehave: a message rate limit
 * per worker connection (token bucket), strikes for malformed or out-of-plan messages that
 * quarantine a worker after quarantine_after_bad_messages, and the gradient-sanity votes of a
 * run's data-parallel replicas (StepReport.rejected_replicas) that quarantine the replica they
 * name once a majority of its peers reported it. */
#include "coord_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Buckets of connections silent this long are forgotten (the table stays as small as the set
 * of connections that talk). */
#define S_RATE_IDLE_MS 60000

struct coord_rate {
    unsigned char id[WIRE_MAX_ROUTE_BYTES];
    size_t len;
    double tokens;
    int64_t last_ms;
    unsigned long long dropped; /* since the last log line about it */
};

/* The sender's identity: its connection's route frame, and its slot for a worker behind a host
 * relay (each relayed worker has its own rate). Returns the key's length (0: no route). */
static size_t s_route_id(const wire_route_t *route, unsigned char key[WIRE_MAX_ROUTE_BYTES])
{
    if (!route || route->n < 1 || route->len[0] == 0)
        return 0;
    return wire_route_key(route, key, WIRE_MAX_ROUTE_BYTES);
}

/* The connection's bucket, found through c->rate_index (a scan of every bucket per message
 * cost ~10^9 memcmp/s at 10,000 connections and 100 K messages/s). */
static struct coord_rate *s_bucket(coord_t *c, const unsigned char *id, size_t len, int64_t now)
{
    struct coord_rate *b = idmap_get(&c->rate_index, id, len);
    if (b)
        return b;
    if (2 * c->n_rates >= c->cap_rates) {
        /* half full: forget idle connections, then grow unless fewer than a quarter remain
         * (each scan is paid for by a quarter of the table's worth of inserts) */
        int k = 0;
        for (int i = 0; i < c->n_rates; i++) {
            struct coord_rate *r = c->rates[i];
            if (now - r->last_ms < S_RATE_IDLE_MS) {
                c->rates[k++] = r;
            } else {
                idmap_del(&c->rate_index, r->id, r->len);
                free(r);
            }
        }
        c->n_rates = k;
        if (4 * c->n_rates >= c->cap_rates) {
            int cap = c->cap_rates ? 2 * c->cap_rates : 16;
            struct coord_rate **grown = realloc(c->rates, sizeof *grown * (size_t)cap);
            if (!grown)
                return NULL;
            c->rates = grown;
            c->cap_rates = cap;
        }
    }
    if (!(b = calloc(1, sizeof *b)))
        return NULL;
    memcpy(b->id, id, len);
    b->len = len;
    b->tokens = c->cfg.rate_limit_burst;
    b->last_ms = now;
    if (idmap_put(&c->rate_index, b->id, b->len, b) != SHOAL_OK) {
        free(b);
        return NULL;
    }
    c->rates[c->n_rates++] = b;
    return b;
}

void coord_guard_free(coord_t *c)
{
    for (int i = 0; i < c->n_rates; i++)
        free(c->rates[i]);
    free(c->rates);
    c->rates = NULL;
    c->n_rates = c->cap_rates = 0;
    idmap_fini(&c->rate_index);
}

int coord_guard_admit(coord_t *c, const wire_route_t *route)
{
    const double rate = c->cfg.rate_limit_msgs_per_s;
    unsigned char id[WIRE_MAX_ROUTE_BYTES];
    const size_t len = s_route_id(route, id);
    if (rate <= 0 || !len)
        return 1;
    const int64_t now = clock_mono_ms();
    struct coord_rate *b = s_bucket(c, id, len, now);
    if (!b)
        return 1; /* out of memory: no limit rather than no service */
    b->tokens += rate * (double)(now - b->last_ms) / 1000.0;
    if (b->tokens > c->cfg.rate_limit_burst)
        b->tokens = c->cfg.rate_limit_burst;
    b->last_ms = now;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    c->rate_dropped++;
    c->dropped++;
    if (b->dropped++ % 1000 == 0)
        log_warn("a worker connection exceeds %d messages/s (burst %d): %llu dropped so far",
                 c->cfg.rate_limit_msgs_per_s, c->cfg.rate_limit_burst, c->rate_dropped);
    return 0;
}

void coord_guard_strike(coord_t *c, coord_worker_t *w, const char *why)
{
    c->bad_messages++;
    if (!w || !coord_worker_is_live(w->state) || w->state == WORKER_QUARANTINED)
        return;
    w->strikes++;
    const int limit = c->cfg.quarantine_after_bad_messages;
    log_warn("worker %s: bad message %d%s: %s", w->id, w->strikes,
             limit > 0 ? "" : " (quarantine off)", why);
    if (limit > 0 && w->strikes >= limit) {
        char detail[160];
        snprintf(detail, sizeof detail, "%d malformed or out-of-plan messages, the last: %.100s",
                 w->strikes, why);
        coord_worker_quarantine(c, w, "bad messages", detail);
    }
}

void coord_guard_strike_route(coord_t *c, const wire_route_t *route, const char *why)
{
    coord_worker_t *who = NULL;
    for (int i = 0; route && route->n >= 1 && i < c->n_workers && !who; i++) {
        coord_worker_t *w = c->workers[i];
        if (w->has_route && wire_route_same(&w->route, route))
            who = w;
    }
    coord_guard_strike(c, who, why);
}

/* The worker of r's plan at `replica` in the stage and ep rank of `like` (NULL: none). */
static coord_worker_t *s_replica_worker(coord_t *c, const coord_run_t *r, uint32_t replica,
                                        const plan_peer_t *like)
{
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        const plan_peer_t *p = &r->plan.peers[i];
        if (p->cell.replica == replica && p->cell.stage == like->cell.stage &&
            p->cell.ep_rank == like->cell.ep_rank)
            return coord_worker_by_id(c, p->worker_id);
    }
    return NULL;
}

void coord_guard_grad_report(coord_t *c, coord_run_t *r, coord_worker_t *w, uint64_t rejected,
                             const char *detail)
{
    const plan_peer_t *me = coord_plan_member(r, w->id);
    const uint32_t dp = r->plan.dp;
    if (!me || !rejected || dp < 2 || dp > 64)
        return;
    if (r->votes_gen != r->generation) {
        memset(r->grad_votes, 0, sizeof r->grad_votes);
        r->votes_gen = r->generation;
    }
    if (dp < 64 && rejected >> dp) {
        coord_guard_strike(c, w, "step_report names replicas outside the plan's data_parallel");
        return;
    }
    for (uint32_t i = 0; i < dp; i++) {
        if (!(rejected >> i & 1) || i == me->cell.replica)
            continue;
        r->grad_votes[i] |= 1ull << me->cell.replica;
        int votes = 0;
        for (uint32_t j = 0; j < dp; j++)
            votes += (int)(r->grad_votes[i] >> j & 1);
        coord_worker_t *bad = s_replica_worker(c, r, i, me);
        /* at least two accusers and a strict majority of the replica's peers: one liar (or
         * one honest replica's mistaken decision) never quarantines a worker; with
         * data_parallel 2 the step still leaves the gradient out, but nobody is quarantined */
        if (bad && votes >= 2 && 2 * votes > (int)dp - 1) {
            char why[160];
            snprintf(why, sizeof why, "gradient rejected by %d of %u peers: %.100s", votes,
                     dp - 1, detail[0] ? detail : "no detail");
            coord_worker_quarantine(c, bad, "gradient rejected", why);
        }
    }
}

void coord_guard_counters(const coord_t *c, coord_guard_counters_t *out)
{
    out->rate_dropped = c->rate_dropped;
    out->bad_messages = c->bad_messages;
    out->quarantines = c->quarantines;
}

void coord_guard_peer_frames(coord_t *c, coord_run_t *r, coord_worker_t *w, const char *key,
                             uint32_t frames, const char *why)
{
    if (!coord_plan_member(r, w->id) || !frames || !zsec_key_valid(key) ||
        strcmp(key, w->public_key) == 0)
        return;
    /* The accused is whoever holds the key: CURVE authenticated every frame of that connection,
     * so frames claiming another rank count against the key's holder, never the claimed rank. */
    coord_worker_t *bad = NULL;
    for (uint32_t i = 0; i < r->plan.n_peers && !bad; i++) {
        coord_worker_t *p = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (p && p != w && strcmp(p->public_key, key) == 0)
            bad = p;
    }
    if (!bad) {
        log_info("worker %s reports %u bad data-plane frames from key %s, which holds no place "
                 "in run %s's plan: ignored",
                 w->id, frames, key, r->id);
        return;
    }
    const int64_t now = clock_mono_ms();
    if (bad->peer_frames_ms && now - bad->peer_frames_ms < COORD_PEER_FRAMES_MS)
        return;
    bad->peer_frames_ms = now;
    char text[200];
    snprintf(text, sizeof text, "%u bad data-plane frames reported by %s: %.100s", frames, w->id,
             why);
    coord_guard_strike(c, bad, text);
}
