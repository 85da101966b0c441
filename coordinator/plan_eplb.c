/* plan_eplb.c: hot experts replicated from observed loads (DeepSeek's EPLB, hierarchical form)
 * inside one ep group that spans several hosts: expert groups are packed onto hosts (so a token
 * whose router keeps topk_group groups reaches at most topk_group hosts: node-limited routing),
 * each host's redundant slots copy its heaviest experts, and the physical copies are packed onto
 * the host's ranks to even out their loads. Plain arithmetic on small arrays: a V3 layer (256
 * experts, 64 ranks) takes microseconds. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

/* Index of the least loaded bin among [0, n) with room (count < cap); UINT32_MAX when none. */
static uint32_t s_lightest(const double *bin_load, const uint32_t *count, uint32_t n, uint32_t cap)
{
    uint32_t best = UINT32_MAX;
    for (uint32_t b = 0; b < n; b++)
        if (count[b] < cap && (best == UINT32_MAX || bin_load[b] < bin_load[best]))
            best = b;
    return best;
}

/* Items [0, n) by decreasing weight (ties: lower index first), into order[]. */
static void s_by_weight(const double *w, uint32_t n, uint32_t *order)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = i;
        for (; j > 0 && w[order[j - 1]] < w[i]; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
}

void plan_eplb_fini(plan_eplb_t *e)
{
    free(e->slot_expert);
    free(e->replicas);
    free(e->expert_node);
    memset(e, 0, sizeof *e);
}

shoal_err_t plan_eplb_place(plan_eplb_t *out, const double *load, uint32_t n_experts,
                            uint32_t n_groups, uint32_t n_nodes, uint32_t ep, uint32_t redundant)
{
    plan_eplb_fini(out);
    if (!n_experts || !ep || n_experts % ep || !n_groups || n_experts % n_groups || !n_nodes ||
        ep % n_nodes)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "eplb: %u experts in %u groups cannot spread over ep %u on %u hosts",
                          n_experts, n_groups, ep, n_nodes);
    /* groups pack onto hosts only when each host gets whole groups; else one pool (no limit) */
    const int limited = n_groups % n_nodes == 0;
    const uint32_t nodes = limited ? n_nodes : 1, rpn = ep / nodes;
    const uint32_t per_group = n_experts / n_groups, gpn = limited ? n_groups / nodes : 0;
    const uint32_t slots = n_experts / ep + redundant, node_slots = rpn * slots;
    const uint32_t node_experts = n_experts / nodes;
    shoal_err_t rc = SHOAL_OK;
    double *gload = calloc(n_groups, sizeof *gload), *nload = calloc(nodes, sizeof *nload);
    double *rload = calloc(ep, sizeof *rload), *copy_load = calloc(node_slots, sizeof *copy_load);
    uint32_t *order = calloc(n_experts + node_slots, sizeof *order);
    uint32_t *ncount = calloc(nodes, sizeof *ncount), *rcount = calloc(ep, sizeof *rcount);
    uint32_t *group_node = calloc(n_groups, sizeof *group_node);
    uint32_t *local = calloc(node_experts, sizeof *local), *copy_of = calloc(node_slots, 4);
    out->slot_expert = calloc((size_t)ep * slots, sizeof *out->slot_expert);
    out->replicas = calloc(n_experts, sizeof *out->replicas);
    out->expert_node = calloc(n_experts, sizeof *out->expert_node);
    if (!gload || !nload || !rload || !copy_load || !order || !ncount || !rcount || !group_node ||
        !local || !copy_of || !out->slot_expert || !out->replicas || !out->expert_node) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "eplb: %u experts", n_experts);
        goto out;
    }
    out->ep = ep;
    out->slots = slots;
    out->n_experts = n_experts;
    out->n_nodes = nodes;
    out->node_limited = limited;
    /* 1. groups onto hosts, heaviest group first onto the lightest host with room */
    for (uint32_t x = 0; x < n_experts; x++)
        gload[x / per_group] += load ? load[x] : 1.0;
    if (limited) {
        s_by_weight(gload, n_groups, order);
        for (uint32_t i = 0; i < n_groups; i++) {
            uint32_t g = order[i], nd = s_lightest(nload, ncount, nodes, gpn);
            group_node[g] = nd;
            nload[nd] += gload[g];
            ncount[nd]++;
        }
    }
    for (uint32_t nd = 0; nd < nodes; nd++) {
        /* 2. the host's experts, one copy each, then each redundant slot to the expert with the
         * most load per copy */
        uint32_t n_local = 0;
        for (uint32_t x = 0; x < n_experts; x++)
            if (group_node[x / per_group] == nd) {
                local[n_local++] = x;
                out->replicas[x] = 1;
                out->expert_node[x] = nd;
            }
        for (uint32_t s = n_local; s < node_slots; s++) {
            uint32_t best = 0;
            for (uint32_t i = 1; i < n_local; i++) {
                double a = (load ? load[local[i]] : 1.0) / out->replicas[local[i]];
                double b = (load ? load[local[best]] : 1.0) / out->replicas[local[best]];
                if (a > b)
                    best = i;
            }
            out->replicas[local[best]]++;
        }
        /* 3. the copies onto the host's ranks, heaviest first onto the lightest rank with room */
        uint32_t n_copies = 0;
        for (uint32_t i = 0; i < n_local; i++)
            for (uint32_t k = 0; k < out->replicas[local[i]]; k++) {
                copy_of[n_copies] = local[i];
                copy_load[n_copies++] = (load ? load[local[i]] : 1.0) / out->replicas[local[i]];
            }
        s_by_weight(copy_load, n_copies, order);
        for (uint32_t i = 0; i < n_copies; i++) {
            uint32_t r = nd * rpn + s_lightest(rload + nd * rpn, rcount + nd * rpn, rpn, slots);
            out->slot_expert[(size_t)r * slots + rcount[r]++] = copy_of[order[i]];
            rload[r] += copy_load[order[i]];
        }
    }
    double sum = 0, max = 0;
    for (uint32_t r = 0; r < ep; r++) {
        sum += rload[r];
        if (rload[r] > max)
            max = rload[r];
    }
    out->max_rank_load = max;
    out->mean_rank_load = sum / ep;
