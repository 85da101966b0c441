/* coord_replicas.c: checkpoint shards without a shared file system (checkpoint.replicas): when
 * a step's manifest commits, each shard's writer is its first holder and `replicas` other live
 * workers are told to copy it (other hosts first, then other institutions, then the worker ids
 * after the writer's); each copy confirmed (MSG_SHARD_HELD) joins the shard's `holders`; a plan
 * that restores from the checkpoint lists every shard's digests and live holders. */
#include "coord_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "log.h"
#include "runspec.h"

/* checkpoint.replicas of a run's spec (0 when it does not parse: logged). */
static int s_replicas_of(const coord_run_t *r)
{
    runspec_t *spec = malloc(sizeof *spec);
    int n = 0;
    if (spec && runspec_load_string(r->spec_yaml, r->name, spec) == SHOAL_OK)
        n = spec->checkpoint_replicas;
    else
        log_warn("run %s: spec unreadable, no checkpoint replicas: %s", r->id, shoal_errmsg());
    free(spec);
    return n;
}

static uint64_t s_id_num(const char *id)
{
    return id[0] == 'w' ? strtoull(id + 1, NULL, 10) : 0;
}

/* A worker that can take and serve a copy: live, with a shard server. */
static int s_can_hold(const coord_worker_t *w)
{
    return w && coord_worker_is_live(w->state) && w->shard_endpoint[0];
}

typedef struct {
    coord_worker_t *w;
    int same_host, same_inst;
    uint64_t dist; /* worker id distance after the writer's, cyclic */
} s_cand_t;

static int s_cand_cmp(const void *a, const void *b)
{
    const s_cand_t *x = a, *y = b;
    if (x->same_host != y->same_host)
        return x->same_host - y->same_host;
    if (x->same_inst != y->same_inst)
        return x->same_inst - y->same_inst;
    return (x->dist > y->dist) - (x->dist < y->dist);
}

int coord_replicas_choose(coord_t *c, const coord_worker_t *writer, int n, coord_worker_t **out)
{
    s_cand_t *cand = calloc((size_t)c->n_workers + 1, sizeof *cand);
    int k = 0;
    const uint64_t span = c->next_worker + 1, me = s_id_num(writer->id);
    for (int i = 0; cand && i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (w == writer || !s_can_hold(w))
            continue;
        cand[k++] = (s_cand_t){w, strcmp(w->host, writer->host) == 0,
                               strcmp(w->institution, writer->institution) == 0,
                               (s_id_num(w->id) + span - me) % span};
    }
    qsort(cand, (size_t)k, sizeof *cand, s_cand_cmp);
    if (k > n)
        k = n;
    for (int i = 0; i < k; i++)
        out[i] = cand[i].w;
    free(cand);
    return k;
}

#define S_MAX_SOURCES 8 /* holders offered for one shard (the fetcher tries this many) */

/* A copy ordered and not confirmed yet: `to` copies `writer`'s shard of `step`. */
struct coord_repl_order {
    char run[COORD_ID_MAX], to[COORD_ID_MAX], writer[COORD_ID_MAX];
    int64_t step;
    int sent;          /* how many times it was sent */
    int64_t resend_ms; /* monotonic: sent again (or given up) from then */
};

static struct coord_repl_order *s_order_find(coord_t *c, const char *run, int64_t step,
                                             const char *to, const char *writer)
{
    for (int i = 0; i < c->n_repl_orders; i++) {
        struct coord_repl_order *o = &c->repl_orders[i];
        if (o->step == step && strcmp(o->run, run) == 0 && strcmp(o->to, to) == 0 &&
            strcmp(o->writer, writer) == 0)
            return o;
    }
    return NULL;
}

/* One more sending of an order (a new order when it is not known): its re-send time is
 * replicate_ack_ms from now, doubled for every earlier sending. */
static void s_order_sent(coord_t *c, const char *run, int64_t step, const char *to,
                         const char *writer)
{
    if (c->cfg.replicate_ack_ms <= 0)
        return; /* sent once, not followed */
    struct coord_repl_order *o = s_order_find(c, run, step, to, writer);
    if (!o) {
        if (c->n_repl_orders == c->cap_repl_orders) {
            int cap = c->cap_repl_orders ? 2 * c->cap_repl_orders : 16;
            struct coord_repl_order *n = realloc(c->repl_orders, (size_t)cap * sizeof *n);
            if (!n) {
                log_warn("replication order of %s's shard to %s not followed: out of memory",
                         writer, to);
                return;
            }
            c->repl_orders = n;
            c->cap_repl_orders = cap;
        }
        o = &c->repl_orders[c->n_repl_orders++];
        memset(o, 0, sizeof *o);
        snprintf(o->run, sizeof o->run, "%s", run);
        snprintf(o->to, sizeof o->to, "%s", to);
        snprintf(o->writer, sizeof o->writer, "%s", writer);
        o->step = step;
    }
    const int shift = o->sent < 20 ? o->sent : 20;
    o->resend_ms = clock_mono_ms() + ((int64_t)c->cfg.replicate_ack_ms << shift);
    o->sent++;
}

