/* plan.c: plan layout (even stages, expert shards), the data-parallel planner, plan lookups and
 * the plan JSON (with its derived locality report). The planner proper is plan_place.c. */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"

const char *plan_source_name(plan_source_t s)
{
    switch (s) {
    case PLAN_SOURCE_INIT:
        return "init";
    case PLAN_SOURCE_CHECKPOINT:
        return "checkpoint";
    case PLAN_SOURCE_PEER:
        return "peer";
    }
    return "unknown";
}

void plan_fini(plan_t *p)
{
    free(p->stages);
    free(p->experts);
    free(p->peers);
    free(p->spares);
    free(p->ckpt_shards);
    free(p->handovers);
    memset(p, 0, sizeof *p);
}

shoal_err_t plan_layout(plan_t *p, uint32_t dp, uint32_t pp, uint32_t ep, uint32_t n_layers,
                        uint32_t n_experts)
{
    if (dp == 0 || pp == 0 || ep == 0)
        return shoal_fail(SHOAL_ERR_INVALID, "plan: dp, pp and ep must be >= 1");
    if (pp > n_layers)
        return shoal_fail(SHOAL_ERR_INVALID, "plan: pp %u exceeds the %u layers", pp, n_layers);
    if (n_experts && n_experts % ep)
        return shoal_fail(SHOAL_ERR_INVALID, "plan: ep %u does not divide %u experts", ep,
                          n_experts);
    free(p->stages);
    free(p->experts);
    p->stages = calloc(pp, sizeof *p->stages);
    p->experts = n_experts ? calloc(ep, sizeof *p->experts) : NULL;
    if (!p->stages || (n_experts && !p->experts))
        return shoal_fail(SHOAL_ERR_NOMEM, "plan layout");
    p->dp = dp;
    p->pp = pp;
    p->ep = ep;
    uint32_t first = 0;
    for (uint32_t s = 0; s < pp; s++) {
        uint32_t n = n_layers / pp + (s < n_layers % pp ? 1 : 0);
        p->stages[s] = (plan_stage_t){first, n, s == 0, s == pp - 1};
        first += n;
    }
    p->n_experts = n_experts ? ep : 0;
    for (uint32_t e = 0; n_experts && e < ep; e++)
        p->experts[e] = (plan_experts_t){e, e * (n_experts / ep), n_experts / ep};
    return SHOAL_OK;
}

shoal_err_t plan_build_dp(plan_t *p, const char *run_id, uint64_t generation,
                          const plan_worker_t *workers, uint32_t n, uint32_t n_layers,
                          uint32_t n_experts)
{
    plan_fini(p);
    if (n == 0)
        return shoal_fail(SHOAL_ERR_INVALID, "plan for %s: no live workers", run_id);
    shoal_err_t rc = plan_layout(p, n, 1, 1, n_layers, n_experts);
    if (rc != SHOAL_OK)
        goto fail;
    snprintf(p->run_id, sizeof p->run_id, "%s", run_id);
    p->generation = generation;
    p->peers = calloc(n, sizeof *p->peers);
    if (!p->peers) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan peers");
        goto fail;
    }
    p->n_peers = n;
    for (uint32_t i = 0; i < n; i++) {
        plan_peer_t *peer = &p->peers[i];
        snprintf(peer->worker_id, sizeof peer->worker_id, "%s", workers[i].worker_id);
        snprintf(peer->endpoint, sizeof peer->endpoint, "%s",
                 workers[i].endpoint ? workers[i].endpoint : "");
        peer->cell = (plan_cell_t){i, 0, 0};
        peer->rank = plan_rank(p, peer->cell);
    }
    return SHOAL_OK;
fail:
    plan_fini(p);
    return rc;
}

const plan_peer_t *plan_find_worker(const plan_t *p, const char *worker_id)
{
    for (uint32_t i = 0; i < p->n_peers; i++)
        if (strcmp(p->peers[i].worker_id, worker_id) == 0)
            return &p->peers[i];
    return NULL;
}

