/* plan_keep.c: a re-plan keeps state where it is: survivors go back to the cells whose part of
 * the model they hold, and the plan knows whether every part of it is held by a survivor (state
 * from peers) or not (state from the checkpoint). */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether cell c of plan a and cell d of plan b hold the same part of the model: the same
 * layers and the same routed experts. */
static int s_same_part(const plan_t *a, plan_cell_t c, const plan_t *b, plan_cell_t d)
{
    if (c.stage >= a->pp || d.stage >= b->pp)
        return 0;
    const plan_stage_t *x = &a->stages[c.stage], *y = &b->stages[d.stage];
    if (x->first_layer != y->first_layer || x->n_layers != y->n_layers)
        return 0;
    if (a->n_experts == 0 || b->n_experts == 0)
        return a->n_experts == b->n_experts;
    if (c.ep_rank >= a->n_experts || d.ep_rank >= b->n_experts)
        return 0;
    return a->experts[c.ep_rank].first == b->experts[d.ep_rank].first &&
           a->experts[c.ep_rank].count == b->experts[d.ep_rank].count;
}

static const plan_survivor_t *s_survivor(const plan_survivor_t *s, uint32_t n, const char *id)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(s[i].worker_id, id) == 0)
            return &s[i];
    return NULL;
}

static int s_fits(const plan_site_t *site, uint64_t mem_est)
{
    return site->memory_bytes == 0 || mem_est <= site->memory_bytes;
}

void plan_keep_holders(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n)
{
    if (!old || old->n_peers == 0)
        return;
    /* a cell whose worker is settled (its own holder, or back on it) is never swapped again */
    uint8_t *claimed = calloc(p->n_peers + 1, 1);
    if (!claimed)
        return; /* keeping state is an optimisation: the plan stays valid as placed */
    for (uint32_t i = 0; i < p->n_peers; i++) {
        /* who held this very cell, with this part, and survives? */
        const plan_cell_t cell = p->peers[i].cell;
        const plan_peer_t *prev = NULL;
        for (uint32_t k = 0; k < old->n_peers && !prev; k++)
            if (old->peers[k].cell.replica == cell.replica &&
                old->peers[k].cell.stage == cell.stage &&
                old->peers[k].cell.ep_rank == cell.ep_rank &&
                s_same_part(p, cell, old, old->peers[k].cell) &&
                s_survivor(s, n, old->peers[k].worker_id))
                prev = &old->peers[k];
        if (!prev)
            continue; /* a new cell, or its holder is gone: whoever the planner put there */
        if (strcmp(p->peers[i].worker_id, prev->worker_id) == 0) {
            claimed[i] = 1;
            continue;
        }
        uint32_t j = 0;
        while (j < p->n_peers && strcmp(p->peers[j].worker_id, prev->worker_id) != 0)
            j++;
        if (j == p->n_peers || claimed[j])
            continue; /* a spare now, or already back on its own cell */
        if (!s_fits(&p->peers[j].site, p->peers[i].mem_est) ||
            !s_fits(&p->peers[i].site, p->peers[j].mem_est))
            continue;
        if (p->peers[i].site.gpu != p->peers[j].site.gpu)
            continue; /* a pipeline or ep group stays all GPU or all CPU */
        plan_peer_t tmp = p->peers[i];
        memcpy(p->peers[i].worker_id, p->peers[j].worker_id, sizeof tmp.worker_id);
        memcpy(p->peers[i].endpoint, p->peers[j].endpoint, sizeof tmp.endpoint);
        p->peers[i].site = p->peers[j].site;
        memcpy(p->peers[j].worker_id, tmp.worker_id, sizeof tmp.worker_id);
        memcpy(p->peers[j].endpoint, tmp.endpoint, sizeof tmp.endpoint);
        p->peers[j].site = tmp.site;
        claimed[i] = 1;
    }
    free(claimed);
}

/* The first cell of `p` with part (stage, e) whose worker is a survivor that held the same part
 * in `old` at `step`, or NULL. */
static const plan_peer_t *s_part_holder(const plan_t *p, const plan_t *old, const plan_survivor_t *s,
                                        uint32_t n, int64_t step, uint32_t stage, uint32_t e)
{
    for (uint32_t i = 0; i < p->n_peers; i++) {
        const plan_peer_t *now = &p->peers[i];
        if (now->cell.stage != stage || now->cell.ep_rank != e)
            continue;
        const plan_survivor_t *sv = s_survivor(s, n, now->worker_id);
        const plan_peer_t *was = old ? plan_find_worker(old, now->worker_id) : NULL;
        if (sv && was && sv->step == step && s_same_part(p, now->cell, old, was->cell))
            return now;
    }
    return NULL;
}

shoal_err_t plan_add_handovers(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                               const plan_donor_t *d, uint32_t nd, int64_t step)
{
    free(p->handovers);
    p->handovers = NULL;
    p->n_handovers = 0;
    if (!old || nd == 0)
        return SHOAL_OK;
    if (!(p->handovers = calloc((size_t)p->pp * p->ep + 1, sizeof *p->handovers)))
        return shoal_fail(SHOAL_ERR_NOMEM, "plan hand-overs");
    for (uint32_t stage = 0; stage < p->pp; stage++)
        for (uint32_t e = 0; e < p->ep; e++) {
            if (s_part_holder(p, old, s, n, step, stage, e))
                continue; /* a survivor shares it (or keeps it): no hand-over needed */
            const plan_peer_t *taker = NULL;
            for (uint32_t i = 0; i < p->n_peers && !taker; i++)
                if (p->peers[i].cell.stage == stage && p->peers[i].cell.ep_rank == e)
                    taker = &p->peers[i];
            for (uint32_t k = 0; k < nd && taker; k++) {
                const plan_peer_t *was = plan_find_worker(old, d[k].worker_id);
                if (d[k].step != step || !was || !s_same_part(p, taker->cell, old, was->cell))
                    continue;
                plan_handover_t *h = &p->handovers[p->n_handovers++];
                h->to_rank = taker->rank;
                snprintf(h->from_worker, sizeof h->from_worker, "%s", d[k].worker_id);
                snprintf(h->from_endpoint, sizeof h->from_endpoint, "%s", d[k].endpoint);
                break;
            }
        }
    return SHOAL_OK;
}

int plan_parts_held(const plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                    int64_t step, uint32_t *source_rank)
{
    int found_any = 0;
    for (uint32_t stage = 0; stage < p->pp; stage++)
        for (uint32_t e = 0; e < p->ep; e++) {
            const plan_peer_t *holder = s_part_holder(p, old, s, n, step, stage, e);
            uint32_t rank = holder ? holder->rank : 0;
            for (uint32_t h = 0; h < p->n_handovers && !holder; h++) {
                const plan_peer_t *taker = &p->peers[p->handovers[h].to_rank];
                if (p->handovers[h].to_rank < p->n_peers && taker->cell.stage == stage &&
                    taker->cell.ep_rank == e) {
                    holder = taker;
                    rank = taker->rank;
                }
            }
            if (!holder)
                return 0;
            if (!found_any) {
                *source_rank = rank;
                found_any = 1;
            }
        }
    return 1;
}