static void s_order_drop(coord_t *c, struct coord_repl_order *o)
{
    *o = c->repl_orders[--c->n_repl_orders];
}

void coord_replicas_free(coord_t *c)
{
    free(c->repl_orders);
    c->repl_orders = NULL;
    c->n_repl_orders = c->cap_repl_orders = 0;
}

/* Protobuf copies of manifest shards (strings borrowed from the manifest json). */
typedef struct {
    Shoal__ReplicaCopy copy;
    Shoal__Cell cell;
    Shoal__FileDigest *files, **file_ptrs;
    Shoal__ShardSource src[S_MAX_SOURCES], *src_ptrs[S_MAX_SOURCES];
} s_copy_pb_t;

/* The live holders of a manifest shard, in its holders' order (the writer first), as sources
 * into src[0..cap) (strings borrowed from the json and the worker records); returns how many. */
static size_t s_live_sources(coord_t *c, const json_t *sh, Shoal__ShardSource *src,
                             Shoal__ShardSource **ptrs, size_t cap)
{
    const json_t *holders = json_object_get(sh, CTL_F_HOLDERS);
    size_t n = 0;
    for (size_t h = 0; h < json_array_size(holders) && n < cap; h++) {
        const json_t *hj = json_array_get(holders, h);
        const char *id = json_string_value(json_object_get(hj, "worker"));
        const char *path = json_string_value(json_object_get(hj, CTL_F_PATH));
        coord_worker_t *hw = id ? coord_worker_by_id(c, id) : NULL;
        if (!path || !s_can_hold(hw))
            continue; /* dead or gone: not offered */
        Shoal__ShardSource s = SHOAL__SHARD_SOURCE__INIT;
        s.worker_id = hw->id;
        s.endpoint = hw->shard_endpoint;
        s.public_key = hw->public_key;
        s.path = (char *)path;
        src[n] = s;
        ptrs[n] = &src[n];
        n++;
    }
    return n;
}

/* Whether worker `id` is among the shard's holders (alive or not). */
static int s_is_holder(const json_t *sh, const char *id)
{
    const json_t *holders = json_object_get(sh, CTL_F_HOLDERS);
    for (size_t h = 0; h < json_array_size(holders); h++) {
        const char *hw = json_string_value(json_object_get(json_array_get(holders, h), "worker"));
        if (hw && strcmp(hw, id) == 0)
            return 1;
    }
    return 0;
}

static int s_files_pb(const json_t *files, Shoal__FileDigest **out, Shoal__FileDigest ***ptrs)
{
    const size_t n = json_array_size(files);
    *out = calloc(n + 1, sizeof **out);
    *ptrs = calloc(n + 1, sizeof **ptrs);
    if (!*out || !*ptrs)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *f = json_array_get(files, i);
        Shoal__FileDigest d = SHOAL__FILE_DIGEST__INIT;
        d.name = (char *)json_string_value(json_object_get(f, "name"));
        d.size = (uint64_t)json_integer_value(json_object_get(f, "size"));
        d.sha256 = (char *)json_string_value(json_object_get(f, "sha256"));
        if (!d.name || !d.sha256)
            return -1;
        (*out)[i] = d;
        (*ptrs)[i] = &(*out)[i];
    }
    return (int)n;
}

static void s_cell_of(const json_t *shard, Shoal__Cell *cell)
{
    const json_t *j = json_object_get(shard, CTL_F_CELL);
    Shoal__Cell init = SHOAL__CELL__INIT;
    *cell = init;
    cell->replica = (uint32_t)json_integer_value(json_object_get(j, CTL_F_REPLICA));
    cell->stage = (uint32_t)json_integer_value(json_object_get(j, CTL_F_STAGE));
    cell->ep_rank = (uint32_t)json_integer_value(json_object_get(j, CTL_F_EP_RANK));
}