int plan_is_spare(const plan_t *p, const char *worker_id)
{
    for (uint32_t i = 0; i < p->n_spares; i++)
        if (strcmp(p->spares[i].worker_id, worker_id) == 0)
            return 1;
    return 0;
}

int plan_same_cells(const plan_t *a, const plan_t *b)
{
    if (a->dp != b->dp || a->pp != b->pp || a->ep != b->ep || a->n_peers != b->n_peers)
        return 0;
    for (uint32_t s = 0; s < a->pp; s++)
        if (a->stages[s].first_layer != b->stages[s].first_layer ||
            a->stages[s].n_layers != b->stages[s].n_layers)
            return 0;
    for (uint32_t i = 0; i < a->n_peers; i++)
        if (strcmp(a->peers[i].worker_id, b->peers[i].worker_id) != 0 ||
            a->peers[i].rank != b->peers[i].rank)
            return 0;
    return 1;
}

static json_t *s_cell_json(plan_cell_t c)
{
    return json_pack("{s:i, s:i, s:i}", CTL_F_REPLICA, (int)c.replica, CTL_F_STAGE, (int)c.stage,
                     CTL_F_EP_RANK, (int)c.ep_rank);
}

static json_t *s_site_json(json_t *o, const plan_site_t *s)
{
    json_object_set_new(o, CTL_F_HOST, json_string(s->host));
    json_object_set_new(o, CTL_F_INSTITUTION, json_string(s->institution));
    json_object_set_new(o, CTL_F_MEMORY_BYTES, json_integer((json_int_t)s->memory_bytes));
    json_object_set_new(o, CTL_F_GPU, json_boolean(s->gpu));
    return o;
}

/* Distinct hosts and institutions among the peers of one group: replica r (-1: any), stage s
 * (-1: any), and for an ep group both fixed. */
static json_t *s_group_json(const plan_t *p, const char *kind, int r, int s)
{
    int hosts = 0, insts = 0;
    for (uint32_t i = 0; i < p->n_peers; i++) {
        const plan_peer_t *q = &p->peers[i];
        if ((r >= 0 && q->cell.replica != (uint32_t)r) || (s >= 0 && q->cell.stage != (uint32_t)s))
            continue;
        int new_host = 1, new_inst = 1;
        for (uint32_t k = 0; k < i; k++) {
            const plan_peer_t *o = &p->peers[k];
            if ((r >= 0 && o->cell.replica != (uint32_t)r) ||
                (s >= 0 && o->cell.stage != (uint32_t)s))
                continue;
            new_host &= strcmp(o->site.host, q->site.host) != 0 ||
                        strcmp(o->site.institution, q->site.institution) != 0;
            new_inst &= strcmp(o->site.institution, q->site.institution) != 0;
        }
        hosts += new_host;
        insts += new_inst;
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:i}", CTL_F_KIND, kind, CTL_F_REPLICA, r, CTL_F_STAGE,
                     s, CTL_F_HOSTS, hosts, CTL_F_INSTITUTIONS, insts);
}

/* The locality report: every ep group, every replica's pipeline, every stage's dp group. */
static json_t *s_groups_json(const plan_t *p)
{
    json_t *g = json_array();
    for (uint32_t r = 0; r < p->dp; r++)
        for (uint32_t s = 0; s < p->pp; s++)
            json_array_append_new(g, s_group_json(p, "ep", (int)r, (int)s));
    for (uint32_t r = 0; r < p->dp; r++)
        json_array_append_new(g, s_group_json(p, "pipeline", (int)r, -1));
    for (uint32_t s = 0; s < p->pp; s++)
        json_array_append_new(g, s_group_json(p, "dp", -1, (int)s));
    return g;
}

