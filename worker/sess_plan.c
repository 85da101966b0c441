/* sess_plan.c: an Assignment envelope -> the worker's plan, checked field by field (the reasons
 * are what the session logs when it drops an assignment). */
#include "sess_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

void sess_plan_destroy(sess_plan_t **pp)
{
    sess_plan_t *p = *pp;
    if (!p)
        return;
    if (p->endpoints)
        for (uint32_t i = 0; i < p->nranks; i++)
            free(p->endpoints[i]);
    free(p->endpoints);
    if (p->public_keys)
        for (uint32_t i = 0; i < p->nranks; i++)
            free(p->public_keys[i]);
    free(p->public_keys);
    if (p->ckpt_shards)
        for (uint32_t i = 0; i < p->n_ckpt_shards; i++)
            free(p->ckpt_shards[i]);
    free(p->ckpt_shards);
    free(p->ckpt_shard_info);
    free(p->spec_yaml);
    free(p);
    *pp = NULL;
}

/* Why the assignment in `env` is unusable for worker `self`; NULL when it is usable. */
static const char *s_refusal(const Shoal__Envelope *env, const char *self)
{
    if (env->body_case != SHOAL__ENVELOPE__BODY_ASSIGNMENT || !env->assignment)
        return "not an assignment";
    const Shoal__Assignment *a = env->assignment;
    const Shoal__Plan *p = a->plan;
    if (!p || !p->topology)
        return "no plan or topology";
    if (!p->run_id[0] || strcmp(p->run_id, env->run_id) != 0)
        return "plan run id differs from the envelope's";
    if (p->n_peers == 0 || p->n_peers > COMM_MAX_RANKS || a->rank >= p->n_peers)
        return "rank outside the plan's peers";
    if (p->start_step < 1)
        return "start_step < 1";
    if (p->source > SHOAL__STATE_SOURCE__STATE_SOURCE_PEER)
        return "unknown state source";
    if (p->source == SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT &&
        (!p->checkpoint || p->checkpoint->step != p->start_step - 1))
        return "checkpoint source without the checkpoint of start_step - 1";
    if (p->source == SHOAL__STATE_SOURCE__STATE_SOURCE_PEER && p->source_rank >= p->n_peers)
        return "source_rank outside the plan's peers";
    if (!a->spec_yaml[0])
        return "empty run spec";
    if ((uint64_t)p->topology->dp * p->topology->pp * p->topology->ep != p->n_peers)
        return "topology dp*pp*ep differs from the number of peers";
    for (size_t i = 0; i < p->n_peers; i++)
        if (!p->peers[i] || p->peers[i]->rank != i || !p->peers[i]->data_endpoint[0])
            return "peers not ordered by rank or without a data endpoint";
    if (strcmp(p->peers[a->rank]->worker_id, self ? self : "") != 0)
        return "the assignment's rank belongs to another worker";
    if (!a->cell || a->cell->stage >= p->topology->pp || a->cell->ep_rank >= p->topology->ep ||
        a->cell->replica >= p->topology->dp)
        return "the assignment's cell is outside the topology";
    if (p->n_stages != p->topology->pp)
        return "the plan does not list a layer range for every stage";
    for (size_t i = 0; i < p->n_stages; i++)
        if (!p->stages[i] || p->stages[i]->stage != i || p->stages[i]->n_layers == 0)
            return "stages not ordered or with no layers";
    for (size_t i = 0; i < p->n_experts; i++) {
        if (!p->experts[i] || p->experts[i]->ep_rank >= p->topology->ep)
            return "an expert shard of an ep rank outside the topology";
        for (size_t k = 1; k < p->experts[i]->n_experts; k++)
            if (p->experts[i]->experts[k] != p->experts[i]->experts[k - 1] + 1)
                return "an ep rank's experts are not one contiguous range";
    }
    return NULL;
}