/* Tells `to` to copy the shards shards[idx[0..n)] of `step` from their writers. */
static void s_push_replicate(coord_t *c, coord_run_t *r, coord_worker_t *to, int64_t step,
                             const json_t *shards, const int *idx, int n)
{
    s_copy_pb_t *k = calloc((size_t)n, sizeof *k);
    Shoal__ReplicaCopy **ptrs = calloc((size_t)n, sizeof *ptrs);
    int ok = k && ptrs;
    for (int i = 0; ok && i < n; i++) {
        const json_t *sh = json_array_get(shards, (size_t)idx[i]);
        const char *writer = json_string_value(json_object_get(sh, "worker"));
        Shoal__ReplicaCopy init = SHOAL__REPLICA_COPY__INIT;
        k[i].copy = init;
        s_cell_of(sh, &k[i].cell);
        k[i].copy.cell = &k[i].cell;
        k[i].copy.writer = (char *)writer;
        int nf = s_files_pb(json_object_get(sh, "files"), &k[i].files, &k[i].file_ptrs);
        k[i].copy.files = k[i].file_ptrs;
        k[i].copy.n_files = nf > 0 ? (size_t)nf : 0;
        k[i].copy.n_sources = s_live_sources(c, sh, k[i].src, k[i].src_ptrs, S_MAX_SOURCES);
        k[i].copy.sources = k[i].src_ptrs;
        ok = writer && nf > 0 && k[i].copy.n_sources > 0;
        ptrs[i] = &k[i].copy;
    }
    if (ok) {
        Shoal__Replicate rp = SHOAL__REPLICATE__INIT;
        rp.step = step;
        rp.copies = ptrs;
        rp.n_copies = (size_t)n;
        Shoal__Envelope env;
        wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REPLICATE, r->id, COORD_SENDER, r->generation,
                           0);
        env.body_case = SHOAL__ENVELOPE__BODY_REPLICATE;
        env.replicate = &rp;
        coord_send_worker(c, to, &env);
        for (int i = 0; i < n; i++)
            s_order_sent(c, r->id, step, to->id, ptrs[i]->writer);
        log_info("run %s: checkpoint %" PRId64 ": %s copies %d shard(s)", r->id, step, to->id, n);
    } else {
        log_error("run %s: checkpoint %" PRId64 ": replication order for %s not built", r->id, step,
                  to->id);
    }
    for (int i = 0; k && i < n; i++) {
        free(k[i].files);
        free(k[i].file_ptrs);
    }
    free(k);
    free(ptrs);
}

/* Forgets run r's holder index: its newest manifest changed (and so may the checkpoint sources
 * the cached answer to pulls names). */
static void s_holders_forget(coord_run_t *r)
{
    r->holders_step = 0;
    idmap_clear(&r->holders);
    r->pull_msg_stale = 1; /* the sources it names may have changed */
}

/* The committed manifest of (run, step), parsed; NULL when there is none or it does not parse. */
static json_t *s_manifest_at(coord_t *c, const char *run, int64_t step)
{
    char key[160], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "c/%s/%020" PRId64, run, step);
    if (store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len) != SHOAL_OK)
        return NULL;
    json_t *m = json_loadb(val, len, 0, NULL);
    free(val);
    return m;
}

/* Whether an order for a copy of `writer`'s shard of (run, step) is still followed. */
static int s_order_pending(const coord_t *c, const char *run, int64_t step, const char *writer)
{
    for (int i = 0; i < c->n_repl_orders; i++) {
        const struct coord_repl_order *o = &c->repl_orders[i];
        if (o->step == step && strcmp(o->run, run) == 0 && strcmp(o->writer, writer) == 0)
            return 1;
    }
    return 0;
}

/* Orders copies so that each shard of (r, step) has `total` live holders; a shard with an order
 * in flight is left alone when skip_pending. Returns the number of copies ordered. */