json_t *plan_to_json(const plan_t *p)
{
    json_t *stages = json_array(), *experts = json_array(), *peers = json_array();
    for (uint32_t s = 0; s < p->pp && p->stages; s++)
        json_array_append_new(stages, json_pack("{s:i, s:i, s:i, s:b, s:b}", CTL_F_STAGE, (int)s,
                                                CTL_F_FIRST_LAYER, (int)p->stages[s].first_layer,
                                                CTL_F_N_LAYERS, (int)p->stages[s].n_layers,
                                                CTL_F_HAS_EMBEDDING, p->stages[s].has_embedding,
                                                CTL_F_HAS_HEAD, p->stages[s].has_head));
    for (uint32_t e = 0; e < p->n_experts; e++)
        json_array_append_new(experts, json_pack("{s:i, s:i, s:i}", CTL_F_EP_RANK,
                                                 (int)p->experts[e].ep_rank, CTL_F_FIRST,
                                                 (int)p->experts[e].first, CTL_F_COUNT,
                                                 (int)p->experts[e].count));
    for (uint32_t i = 0; i < p->n_peers; i++) {
        const plan_peer_t *q = &p->peers[i];
        json_t *o = json_pack("{s:s, s:i, s:o, s:s, s:I}", CTL_F_WORKER, q->worker_id, CTL_F_RANK,
                              (int)q->rank, CTL_F_CELL, s_cell_json(q->cell), CTL_F_DATA_ENDPOINT,
                              q->endpoint, CTL_F_MEM_EST_BYTES, (json_int_t)q->mem_est);
        json_array_append_new(peers, s_site_json(o, &q->site));
    }
    json_t *spares = json_array(), *shards = json_array();
    for (uint32_t i = 0; i < p->n_spares; i++)
        json_array_append_new(spares, s_site_json(json_pack("{s:s}", CTL_F_WORKER,
                                                            p->spares[i].worker_id),
                                                  &p->spares[i].site));
    for (uint32_t i = 0; i < p->n_ckpt_shards; i++)
        json_array_append_new(shards, json_pack("{s:o, s:s}", CTL_F_CELL,
                                                s_cell_json(p->ckpt_shards[i].cell), CTL_F_PATH,
                                                p->ckpt_shards[i].path));
    json_t *handovers = json_array();
    for (uint32_t i = 0; i < p->n_handovers; i++)
        json_array_append_new(handovers,
                              json_pack("{s:i, s:s, s:s}", CTL_F_TO_RANK,
                                        (int)p->handovers[i].to_rank, CTL_F_WORKER,
                                        p->handovers[i].from_worker, CTL_F_DATA_ENDPOINT,
                                        p->handovers[i].from_endpoint));
    return json_pack("{s:s, s:I, s:{s:i, s:i, s:i}, s:o, s:o, s:o, s:o, s:I, s:s, s:I, s:s, s:o, "
                     "s:i, s:s, s:o, s:o}",
                     CTL_F_RUN_ID, p->run_id, CTL_F_GENERATION, (json_int_t)p->generation,
                     CTL_F_TOPOLOGY, CTL_F_DP, (int)p->dp, CTL_F_PP, (int)p->pp, CTL_F_EP,
                     (int)p->ep, CTL_F_STAGES, stages, CTL_F_EXPERTS, experts, CTL_F_PEERS, peers,
                     CTL_F_SPARES, spares, CTL_F_START_STEP, (json_int_t)p->start_step,
                     CTL_F_SOURCE, plan_source_name(p->source), CTL_F_CHECKPOINT_STEP,
                     (json_int_t)p->ckpt_step, CTL_F_CHECKPOINT_PATH, p->ckpt_path,
                     CTL_F_CKPT_SHARDS, shards, CTL_F_SOURCE_RANK, (int)p->source_rank,
                     CTL_F_NOTE, p->note, CTL_F_GROUPS, s_groups_json(p), CTL_F_HANDOVERS,
                     handovers);
}