shoal_err_t sess_plan_from_assignment(const Shoal__Envelope *env, const char *self,
                                      sess_plan_t **plan, const char **why)
{
    *plan = NULL;
    *why = s_refusal(env, self);
    if (*why)
        return shoal_fail(SHOAL_ERR_INVALID, "assignment refused: %s", *why);
    const Shoal__Assignment *a = env->assignment;
    const Shoal__Plan *p = a->plan;
    sess_plan_t *pl = calloc(1, sizeof *pl);
    if (!pl)
        goto fail_nomem;
    snprintf(pl->run_id, sizeof pl->run_id, "%s", p->run_id);
    snprintf(pl->run_name, sizeof pl->run_name, "%s", a->run_name);
    pl->generation = p->generation;
    pl->dp = p->topology->dp;
    pl->pp = p->topology->pp;
    pl->ep = p->topology->ep;
    pl->start_step = p->start_step;
    pl->source = (sess_source_t)p->source;
    if (p->checkpoint) {
        pl->ckpt_step = p->checkpoint->step;
        snprintf(pl->ckpt_path, sizeof pl->ckpt_path, "%s", p->checkpoint->path);
    }
    pl->source_rank = p->source_rank;
    pl->rank = a->rank;
    pl->nranks = (uint32_t)p->n_peers;
    pl->replica = a->cell->replica;
    pl->stage = a->cell->stage;
    pl->ep_rank = a->cell->ep_rank;
    const Shoal__StageLayers *st = p->stages[pl->stage];
    pl->first_layer = st->first_layer;
    pl->n_layers = st->n_layers;
    pl->has_embedding = st->has_embedding;
    pl->has_head = st->has_head;
    for (size_t i = 0; i < p->n_experts; i++)
        if (p->experts[i]->ep_rank == pl->ep_rank && p->experts[i]->n_experts > 0) {
            pl->expert_first = p->experts[i]->experts[0];
            pl->expert_count = (uint32_t)p->experts[i]->n_experts;
        }
    pl->lease = a->lease;
    pl->spec_yaml = strdup(a->spec_yaml);
    pl->endpoints = calloc(pl->nranks, sizeof(char *));
    pl->public_keys = calloc(pl->nranks, sizeof(char *));
    if (!pl->spec_yaml || !pl->endpoints || !pl->public_keys)
        goto fail_nomem;
    for (uint32_t i = 0; i < pl->nranks; i++)
        if (!(pl->endpoints[i] = strdup(p->peers[i]->data_endpoint)) ||
            !(pl->public_keys[i] = strdup(p->peers[i]->public_key)))
            goto fail_nomem;
    /* the committed checkpoint's shard dirs (wire-bounded paths; cells are the writer plan's) */
    if (p->source == SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT && p->n_ckpt_shards) {
        if (!(pl->ckpt_shards = calloc(p->n_ckpt_shards, sizeof(char *))))
            goto fail_nomem;
        for (size_t i = 0; i < p->n_ckpt_shards; i++, pl->n_ckpt_shards++)
            if (!p->ckpt_shards[i] ||
                !(pl->ckpt_shards[i] = strdup(p->ckpt_shards[i]->path)))
                goto fail_nomem;
        if (!(pl->ckpt_shard_info = calloc(p->n_ckpt_shards, sizeof *pl->ckpt_shard_info)))
            goto fail_nomem;
        for (size_t i = 0; i < p->n_ckpt_shards; i++) {
            const Shoal__CheckpointShard *k = p->ckpt_shards[i];
            if (k->n_files && sess_shard_from_pb(k->cell, "", k->files, k->n_files, k->sources,
                                                 k->n_sources, &pl->ckpt_shard_info[i]) != 0)
                memset(&pl->ckpt_shard_info[i], 0, sizeof pl->ckpt_shard_info[i]);
        }
    }
    for (size_t i = 0; p->source == SHOAL__STATE_SOURCE__STATE_SOURCE_PEER && i < p->n_handovers;
         i++)
        if (p->handovers[i] && p->handovers[i]->to_rank == pl->rank) {
            snprintf(pl->handover_from, sizeof pl->handover_from, "%s",
                     p->handovers[i]->from_endpoint);
            snprintf(pl->handover_from_key, sizeof pl->handover_from_key, "%s",
                     p->handovers[i]->from_public_key);
        }
    *plan = pl;
    return SHOAL_OK;
fail_nomem:
    sess_plan_destroy(&pl);
    *why = "out of memory";
    return shoal_fail(SHOAL_ERR_NOMEM, "out of memory converting an assignment");
}

int sess_shard_from_pb(const Shoal__Cell *cell, const char *writer, Shoal__FileDigest *const *f,
                       size_t n_files, Shoal__ShardSource *const *src, size_t n_src,
                       sess_shard_t *out)
{
    memset(out, 0, sizeof *out);
    if (!cell || n_files > CKPT_MANIFEST_MAX_FILES + 1 || strlen(writer) >= sizeof out->writer)
        return -1;
    out->replica = cell->replica;
    out->stage = cell->stage;
    out->ep_rank = cell->ep_rank;
    snprintf(out->writer, sizeof out->writer, "%s", writer);
    for (size_t i = 0; i < n_files; i++) {
        ckpt_file_t *o = &out->want.files[i];
        if (strlen(f[i]->name) >= sizeof o->name || strlen(f[i]->sha256) != 64)
            return -1;
        snprintf(o->name, sizeof o->name, "%s", f[i]->name);
        snprintf(o->sha256, sizeof o->sha256, "%s", f[i]->sha256);
        o->size = f[i]->size;
    }
    out->want.n_files = (int)n_files;
    for (size_t i = 0; i < n_src && out->n_src < CKPT_REPL_MAX_SOURCES; i++) {
        ckpt_source_t *o = &out->src[out->n_src];
        if (strlen(src[i]->worker_id) >= sizeof o->worker ||
            strlen(src[i]->endpoint) >= sizeof o->endpoint ||
            strlen(src[i]->path) >= sizeof o->path)
            return -1;
        snprintf(o->worker, sizeof o->worker, "%s", src[i]->worker_id);
        snprintf(o->endpoint, sizeof o->endpoint, "%s", src[i]->endpoint);
        snprintf(o->path, sizeof o->path, "%s", src[i]->path);
        snprintf(o->public_key, sizeof o->public_key, "%s", src[i]->public_key);
        out->n_src++;
    }
    return 0;
}