static int s_order_copies(coord_t *c, coord_run_t *r, int64_t step, const json_t *shards, int total,
                          int skip_pending)
{
    const size_t n = json_array_size(shards);
    int ordered = 0;
    /* per target worker: the shards it copies */
    int *count = calloc((size_t)c->n_workers + 1, sizeof *count);
    int *idx = calloc(((size_t)c->n_workers + 1) * (n + 1), sizeof *idx);
    coord_worker_t **pick = calloc((size_t)c->n_workers + 1, sizeof *pick);
    Shoal__ShardSource src[S_MAX_SOURCES], *ptrs[S_MAX_SOURCES];
    for (size_t i = 0; count && idx && pick && i < n; i++) {
        const json_t *sh = json_array_get(shards, i);
        const char *writer = json_string_value(json_object_get(sh, "worker"));
        coord_worker_t *ww = writer ? coord_worker_by_id(c, writer) : NULL;
        const int live = (int)s_live_sources(c, sh, src, ptrs, S_MAX_SOURCES);
        if (!ww || live == 0 || live >= total)
            continue; /* lost (no live holder) or enough copies */
        if (skip_pending && s_order_pending(c, r->id, step, writer))
            continue;
        const int cand = coord_replicas_choose(c, ww, c->n_workers, pick);
        int got = 0;
        for (int k = 0; k < cand && live + got < total; k++) {
            if (s_is_holder(sh, pick[k]->id))
                continue;
            for (int t = 0; t < c->n_workers; t++)
                if (c->workers[t] == pick[k]) {
                    idx[(size_t)t * (n + 1) + (size_t)count[t]++] = (int)i;
                    got++;
                    break;
                }
        }
        if (live + got < total)
            log_warn("run %s: checkpoint %" PRId64 ": shard of %s gets %d of %d holders (too "
                     "few live workers with a shard server)",
                     r->id, step, writer, live + got, total);
    }
    for (int t = 0; count && idx && t < c->n_workers; t++)
        if (count[t]) {
            s_push_replicate(c, r, c->workers[t], step, shards, &idx[(size_t)t * (n + 1)],
                             count[t]);
            ordered += count[t];
        }
    free(pick);
    free(idx);
    free(count);
    return ordered;
}

void coord_replicas_on_commit(coord_t *c, coord_run_t *r, int64_t step, json_t *manifest)
{
    s_holders_forget(r); /* a new newest manifest */
    json_t *shards = json_object_get(manifest, CTL_F_SHARDS);
    for (size_t i = 0; i < json_array_size(shards); i++) {
        json_t *sh = json_array_get(shards, i);
        const char *writer = json_string_value(json_object_get(sh, "worker"));
        const char *path = json_string_value(json_object_get(sh, CTL_F_PATH));
        json_object_set_new(sh, CTL_F_HOLDERS,
                            json_pack("[{s:s, s:s}]", "worker", writer ? writer : "", CTL_F_PATH,
                                      path ? path : ""));
    }
    const int replicas = s_replicas_of(r);
    if (replicas > 0)
        (void)s_order_copies(c, r, step, shards, replicas + 1, 0);
}

/* Indexes the holders of r's newest checkpoint (its manifest read once). 0, or -1 when the
 * manifest is unreadable or memory is short (the caller then knows nothing). */
static int s_holders_build(coord_t *c, coord_run_t *r)
{
    r->holders_step = 0;
    idmap_clear(&r->holders);
    json_t *m = s_manifest_at(c, r->id, r->checkpoint_step);
    const json_t *shards = json_object_get(m, CTL_F_SHARDS);
    size_t n = 0;
    for (size_t k = 0; k < json_array_size(shards); k++)
        n += json_array_size(json_object_get(json_array_get(shards, k), CTL_F_HOLDERS));
    char(*ids)[COORD_ID_MAX] = m ? realloc(r->holder_ids, (n + 1) * sizeof *ids) : NULL;
    if (!ids) {
        json_decref(m);
        return -1;
    }
    r->holder_ids = ids;
    size_t at = 0;
    for (size_t k = 0; k < json_array_size(shards); k++) {
        const json_t *holders = json_object_get(json_array_get(shards, k), CTL_F_HOLDERS);
        for (size_t h = 0; h < json_array_size(holders) && at < n; h++) {
            const char *id = json_string_value(json_object_get(json_array_get(holders, h),
                                                               "worker"));
            if (!id)
                continue;
            snprintf(ids[at], COORD_ID_MAX, "%s", id);
            if (idmap_put(&r->holders, ids[at], strlen(ids[at]), ids[at]) != SHOAL_OK) {
                json_decref(m);
                idmap_clear(&r->holders);
                return -1;
            }
            at++;
        }
    }
    json_decref(m);
    r->holders_step = r->checkpoint_step;
    return 0;
}

void coord_replicas_on_loss(coord_t *c, const coord_worker_t *w)
{
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        /* a loss already marked covers this one (the cron orders whatever is short) */
        if (coord_run_is_terminal(r->state) || r->checkpoint_step <= 0 || r->repl_lost)
            continue;
        /* the manifest is read once per checkpoint, not per death: a relay's death, or a
         * coordinator losing 10,000 connections, parsed it once per worker (minutes of CPU) */
        if (r->holders_step != r->checkpoint_step && s_holders_build(c, r) != 0)
            continue;
        if (idmap_get(&r->holders, w->id, strlen(w->id)) && s_replicas_of(r) > 0) {
            r->repl_lost = 1; /* ordered by the cron, after the re-plan's push */
            r->pull_msg_stale = 1; /* a source it names is gone */
            log_info("run %s: checkpoint %" PRId64 ": %s lost, new copies to order", r->id,
                     r->checkpoint_step, w->id);
        }
    }
}