static shoal_err_t s_int(const json_t *o, const char *key, json_int_t lo, json_int_t hi,
                         json_int_t *out)
{
    const json_t *v = json_object_get(o, key);
    /* *out is written on every path (0 when missing: json_integer_value of a non-integer), so
     * no caller reads an unset value whatever the compiler knows of shoal_fail's result */
    *out = json_integer_value(v);
    if (!json_is_integer(v) || *out < lo || *out > hi)
        return shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: '%s' missing or out of range", key);
    return SHOAL_OK;
}

static shoal_err_t s_str(const json_t *o, const char *key, char *dst, size_t cap)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || strlen(v) >= cap)
        return shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: '%s' missing or too long", key);
    memcpy(dst, v, strlen(v) + 1);
    return SHOAL_OK;
}

/* The optional site of a peer or spare (plans stored before sites existed have none). */
static void s_site_from(const json_t *o, plan_site_t *s)
{
    const char *host = json_string_value(json_object_get(o, CTL_F_HOST));
    snprintf(s->host, sizeof s->host, "%s", host ? host : "");
    const char *inst = json_string_value(json_object_get(o, CTL_F_INSTITUTION));
    snprintf(s->institution, sizeof s->institution, "%s", inst ? inst : "");
    json_int_t m = json_integer_value(json_object_get(o, CTL_F_MEMORY_BYTES));
    s->memory_bytes = m > 0 ? (uint64_t)m : 0;
    s->gpu = json_is_true(json_object_get(o, CTL_F_GPU)); /* absent in older plans: a CPU */
}

/* The optional hand-overs of a plan document (absent: none); a taker outside the peers is
 * refused. */
static shoal_err_t s_handovers_from(const json_t *arr, plan_t *p, uint32_t cap)
{
    size_t nh = json_array_size(arr);
    if (nh > cap)
        return shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: too many hand-overs");
    if (nh && !(p->handovers = calloc(nh, sizeof *p->handovers)))
        return shoal_fail(SHOAL_ERR_NOMEM, "plan from JSON");
    for (size_t i = 0; i < nh; i++, p->n_handovers++) {
        const json_t *o = json_array_get(arr, i);
        plan_handover_t *h = &p->handovers[i];
        json_int_t to;
        shoal_err_t rc = s_int(o, CTL_F_TO_RANK, 0, cap, &to);
        if (rc == SHOAL_OK)
            rc = s_str(o, CTL_F_WORKER, h->from_worker, sizeof h->from_worker);
        if (rc == SHOAL_OK)
            rc = s_str(o, CTL_F_DATA_ENDPOINT, h->from_endpoint, sizeof h->from_endpoint);
        if (rc != SHOAL_OK)
            return rc;
        if ((uint32_t)to >= p->n_peers)
            return shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: hand-over to rank %d of %u peers",
                              (int)to, p->n_peers);
        h->to_rank = (uint32_t)to;
    }
    return SHOAL_OK;
}

/* The optional members of a plan document (spares, checkpoint shards, note): absent in plans
 * stored before they existed, so absent reads as none. */
