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

/* Worker ids sorted, each with where it is (an index into its array): a DeepSeek-V3-sized
 * re-plan has 2,048 cells and as many survivors, and scanning them for every cell took tens of
 * milliseconds. */
typedef struct {
    char id[PLAN_ID_MAX];
    uint32_t at;
} s_ix_t;

typedef struct {
    s_ix_t *e;
    uint32_t n;
} s_index_t;

static int s_ix_cmp(const void *a, const void *b)
{
    return strcmp(((const s_ix_t *)a)->id, ((const s_ix_t *)b)->id);
}

/* The survivors' ids; 0, or -1 when out of memory. */
static int s_index_survivors(s_index_t *x, const plan_survivor_t *s, uint32_t n)
{
    x->n = n;
    x->e = calloc((size_t)n + 1, sizeof *x->e);
    if (!x->e)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(x->e[i].id, sizeof x->e[i].id, "%s", s[i].worker_id);
        x->e[i].at = i;
    }
    qsort(x->e, n, sizeof *x->e, s_ix_cmp);
    return 0;
}

/* The same over an array of plan peers (their ids are arrays, not pointers). */
static int s_index_peers(s_index_t *x, const plan_t *p)
{
    x->n = p->n_peers;
    x->e = calloc((size_t)p->n_peers + 1, sizeof *x->e);
    if (!x->e)
        return -1;
    for (uint32_t i = 0; i < p->n_peers; i++) {
        memcpy(x->e[i].id, p->peers[i].worker_id, sizeof x->e[i].id);
        x->e[i].at = i;
    }
    qsort(x->e, x->n, sizeof *x->e, s_ix_cmp);
    return 0;
}

static s_ix_t *s_index_find(const s_index_t *x, const char *id)
{
    s_ix_t key;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, x->e, x->n, sizeof *x->e, s_ix_cmp);
}

static const plan_survivor_t *s_survivor(const plan_survivor_t *s, const s_index_t *x,
                                         const char *id)
{
    const s_ix_t *e = s_index_find(x, id);
    return e ? &s[e->at] : NULL;
}

/* The peer of `old` that held `cell` (by rank when the shapes agree), or NULL. */
static const plan_peer_t *s_old_cell(const plan_t *old, plan_cell_t cell)
{
    if (old->pp && old->ep && cell.stage < old->pp && cell.ep_rank < old->ep &&
        cell.replica < old->dp) {
        uint32_t r = plan_rank(old, cell);
        const plan_peer_t *q = &old->peers[r];
        if (r < old->n_peers && q->cell.replica == cell.replica && q->cell.stage == cell.stage &&
            q->cell.ep_rank == cell.ep_rank)
            return q;
    }
    for (uint32_t k = 0; k < old->n_peers; k++)
        if (old->peers[k].cell.replica == cell.replica && old->peers[k].cell.stage == cell.stage &&
            old->peers[k].cell.ep_rank == cell.ep_rank)
            return &old->peers[k];
    return NULL;
}

static int s_fits(const plan_site_t *site, uint64_t mem_est)
{
    return site->memory_bytes == 0 || mem_est <= site->memory_bytes;
}

/* An index entry of a worker that was placed and is a spare now. */
#define S_NOT_PEER UINT32_MAX

/* Cell i of p goes back to `prev`'s worker, which p lists as a spare, when it fits there; the
 * worker placed on it becomes that spare. Returns whether it did. */
static int s_take_from_spares(plan_t *p, uint32_t i, const plan_peer_t *prev)
{
    plan_peer_t *q = &p->peers[i];
    for (uint32_t k = 0; k < p->n_spares; k++) {
        plan_spare_t *sp = &p->spares[k];
        if (strcmp(sp->worker_id, prev->worker_id) != 0)
            continue;
        if (!s_fits(&sp->site, q->mem_est) || sp->site.gpu != q->site.gpu)
            return 0;
        plan_spare_t displaced = {.site = q->site};
        memcpy(displaced.worker_id, q->worker_id, sizeof displaced.worker_id);
        memcpy(q->worker_id, prev->worker_id, sizeof q->worker_id);
        memcpy(q->endpoint, prev->endpoint, sizeof q->endpoint); /* a survivor: unchanged */
        q->site = sp->site;
        *sp = displaced;
        return 1;
    }
    return 0;
}