/* Whether a confirmed copy lists exactly the files (names and digests) the shard has. */
static int s_same_files(const json_t *files, const Shoal__CheckpointShardReport *cs)
{
    if (json_array_size(files) != cs->n_files)
        return 0;
    for (size_t i = 0; i < cs->n_files; i++) {
        int found = 0;
        for (size_t j = 0; j < json_array_size(files) && !found; j++) {
            const json_t *f = json_array_get(files, j);
            const char *name = json_string_value(json_object_get(f, "name"));
            const char *sha = json_string_value(json_object_get(f, "sha256"));
            found = name && sha && strcmp(name, cs->files[i]->name) == 0 &&
                    strcmp(sha, cs->files[i]->sha256) == 0;
        }
        if (!found)
            return 0;
    }
    return 1;
}

/* The committed manifest a shard report (held or corrupt) of run r is about: stored under
 * key[cap], and its shard written by cs->replica_of into *sh (NULL when none). NULL, answered
 * with an Error, when r has no committed checkpoint of that step. */
static json_t *s_report_manifest(coord_t *c, const wire_route_t *route, const Shoal__Envelope *env,
                                 const coord_run_t *r, const coord_run_t *mine, char *key,
                                 size_t cap, json_t **sh)
{
    const Shoal__CheckpointShardReport *cs = env->ckpt_shard;
    char *val = NULL;
    size_t len = 0;
    json_t *m = NULL;
    *sh = NULL;
    snprintf(key, cap, "c/%s/%020" PRId64, r->id, cs->step);
    if (store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len) != SHOAL_OK ||
        !(m = json_loadb(val, len, 0, NULL))) {
        free(val);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_NOT_FOUND, env, mine,
                          "run %s has no committed checkpoint of step %" PRId64, r->id, cs->step);
        return NULL;
    }
    free(val);
    json_t *shards = json_object_get(m, CTL_F_SHARDS);
    for (size_t i = 0; i < json_array_size(shards) && !*sh; i++) {
        const char *wr = json_string_value(json_object_get(json_array_get(shards, i), "worker"));
        if (wr && strcmp(wr, cs->replica_of) == 0)
            *sh = json_array_get(shards, i);
    }
    return m;
}

void coord_on_shard_held(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                         coord_run_t *unused, const Shoal__Envelope *env)
{
    (void)unused;
    const Shoal__CheckpointShardReport *cs = env->ckpt_shard;
    coord_run_t *r = coord_find_run(c, env->run_id);
    coord_run_t *mine = w->run[0] ? coord_find_run(c, w->run) : NULL;
    char key[160];
    if (!r || !cs->replica_of[0] || !cs->path[0]) {
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, mine,
                          "shard_held: unknown run '%.64s' or no replica_of/path", env->run_id);
        return;
    }
    json_t *sh, *m = s_report_manifest(c, route, env, r, mine, key, sizeof key, &sh);
    if (!m)
        return;
    if (!sh || !s_same_files(json_object_get(sh, "files"), cs)) {
        log_warn("run %s: checkpoint %" PRId64 ": copy of %s's shard from %s refused: %s", r->id,
                 cs->step, cs->replica_of, w->id, sh ? "its files differ" : "no such shard");
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, mine,
                          "checkpoint %" PRId64 " has no shard of %.64s with these files", cs->step,
                          cs->replica_of);
        json_decref(m);
        return;
    }
    json_t *holders = json_object_get(sh, CTL_F_HOLDERS);
    if (!json_is_array(holders)) {
        holders = json_array();
        json_object_set_new(sh, CTL_F_HOLDERS, holders);
    }
    size_t at = json_array_size(holders);
    for (size_t i = 0; i < json_array_size(holders); i++) {
        const char *hw = json_string_value(json_object_get(json_array_get(holders, i), "worker"));
        if (hw && strcmp(hw, w->id) == 0)
            at = i;
    }
    json_t *h = json_pack("{s:s, s:s}", "worker", w->id, CTL_F_PATH, cs->path);
    if (at < json_array_size(holders))
        json_array_set_new(holders, at, h);
    else
        json_array_append_new(holders, h);
    log_info("run %s: checkpoint %" PRId64 ": %s holds a copy of %s's shard (%zu holders)", r->id,
             cs->step, w->id, cs->replica_of, json_array_size(holders));
    struct coord_repl_order *o = s_order_find(c, r->id, cs->step, w->id, cs->replica_of);
    if (o)
        s_order_drop(c, o); /* confirmed: nothing to send again */
    coord_put_json(c, STORE_CF_MANIFESTS, key, m); /* stolen */
    s_holders_forget(r);
    if (coord_txn_commit(c) != SHOAL_OK) {
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, env, mine,
                          "holder not persisted");
        return;
    }
    coord_reply_ack(c, route, env, w, mine);
}