static shoal_err_t s_optional_from(const json_t *j, plan_t *p, uint32_t cap)
{
    const json_t *spares = json_object_get(j, CTL_F_SPARES),
                 *shards = json_object_get(j, CTL_F_CKPT_SHARDS);
    const char *note = json_string_value(json_object_get(j, CTL_F_NOTE));
    snprintf(p->note, sizeof p->note, "%s", note ? note : "");
    size_t ns = json_array_size(spares), nk = json_array_size(shards);
    if (ns > cap || nk > cap)
        return shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: too many spares or checkpoint shards");
    p->spares = ns ? calloc(ns, sizeof *p->spares) : NULL;
    p->ckpt_shards = nk ? calloc(nk, sizeof *p->ckpt_shards) : NULL;
    if ((ns && !p->spares) || (nk && !p->ckpt_shards))
        return shoal_fail(SHOAL_ERR_NOMEM, "plan from JSON");
    for (size_t i = 0; i < ns; i++, p->n_spares++) {
        const json_t *o = json_array_get(spares, i);
        shoal_err_t rc = s_str(o, CTL_F_WORKER, p->spares[i].worker_id,
                               sizeof p->spares[i].worker_id);
        if (rc != SHOAL_OK)
            return rc;
        s_site_from(o, &p->spares[i].site);
    }
    for (size_t i = 0; i < nk; i++, p->n_ckpt_shards++) {
        const json_t *o = json_array_get(shards, i), *cell = json_object_get(o, CTL_F_CELL);
        json_int_t a, b, c;
        shoal_err_t rc = s_str(o, CTL_F_PATH, p->ckpt_shards[i].path,
                               sizeof p->ckpt_shards[i].path);
        if (rc == SHOAL_OK)
            rc = s_int(cell, CTL_F_REPLICA, 0, cap, &a);
        if (rc == SHOAL_OK)
            rc = s_int(cell, CTL_F_STAGE, 0, cap, &b);
        if (rc == SHOAL_OK)
            rc = s_int(cell, CTL_F_EP_RANK, 0, cap, &c);
        if (rc != SHOAL_OK)
            return rc;
        p->ckpt_shards[i].cell = (plan_cell_t){(uint32_t)a, (uint32_t)b, (uint32_t)c};
    }
    return s_handovers_from(json_object_get(j, CTL_F_HANDOVERS), p, cap);
}

