/* coord_manifest.c: checkpoints: each worker's shard report is stored as pending; when every
 * cell of the plan has reported a step, that step's manifest is committed and older pending
 * reports are pruned. */
#include "coord_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "numparse.h"

typedef struct {
    json_t *shards;
} s_pending_ctx_t;

static int s_pending_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)k;
    (void)kl;
    s_pending_ctx_t *p = ctx;
    json_t *j = json_loadb(v, vl, 0, NULL);
    if (j)
        json_array_append_new(p->shards, j);
    return 0;
}

typedef struct {
    coord_t *c;
    int64_t upto;
    size_t prefix_len;
} s_prune_ctx_t;

static int s_prune_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)v;
    (void)vl;
    s_prune_ctx_t *p = ctx;
    if (kl < p->prefix_len + 20)
        return 0;
    char step[21];
    memcpy(step, k + p->prefix_len, 20);
    step[20] = 0;
    int64_t n;
    if (numparse_i64(step, 0, INT64_MAX, &n) == SHOAL_OK && n <= p->upto) {
        char *key = strndup(k, kl);
        if (key)
            store_batch_delete(coord_txn(p->c), STORE_CF_MANIFESTS, key);
        free(key);
    }
    return 0;
}

/* What the burst deferred goes to disk now: the scans below read the store. */
static shoal_err_t s_commit_now(coord_t *c)
{
    c->defer_commit = 0;
    return coord_txn_commit(c);
}

typedef struct {
    coord_run_t *r;
} s_count_ctx_t;

static int s_count_one(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)k;
    (void)kl;
    coord_run_t *r = ((s_count_ctx_t *)ctx)->r;
    json_t *j = json_loadb(v, vl, 0, NULL);
    const char *wid = json_string_value(json_object_get(j, "worker"));
    const plan_peer_t *p = wid ? coord_plan_member(r, wid) : NULL;
    if (p && !r->ckpt_seen[p - r->plan.peers]) {
        r->ckpt_seen[p - r->plan.peers] = 1;
        r->ckpt_have++;
    }
    json_decref(j);
    return 0;
}

/* Counts the members of r's plan with a pending shard of `step` (one scan of its reports). */
static shoal_err_t s_count_rebuild(coord_t *c, coord_run_t *r, int64_t step, const char *prefix)
{
    uint8_t *seen = calloc(r->plan.n_peers + 1, 1);
    if (!seen)
        return shoal_fail(SHOAL_ERR_NOMEM, "checkpoint report count of %u cells", r->plan.n_peers);
    free(r->ckpt_seen);
    r->ckpt_seen = seen;
    r->ckpt_seen_n = r->plan.n_peers;
    r->ckpt_have = 0;
    r->ckpt_count_step = step;
    r->ckpt_count_gen = r->generation;
    s_count_ctx_t cc = {r};
    return store_scan(c->st, STORE_CF_MANIFESTS, prefix, NULL, s_count_one, &cc);
}