/* Sends order o again when its shard still lacks that copy: returns whether it is still
 * followed (0: drop it). */
static int s_order_resend(coord_t *c, const struct coord_repl_order *o)
{
    coord_run_t *r = coord_find_run(c, o->run);
    coord_worker_t *to = coord_worker_by_id(c, o->to);
    if (!r || coord_run_is_terminal(r->state) || o->step < r->checkpoint_step || !s_can_hold(to))
        return 0; /* a newer checkpoint, or the target is gone (its loss orders new copies) */
    json_t *m = s_manifest_at(c, r->id, o->step);
    if (!m)
        return 0;
    const json_t *shards = json_object_get(m, CTL_F_SHARDS);
    int idx = -1;
    for (size_t i = 0; i < json_array_size(shards) && idx < 0; i++) {
        const char *wr = json_string_value(json_object_get(json_array_get(shards, i), "worker"));
        if (wr && strcmp(wr, o->writer) == 0)
            idx = (int)i;
    }
    int keep = 0;
    Shoal__ShardSource src[S_MAX_SOURCES], *ptrs[S_MAX_SOURCES];
    if (idx >= 0 && !s_is_holder(json_array_get(shards, (size_t)idx), o->to)) {
        if (s_live_sources(c, json_array_get(shards, (size_t)idx), src, ptrs, S_MAX_SOURCES) == 0) {
            /* its holders died: no order can be built (re-sent every cron, it flooded the log
             * at 40 lines/s); a copy already under way still confirms, the repair scan and a
             * holder's return order again */
            log_warn("run %s: checkpoint %" PRId64 ": no live holder of %s's shard for %s to copy "
                     "from: order dropped",
                     r->id, o->step, o->writer, o->to);
        } else if (o->sent > c->cfg.replicate_retries) {
            log_warn("run %s: checkpoint %" PRId64 ": %s never confirmed its copy of %s's shard "
                     "(%d orders): given up",
                     r->id, o->step, o->to, o->writer, o->sent);
        } else {
            log_warn("run %s: checkpoint %" PRId64 ": %s has not confirmed its copy of %s's shard: "
                     "order sent again (%d of %d)",
                     r->id, o->step, o->to, o->writer, o->sent + 1, c->cfg.replicate_retries + 1);
            s_push_replicate(c, r, to, o->step, shards, &idx, 1); /* s_order_sent: o->sent++ */
            keep = 1;
        }
    }
    json_decref(m);
    return keep;
}

/* Copies for the shards of each active run's newest checkpoint that are short of live holders.
 * after_loss: only the runs a loss marked (coord_replicas_on_loss), once the cron has pushed the
 * plan that replaces the lost worker (the workers then hold the copies until they train again);
 * else the periodic repair scan, which leaves alone a shard with an order in flight. */
static void s_order_short(coord_t *c, int after_loss)
{
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        const int replicas = s_replicas_of(r);
        json_t *m = NULL;
        if (after_loss) {
            if (!r->repl_lost)
                continue;
            r->repl_lost = 0;
        }
        if (coord_run_is_terminal(r->state) || r->checkpoint_step <= 0 || replicas <= 0 ||
            !(m = s_manifest_at(c, r->id, r->checkpoint_step)))
            continue;
        const int n = s_order_copies(c, r, r->checkpoint_step, json_object_get(m, CTL_F_SHARDS),
                                     replicas + 1, !after_loss);
        if (n)
            log_info("run %s: checkpoint %" PRId64 ": %s, %d new cop%s ordered", r->id,
                     r->checkpoint_step, after_loss ? "after a loss" : "short of holders", n,
                     n == 1 ? "y" : "ies");
        json_decref(m);
    }
}