shoal_err_t plan_from_json(const json_t *j, plan_t *p)
{
    shoal_err_t rc = SHOAL_OK;
    json_int_t v, dp, pp, ep;
    char src[32];
    const uint32_t cap = 1u << 20;
    plan_fini(p);
    const json_t *topo = json_object_get(j, CTL_F_TOPOLOGY);
    SHOAL_CHECK_GOTO(s_str(j, CTL_F_RUN_ID, p->run_id, sizeof p->run_id), rc, fail);
    SHOAL_CHECK_GOTO(s_int(j, CTL_F_GENERATION, 0, INT64_MAX, &v), rc, fail);
    p->generation = (uint64_t)v;
    SHOAL_CHECK_GOTO(s_int(topo, CTL_F_DP, 1, cap, &dp), rc, fail);
    SHOAL_CHECK_GOTO(s_int(topo, CTL_F_PP, 1, cap, &pp), rc, fail);
    SHOAL_CHECK_GOTO(s_int(topo, CTL_F_EP, 1, cap, &ep), rc, fail);
    p->dp = (uint32_t)dp;
    p->pp = (uint32_t)pp;
    p->ep = (uint32_t)ep;
    SHOAL_CHECK_GOTO(s_int(j, CTL_F_START_STEP, 0, INT64_MAX, &v), rc, fail);
    p->start_step = (int64_t)v;
    SHOAL_CHECK_GOTO(s_int(j, CTL_F_CHECKPOINT_STEP, 0, INT64_MAX, &v), rc, fail);
    p->ckpt_step = (int64_t)v;
    SHOAL_CHECK_GOTO(s_str(j, CTL_F_CHECKPOINT_PATH, p->ckpt_path, sizeof p->ckpt_path), rc, fail);
    SHOAL_CHECK_GOTO(s_int(j, CTL_F_SOURCE_RANK, 0, cap, &v), rc, fail);
    p->source_rank = (uint32_t)v;
    SHOAL_CHECK_GOTO(s_str(j, CTL_F_SOURCE, src, sizeof src), rc, fail);
    if (strcmp(src, "init") == 0)
        p->source = PLAN_SOURCE_INIT;
    else if (strcmp(src, "checkpoint") == 0)
        p->source = PLAN_SOURCE_CHECKPOINT;
    else if (strcmp(src, "peer") == 0)
        p->source = PLAN_SOURCE_PEER;
    else {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: unknown source '%s'", src);
        goto fail;
    }
    const json_t *stages = json_object_get(j, CTL_F_STAGES),
                 *experts = json_object_get(j, CTL_F_EXPERTS),
                 *peers = json_object_get(j, CTL_F_PEERS);
    if (!json_is_array(stages) || json_array_size(stages) != (size_t)pp ||
        !json_is_array(experts) || !json_is_array(peers) ||
        json_array_size(peers) != (size_t)(dp * pp * ep)) {
        rc = shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: stages, experts or peers inconsistent");
        goto fail;
    }
    p->stages = calloc((size_t)pp, sizeof *p->stages);
    p->n_experts = (uint32_t)json_array_size(experts);
    p->experts = p->n_experts ? calloc(p->n_experts, sizeof *p->experts) : NULL;
    p->n_peers = (uint32_t)json_array_size(peers);
    p->peers = calloc(p->n_peers, sizeof *p->peers);
    if (!p->stages || !p->peers || (p->n_experts && !p->experts)) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan from JSON");
        goto fail;
    }
    for (uint32_t s = 0; s < p->pp; s++) {
        const json_t *o = json_array_get(stages, s);
        json_int_t a, b;
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_FIRST_LAYER, 0, cap, &a), rc, fail);
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_N_LAYERS, 0, cap, &b), rc, fail);
        p->stages[s] = (plan_stage_t){(uint32_t)a, (uint32_t)b,
                                      json_is_true(json_object_get(o, CTL_F_HAS_EMBEDDING)),
                                      json_is_true(json_object_get(o, CTL_F_HAS_HEAD))};
    }
    for (uint32_t e = 0; e < p->n_experts; e++) {
        const json_t *o = json_array_get(experts, e);
        json_int_t a, b, c;
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_EP_RANK, 0, cap, &a), rc, fail);
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_FIRST, 0, cap, &b), rc, fail);
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_COUNT, 0, cap, &c), rc, fail);
        p->experts[e] = (plan_experts_t){(uint32_t)a, (uint32_t)b, (uint32_t)c};
    }
    for (uint32_t i = 0; i < p->n_peers; i++) {
        const json_t *o = json_array_get(peers, i), *cell = json_object_get(o, CTL_F_CELL);
        plan_peer_t *q = &p->peers[i];
        json_int_t r, a, b, c;
        SHOAL_CHECK_GOTO(s_str(o, CTL_F_WORKER, q->worker_id, sizeof q->worker_id), rc, fail);
        SHOAL_CHECK_GOTO(s_str(o, CTL_F_DATA_ENDPOINT, q->endpoint, sizeof q->endpoint), rc, fail);
        SHOAL_CHECK_GOTO(s_int(o, CTL_F_RANK, 0, cap, &r), rc, fail);
        SHOAL_CHECK_GOTO(s_int(cell, CTL_F_REPLICA, 0, dp - 1, &a), rc, fail);
        SHOAL_CHECK_GOTO(s_int(cell, CTL_F_STAGE, 0, pp - 1, &b), rc, fail);
        SHOAL_CHECK_GOTO(s_int(cell, CTL_F_EP_RANK, 0, ep - 1, &c), rc, fail);
        q->rank = (uint32_t)r;
        q->cell = (plan_cell_t){(uint32_t)a, (uint32_t)b, (uint32_t)c};
        s_site_from(o, &q->site);
        json_int_t est = json_integer_value(json_object_get(o, CTL_F_MEM_EST_BYTES));
        q->mem_est = est > 0 ? (uint64_t)est : 0;
        if (q->rank != plan_rank(p, q->cell) || q->rank != i) {
            rc = shoal_fail(SHOAL_ERR_FORMAT, "plan JSON: peer %u has an inconsistent rank", i);
            goto fail;
        }
    }
    SHOAL_CHECK_GOTO(s_optional_from(j, p, cap), rc, fail);
    return SHOAL_OK;
fail:
    plan_fini(p);
    return rc;
}