out:
    free(gload);
    free(nload);
    free(rload);
    free(copy_load);
    free(order);
    free(ncount);
    free(rcount);
    free(group_node);
    free(local);
    free(copy_of);
    if (rc != SHOAL_OK)
        plan_eplb_fini(out);
    return rc;
}

uint32_t plan_eplb_token_hosts(const plan_eplb_t *e, uint32_t n_groups, uint32_t topk_group)
{
    if (!e->n_experts || !n_groups || e->n_nodes > 64)
        return e->n_nodes;
    /* hosts a group's copies are on, as a mask; a token keeps topk_group groups, so the union
     * of any topk_group of them is at most the sum of the largest topk_group counts */
    const uint32_t per_group = e->n_experts / n_groups;
    uint32_t *count = calloc(n_groups, sizeof *count);
    if (!count)
        return e->n_nodes;
    for (uint32_t g = 0; g < n_groups; g++) {
        uint64_t mask = 0;
        for (uint32_t x = g * per_group; x < (g + 1) * per_group; x++)
            mask |= 1ull << e->expert_node[x];
        count[g] = (uint32_t)__builtin_popcountll(mask);
    }
    uint32_t worst = 0;
    for (uint32_t k = 0; k < topk_group && k < n_groups; k++) {
        uint32_t best = 0;
        for (uint32_t g = 1; g < n_groups; g++)
            if (count[g] > count[best])
                best = g;
        worst += count[best];
        count[best] = 0;
    }
    free(count);
    return worst < e->n_nodes ? worst : e->n_nodes;
}

uint32_t plan_ep_hosts(const plan_t *p, uint32_t replica, uint32_t stage)
{
    if (!p->ep || replica >= p->dp || stage >= p->pp)
        return 0;
    const plan_peer_t *g = &p->peers[plan_rank(p, (plan_cell_t){replica, stage, 0})];
    /* runs of equal hosts in ep_rank order, all of one length, no host twice */
    uint32_t run = 1;
    while (run < p->ep && strcmp(g[run].site.host, g[0].site.host) == 0)
        run++;
    if (p->ep % run)
        return 1;
    for (uint32_t r = 0; r < p->ep; r++) {
        if (strcmp(g[r].site.host, g[r - r % run].site.host) != 0)
            return 1;
        if (r % run == 0)
            for (uint32_t q = 0; q < r; q += run)
                if (strcmp(g[q].site.host, g[r].site.host) == 0)
                    return 1;
    }
    return p->ep / run;
}

uint32_t plan_cells_moved(const plan_t *a, const plan_t *b)
{
    const int same_shape = a->pp == b->pp && a->ep == b->ep;
    uint32_t moved = 0;
    for (uint32_t i = 0; i < b->n_peers; i++) {
        const plan_cell_t c = b->peers[i].cell;
        const uint32_t r = same_shape && c.replica < a->dp ? plan_rank(a, c) : UINT32_MAX;
        moved += r >= a->n_peers || strcmp(a->peers[r].worker_id, b->peers[i].worker_id) != 0;
    }
    return moved;
}