void plan_keep_holders(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n)
{
    if (!old || old->n_peers == 0)
        return;
    /* a cell whose worker is settled (its own holder, or back on it) is never swapped again */
    uint8_t *claimed = calloc(p->n_peers + 1, 1);
    s_index_t sx = {0}, px = {0};
    if (!claimed || s_index_survivors(&sx, s, n) ||
        s_index_peers(&px, p))
        goto out; /* keeping state is an optimisation: the plan stays valid as placed */
    for (uint32_t i = 0; i < p->n_peers; i++) {
        /* who held this very cell, with this part, and survives? */
        const plan_cell_t cell = p->peers[i].cell;
        const plan_peer_t *prev = s_old_cell(old, cell);
        if (prev && (!s_same_part(p, cell, old, prev->cell) ||
                     !s_survivor(s, &sx, prev->worker_id)))
            prev = NULL;
        if (!prev)
            continue; /* a new cell, or its holder is gone: whoever the planner put there */
        if (strcmp(p->peers[i].worker_id, prev->worker_id) == 0) {
            claimed[i] = 1;
            continue;
        }
        s_ix_t *xj = s_index_find(&px, prev->worker_id), *xi = s_index_find(&px, p->peers[i].worker_id);
        if (xi && (!xj || xj->at == S_NOT_PEER)) {
            /* the planner made the holder a spare (a joiner sorted before it): it takes its cell
             * back and the joiner is the spare, so that a join that only adds a spare keeps the
             * plan as it was (no new generation, nobody restarts) */
            if (s_take_from_spares(p, i, prev))
                xi->at = S_NOT_PEER, claimed[i] = 1;
            continue;
        }
        if (!xj || !xi || claimed[xj->at])
            continue; /* already back on its own cell */
        const uint32_t j = xj->at;
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
        xj->at = i;
        xi->at = j;
        claimed[i] = 1;
    }
out:
    free(sx.e);
    free(px.e);
    free(claimed);
}

/* For each part (stage, e) of `p`, the first cell with that part whose worker is a survivor that
 * held the same part in `old` at `step`, or NULL: holders[stage * ep + e]. -1 when out of
 * memory. */
static int s_part_holders(const plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                          int64_t step, const plan_peer_t **holders)
{
    s_index_t sx = {0}, ox = {0};
    if (s_index_survivors(&sx, s, n) || (old && s_index_peers(&ox, old))) {
        free(sx.e);
        return -1;
    }
    for (uint32_t i = 0; i < p->n_peers; i++) {
        const plan_peer_t *now = &p->peers[i];
        if (now->cell.stage >= p->pp || now->cell.ep_rank >= p->ep)
            continue;
        const plan_peer_t **h = &holders[now->cell.stage * p->ep + now->cell.ep_rank];
        if (*h)
            continue;
        const plan_survivor_t *sv = s_survivor(s, &sx, now->worker_id);
        const s_ix_t *wx = old ? s_index_find(&ox, now->worker_id) : NULL;
        const plan_peer_t *was = wx ? &old->peers[wx->at] : NULL;
        if (sv && was && sv->step == step && s_same_part(p, now->cell, old, was->cell))
            *h = now;
    }
    free(sx.e);
    free(ox.e);
    return 0;
}

shoal_err_t plan_add_handovers(plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                               const plan_donor_t *d, uint32_t nd, int64_t step)
{
    free(p->handovers);
    p->handovers = NULL;
    p->n_handovers = 0;
    if (!old || nd == 0)
        return SHOAL_OK;
    const plan_peer_t **held = calloc((size_t)p->pp * p->ep + 1, sizeof *held);
    if (!held || !(p->handovers = calloc((size_t)p->pp * p->ep + 1, sizeof *p->handovers)) ||
        s_part_holders(p, old, s, n, step, held)) {
        free(held);
        return shoal_fail(SHOAL_ERR_NOMEM, "plan hand-overs");
    }
    for (uint32_t stage = 0; stage < p->pp; stage++)
        for (uint32_t e = 0; e < p->ep; e++) {
            if (held[stage * p->ep + e])
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
    free(held);
    return SHOAL_OK;
}

int plan_parts_held(const plan_t *p, const plan_t *old, const plan_survivor_t *s, uint32_t n,
                    int64_t step, uint32_t *source_rank)
{
    int found_any = 0, all = 1;
    const plan_peer_t **held = calloc((size_t)p->pp * p->ep + 1, sizeof *held);
    if (!held || s_part_holders(p, old, s, n, step, held)) {
        free(held);
        return 0; /* cannot tell: the checkpoint is the safe source */
    }
    for (uint32_t stage = 0; stage < p->pp && all; stage++)
        for (uint32_t e = 0; e < p->ep && all; e++) {
            const plan_peer_t *holder = held[stage * p->ep + e];
            uint32_t rank = holder ? holder->rank : 0;
            for (uint32_t h = 0; h < p->n_handovers && !holder; h++) {
                const plan_peer_t *taker = &p->peers[p->handovers[h].to_rank];
                if (p->handovers[h].to_rank < p->n_peers && taker->cell.stage == stage &&
                    taker->cell.ep_rank == e) {
                    holder = taker;
                    rank = taker->rank;
                }
            }
            if (!holder) {
                all = 0;
                break;
            }
            if (!found_any) {
                *source_rank = rank;
                found_any = 1;
            }
        }
    free(held);
    return all;
}