void coord_replicas_cron(coord_t *c, int64_t now_mono_ms)
{
    s_order_short(c, 1);
    if (c->cfg.replica_repair_ms > 0) {
        if (!c->repl_repair_at_ms)
            c->repl_repair_at_ms = now_mono_ms + c->cfg.replica_repair_ms;
        else if (now_mono_ms >= c->repl_repair_at_ms) {
            c->repl_repair_at_ms = now_mono_ms + c->cfg.replica_repair_ms;
            s_order_short(c, 0);
        }
    }
    for (int i = 0; i < c->n_repl_orders;) {
        if (now_mono_ms < c->repl_orders[i].resend_ms) {
            i++;
            continue;
        }
        /* a re-send finds this order (s_order_sent: sent + 1, a later time) and adds none */
        const struct coord_repl_order o = c->repl_orders[i];
        if (s_order_resend(c, &o))
            i++;
        else
            s_order_drop(c, &c->repl_orders[i]); /* slot i now holds another: look at it */
    }
}

void coord_on_shard_corrupt(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                            coord_run_t *unused, const Shoal__Envelope *env)
{
    (void)unused;
    const Shoal__CheckpointShardReport *cs = env->ckpt_shard;
    coord_run_t *r = coord_find_run(c, env->run_id);
    coord_run_t *mine = w->run[0] ? coord_find_run(c, w->run) : NULL;
    char key[160];
    if (!r || !cs->replica_of[0] || !cs->holder[0]) {
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, mine,
                          "shard_corrupt: unknown run '%.64s' or no replica_of/holder",
                          env->run_id);
        return;
    }
    json_t *sh, *m = s_report_manifest(c, route, env, r, mine, key, sizeof key, &sh);
    if (!m)
        return;
    json_t *shards = json_object_get(m, CTL_F_SHARDS);
    json_t *holders = json_object_get(sh, CTL_F_HOLDERS);
    size_t at = json_array_size(holders);
    for (size_t i = 0; i < json_array_size(holders); i++) {
        const char *hw = json_string_value(json_object_get(json_array_get(holders, i), "worker"));
        if (hw && strcmp(hw, cs->holder) == 0)
            at = i;
    }
    if (at < json_array_size(holders)) {
        /* the reporter checked the copy against the committed digests: that holder's copy
         * is no replica any more (a later verified copy joins again through SHARD_HELD) */
        json_array_remove(holders, at);
        log_warn("run %s: checkpoint %" PRId64 ": %s's copy of %s's shard is corrupt (found by "
                 "%s): no longer a holder (%zu left)",
                 r->id, cs->step, cs->holder, cs->replica_of, w->id, json_array_size(holders));
        coord_ledger(c, r->id, "shard_corrupt",
                     json_pack("{s:I, s:s, s:s, s:s, s:s}", "step", (json_int_t)cs->step, "writer",
                               cs->replica_of, "holder", cs->holder, "path", cs->path,
                               "reported_by", w->id));
        const int replicas = s_replicas_of(r);
        if (replicas > 0 && cs->step >= r->checkpoint_step)
            (void)s_order_copies(c, r, cs->step, shards, replicas + 1, 0);
        coord_put_json(c, STORE_CF_MANIFESTS, key, m); /* stolen */
        m = NULL;
        s_holders_forget(r);
        if (coord_txn_commit(c) != SHOAL_OK) {
            coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, env, mine,
                              "holder change not persisted");
            return;
        }
    } else {
        log_info("run %s: checkpoint %" PRId64 ": %s reports a corrupt copy of %s's shard on %s, "
                 "which is no holder of it",
                 r->id, cs->step, w->id, cs->replica_of, cs->holder);
    }
    json_decref(m);
    coord_reply_ack(c, route, env, w, mine);
}

/* ---- which checkpoint a rollback can restore ------------------------------------------- */

typedef struct {
    coord_t *c;
    int64_t upto, best;
    char path[PLAN_PATH_MAX];
} s_restorable_t;

/* Whether every shard of a manifest has a live holder (its writer or a confirmed copy). */
static int s_all_held(coord_t *c, const json_t *m)
{
    const json_t *shards = json_object_get(m, CTL_F_SHARDS);
    if (!json_array_size(shards))
        return 0;
    for (size_t i = 0; i < json_array_size(shards); i++) {
        const json_t *holders = json_object_get(json_array_get(shards, i), CTL_F_HOLDERS);
        int live = 0;
        for (size_t h = 0; h < json_array_size(holders) && !live; h++) {
            const char *id =
                json_string_value(json_object_get(json_array_get(holders, h), "worker"));
            live = id && s_can_hold(coord_worker_by_id(c, id));
        }
        if (!live)
            return 0;
    }
    return 1;
}

