/* cell_comms.c: the group comms of a cell (cell_comms.h). */
#include "cell_comms.h"

#include <stdlib.h>
#include <string.h>

int cell_rank(int pp, int ep, int replica, int stage, int ep_rank)
{
    return (replica * pp + stage) * ep + ep_rank;
}

/* One group: its members' plan ranks in group-rank order; NULL comm for a group of one. */
static shoal_err_t s_group(comm_listener_t *l, const char *const *endpoints, const int *members,
                           int n, int my_group_rank, uint32_t tag, uint64_t generation,
                           int timeout_ms, cell_comms_t *out, comm_t **slot)
{
    *slot = NULL;
    if (n <= 1)
        return SHOAL_OK;
    const char **eps = calloc((size_t)n, sizeof *eps);
    if (!eps)
        return shoal_fail(SHOAL_ERR_NOMEM, "cell comms: out of memory");
    for (int i = 0; i < n; i++)
        eps[i] = endpoints[members[i]];
    const comm_config_t cc = {.rank = my_group_rank,
                              .nranks = n,
                              .endpoints = eps,
                              .generation = generation,
                              .timeout_ms = timeout_ms,
                              .group = tag};
    shoal_err_t rc = comm_new(l, &cc, slot);
    free(eps);
    if (rc == SHOAL_OK)
        out->all[out->n++] = *slot;
    return rc;
}

shoal_err_t cell_comms_new(comm_listener_t *l, const trainer_cell_t *c,
                           const char *const *endpoints, uint64_t generation, int timeout_ms,
                           cell_comms_t *out)
{
    memset(out, 0, sizeof *out);
    const int dp = c->dp, pp = c->pp, ep = c->ep, world = dp * pp * ep;
    int *m = calloc((size_t)world, sizeof *m);
    if (!m)
        return shoal_fail(SHOAL_ERR_NOMEM, "cell comms: out of memory");
    shoal_err_t rc;
    for (int i = 0; i < world; i++)
        m[i] = i;
    const int me = cell_rank(pp, ep, c->replica, c->stage, c->ep_rank);
    SHOAL_CHECK_GOTO(s_group(l, endpoints, m, world, me, CELL_GROUP_WORLD, generation, timeout_ms,
                             out, &out->g.world),
                     rc, fail);
    if (pp == 1 && ep == 1) {
        out->g.stage = out->g.world;
    } else {
        int n = 0;
        for (int r = 0; r < dp; r++)
            for (int e = 0; e < ep; e++)
                m[n++] = cell_rank(pp, ep, r, c->stage, e);
        SHOAL_CHECK_GOTO(s_group(l, endpoints, m, n, c->replica * ep + c->ep_rank,
                                 CELL_GROUP_STAGE, generation, timeout_ms, out, &out->g.stage),
                         rc, fail);
        n = 0;
        for (int r = 0; r < dp; r++)
            m[n++] = cell_rank(pp, ep, r, c->stage, c->ep_rank);
        SHOAL_CHECK_GOTO(s_group(l, endpoints, m, n, c->replica, CELL_GROUP_EXPERT, generation,
                                 timeout_ms, out, &out->g.expert),
                         rc, fail);
        n = 0;
        for (int e = 0; e < ep; e++)
            m[n++] = cell_rank(pp, ep, c->replica, c->stage, e);
        SHOAL_CHECK_GOTO(s_group(l, endpoints, m, n, c->ep_rank, CELL_GROUP_EP, generation,
                                 timeout_ms, out, &out->g.ep),
                         rc, fail);
        n = 0;
        for (int s = 0; s < pp; s++)
            m[n++] = cell_rank(pp, ep, c->replica, s, c->ep_rank);
        SHOAL_CHECK_GOTO(s_group(l, endpoints, m, n, c->stage, CELL_GROUP_PIPE, generation,
                                 timeout_ms, out, &out->g.pipe),
                         rc, fail);
    }
    free(m);
    return SHOAL_OK;
fail:
    free(m);
    cell_comms_destroy(out);
    return rc;
}

void cell_comms_abort(cell_comms_t *c)
{
    for (int i = 0; i < c->n; i++)
        comm_abort(c->all[i]);
}

void cell_comms_destroy(cell_comms_t *c)
{
    for (int i = 0; i < c->n; i++)
        comm_destroy(&c->all[i]);
    memset(c, 0, sizeof *c);
}