void coord_on_ckpt_shard(coord_t *c, const wire_route_t *route, coord_worker_t *w, coord_run_t *r,
                         const Shoal__Envelope *env)
{
    const Shoal__CheckpointShardReport *cs = env->ckpt_shard;
    int rank = coord_rank_of(r, w);
    if (rank >= 0 && cs->step >= 1 && cs->step <= r->checkpoint_step) {
        /* a retry of a report that is already part of a commit (or superseded by a later
         * checkpoint): nothing to do, and the sender may stop retrying */
        log_debug("run %s: shard of step %" PRId64 " from %s after checkpoint %" PRId64
                  ": already settled",
                  r->id, cs->step, w->id, r->checkpoint_step);
        coord_reply_ack(c, route, env, w, r);
        return;
    }
    if (rank < 0 || cs->step < 1 || cs->step > r->lease) {
        c->dropped++;
        log_warn("dropped ckpt_shard from %s: step %" PRId64 " not expected (lease %" PRId64
                 ", last checkpoint %" PRId64 ")",
                 w->id, cs->step, r->lease, r->checkpoint_step);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, r,
                          "checkpoint step %" PRId64 " not expected", cs->step);
        return;
    }
    json_t *files = json_array();
    uint64_t bytes = 0;
    for (size_t i = 0; i < cs->n_files; i++) {
        json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", cs->files[i]->name,
                                               "size", (json_int_t)cs->files[i]->size, "sha256",
                                               cs->files[i]->sha256));
        bytes += cs->files[i]->size;
    }
    const plan_peer_t *me = &r->plan.peers[rank];
    json_t *shard = json_pack("{s:s, s:s, s:i, s:{s:i, s:i, s:i}, s:s, s:o, s:I}", "worker", w->id,
                              "holder", cs->holder[0] ? cs->holder : w->id, "rank", rank, "cell",
                              "replica", (int)me->cell.replica, "stage", (int)me->cell.stage,
                              "ep_rank", (int)me->cell.ep_rank, "path", cs->path, "files", files,
                              "generation", (json_int_t)r->generation);
    char key[160];
    snprintf(key, sizeof key, "p/%s/%020" PRId64 "/%s", r->id, cs->step, w->id);
    coord_put_json(c, STORE_CF_MANIFESTS, key, shard);
    /* complete when every cell of the current plan has a shard for this step: counted here,
     * the store scanned only to rebuild the count (a new step or plan, a restart) and once at
     * completion (a rescan of every pending shard per report was O(cells^2) a report) */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "p/%s/%020" PRId64 "/", r->id, cs->step);
    const uint32_t me_idx = (uint32_t)(me - r->plan.peers);
    if (r->ckpt_count_step != cs->step || r->ckpt_count_gen != r->generation ||
        r->ckpt_seen_n != r->plan.n_peers) {
        if (s_commit_now(c) != SHOAL_OK || s_count_rebuild(c, r, cs->step, prefix) != SHOAL_OK) {
            coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, env, r,
                              "shard report not persisted or counted");
            return;
        }
    } else if (!r->ckpt_seen[me_idx]) {
        r->ckpt_seen[me_idx] = 1;
        r->ckpt_have++;
    }
    const uint32_t have = r->ckpt_have;
    s_pending_ctx_t pc = {NULL};
    if (have == r->plan.n_peers) {
        if (s_commit_now(c) != SHOAL_OK) {
            coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, env, r,
                              "shard report not persisted");
            return;
        }
        pc.shards = json_array();
        (void)store_scan(c->st, STORE_CF_MANIFESTS, prefix, NULL, s_pending_one, &pc);
        json_t *manifest =
            json_pack("{s:s, s:I, s:I, s:s, s:O, s:I}", "run", r->id, "step", (json_int_t)cs->step,
                      "generation", (json_int_t)r->generation, "path", cs->path, "shards",
                      pc.shards, "committed_ms", (json_int_t)clock_wall_ms());
        snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, cs->step);
        coord_replicas_on_commit(c, r, cs->step, manifest);
        coord_put_json(c, STORE_CF_MANIFESTS, key, manifest);
        char pprefix[128];
        snprintf(pprefix, sizeof pprefix, "p/%s/", r->id);
        s_prune_ctx_t pr = {c, cs->step, strlen(pprefix)};
        (void)store_scan(c->st, STORE_CF_MANIFESTS, pprefix, NULL, s_prune_one, &pr);
        r->checkpoint_step = cs->step;
        snprintf(r->checkpoint_path, sizeof r->checkpoint_path, "%s", cs->path);
        log_info("run %s: checkpoint of step %" PRId64 " committed (%u shards)", r->id, cs->step,
                 have);
        coord_ledger(c, r->id, "checkpoint",
                     json_pack("{s:I, s:I, s:i, s:s}", "step", (json_int_t)cs->step, "generation",
                               (json_int_t)r->generation, "shards", (int)have, "path", cs->path));
        coord_put_run(c, r);
        coord_run_check_done(c, r);
        coord_txn_commit(c);
    } else {
        log_debug("run %s: shard of step %" PRId64 " from %s (%u/%u) %" PRIu64 " bytes", r->id,
                  cs->step, w->id, have, r->plan.n_peers, bytes);
    }
    json_decref(pc.shards);
    coord_reply_ack(c, route, env, w, r);
}