static int s_restorable_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)k;
    (void)kl;
    s_restorable_t *x = ctx;
    json_t *m = json_loadb(v, vl, 0, NULL);
    const int64_t step = (int64_t)json_integer_value(json_object_get(m, "step"));
    const char *path = json_string_value(json_object_get(m, CTL_F_PATH));
    if (m && path && step > x->best && step <= x->upto && s_all_held(x->c, m)) {
        x->best = step;
        snprintf(x->path, sizeof x->path, "%s", path);
    }
    json_decref(m);
    return 0;
}

int64_t coord_replicas_restorable(coord_t *c, const coord_run_t *r, char *path, size_t cap)
{
    s_restorable_t x = {c, r->checkpoint_step, -1, ""};
    char prefix[128];
    snprintf(prefix, sizeof prefix, "c/%s/", r->id);
    (void)store_scan(c->st, STORE_CF_MANIFESTS, prefix, NULL, s_restorable_one, &x);
    if (x.best <= 0 || x.best == r->checkpoint_step) {
        snprintf(path, cap, "%s", r->checkpoint_path);
        return r->checkpoint_step;
    }
    log_warn("run %s: checkpoint %" PRId64 " has a shard no live worker holds: restoring %" PRId64
             " instead",
             r->id, r->checkpoint_step, x.best);
    snprintf(path, cap, "%s", x.path);
    return x.best;
}

/* ---- sources of a plan that restores from a checkpoint ---------------------------------- */

struct coord_shard_src {
    json_t *manifest;
    size_t n;
    Shoal__FileDigest **files, ***file_ptrs;
    Shoal__ShardSource **srcs, ***src_ptrs;
};

void coord_replicas_attach(coord_t *c, const coord_run_t *r, int64_t step, Shoal__Plan *plan,
                           coord_shard_src_t **keep)
{
    *keep = NULL;
    if (!plan->n_ckpt_shards)
        return;
    char key[160], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, step);
    coord_shard_src_t *k = calloc(1, sizeof *k);
    if (!k || store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len) != SHOAL_OK ||
        !(k->manifest = json_loadb(val, len, 0, NULL))) {
        log_warn("run %s: checkpoint %" PRId64 ": no holders listed in the plan", r->id, step);
        free(val);
        coord_replicas_detach(&k);
        return;
    }
    free(val);
    *keep = k;
    k->n = plan->n_ckpt_shards;
    k->files = calloc(k->n, sizeof *k->files);
    k->file_ptrs = calloc(k->n, sizeof *k->file_ptrs);
    k->srcs = calloc(k->n, sizeof *k->srcs);
    k->src_ptrs = calloc(k->n, sizeof *k->src_ptrs);
    if (!k->files || !k->file_ptrs || !k->srcs || !k->src_ptrs)
        return;
    const json_t *shards = json_object_get(k->manifest, CTL_F_SHARDS);
    for (size_t i = 0; i < k->n; i++) {
        Shoal__CheckpointShard *ps = plan->ckpt_shards[i];
        const json_t *sh = NULL;
        for (size_t j = 0; j < json_array_size(shards) && !sh; j++) {
            const char *p = json_string_value(json_object_get(json_array_get(shards, j), "path"));
            if (p && strcmp(p, ps->path) == 0)
                sh = json_array_get(shards, j);
        }
        const int nf =
            sh ? s_files_pb(json_object_get(sh, "files"), &k->files[i], &k->file_ptrs[i]) : -1;
        if (nf <= 0)
            continue;
        ps->files = k->file_ptrs[i];
        ps->n_files = (size_t)nf;
        k->srcs[i] = calloc(S_MAX_SOURCES, sizeof *k->srcs[i]);
        k->src_ptrs[i] = calloc(S_MAX_SOURCES, sizeof *k->src_ptrs[i]);
        if (!k->srcs[i] || !k->src_ptrs[i])
            continue;
        const size_t ns = s_live_sources(c, sh, k->srcs[i], k->src_ptrs[i], S_MAX_SOURCES);
        ps->sources = k->src_ptrs[i];
        ps->n_sources = ns;
    }
}

void coord_replicas_detach(coord_shard_src_t **kp)
{
    coord_shard_src_t *k = kp ? *kp : NULL;
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        if (k->files)
            free(k->files[i]);
        if (k->file_ptrs)
            free(k->file_ptrs[i]);
        if (k->srcs)
            free(k->srcs[i]);
        if (k->src_ptrs)
            free(k->src_ptrs[i]);
    }
    free(k->files);
    free(k->file_ptrs);
    free(k->srcs);
    free(k->src_ptrs);
    json_decref(k->manifest);
    free(k);
    *kp = NULL;
}
