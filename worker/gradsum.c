/* gradsum.c: exact gradient sums and the topology-independent global norm (see gradsum.h). */
#include "gradsum.h"

#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "xsum.h"

struct gradsum {
    const model_layout_t *lay;
    xsum_vec_t xs;
    float *micro;  /* one micro-batch's gradients */
    int64_t *tops; /* [n_tensors] windows agreed over a group */
    /* The counters' tensors run in the flat array's order (non-expert tensors first when the
     * part holds some experts only), which differs from the layout's canonical tensor order */
    int *by_offset;   /* [n_tensors] layout index of the counters' k-th tensor */
    int64_t *xoff;    /* [n_tensors + 1] its element offset */
    int first_expert; /* counters' index of the first expert tensor (n_tensors if none apart) */
    int n_canon;      /* tensors of the whole model */
    int *canon;       /* [n_tensors] canonical index of each held tensor */
    int64_t *norm;    /* [n_canon + 1] per-tensor sums of squares (double bits) and the loss */
};

/* Canonical index of each held tensor: the layout lists them in canonical order, so one walk
 * through the whole model's list finds them all. */
static shoal_err_t s_canon_map(gradsum_t *g)
{
    const model_layout_t *lay = g->lay;
    g->n_canon = model_tensor_list(&lay->cfg, NULL, 0);
    model_tensor_info_t *all = malloc(sizeof *all * ((size_t)g->n_canon + 1));
    g->canon = malloc(sizeof(int) * ((size_t)lay->n_tensors + 1));
    if (!all || !g->canon) {
        free(all);
        return shoal_fail(SHOAL_ERR_NOMEM, "gradsum: out of memory");
    }
    model_tensor_list(&lay->cfg, all, g->n_canon);
    int j = 0;
    for (int i = 0; i < lay->n_tensors; i++) {
        while (j < g->n_canon && strcmp(all[j].name, lay->tensors[i].name) != 0)
            j++;
        if (j == g->n_canon) {
            free(all);
            return shoal_fail(SHOAL_ERR_STATE,
                              "gradsum: tensor %s is not in the model's "
                              "canonical order",
                              lay->tensors[i].name);
        }
        g->canon[i] = j++;
    }
    free(all);
    return SHOAL_OK;
}

/* The layout's tensors by offset, for counters over contiguous ranges: the non-expert tensors
 * then the experts, each kind in canonical order (model.h's layout). */
static shoal_err_t s_offset_order(gradsum_t *g)
{
    const model_layout_t *lay = g->lay;
    const int64_t ns = lay->n_shared_params;
    int k = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            g->first_expert = k;
        for (int i = 0; i < lay->n_tensors; i++)
            if ((lay->offsets[i] >= ns) == pass)
                g->by_offset[k++] = i;
    }
    if (ns == lay->n_params)
        g->first_expert = lay->n_tensors;
    for (k = 0; k < lay->n_tensors; k++) {
        g->xoff[k] = lay->offsets[g->by_offset[k]];
        if (g->xoff[k] + model_tensor_numel(&lay->tensors[g->by_offset[k]]) !=
            (k + 1 < lay->n_tensors ? lay->offsets[g->by_offset[k + 1]] : lay->n_params))
            return shoal_fail(SHOAL_ERR_STATE,
                              "gradsum: tensor %s does not end where the next "
                              "begins in the flat array",
                              lay->tensors[g->by_offset[k]].name);
    }
    g->xoff[lay->n_tensors] = lay->n_params;
    return SHOAL_OK;
}

shoal_err_t gradsum_new(const model_layout_t *lay, int n_micro, gradsum_t **out)
{
    *out = NULL;
    if (n_micro < 1 || n_micro > XSUM_MAX_DEPOSITS)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "train.grad_sum exact: %d micro-batches per step "
                          "exceed the %lld the exact sum's counters hold; use fewer, larger "
                          "micro-batches or train.grad_sum: float",
                          n_micro, (long long)XSUM_MAX_DEPOSITS);
    gradsum_t *g = calloc(1, sizeof *g);
    if (!g)
        return shoal_fail(SHOAL_ERR_NOMEM, "gradsum: out of memory");
    g->lay = lay;
    shoal_err_t rc = s_canon_map(g);
    if (rc == SHOAL_OK) {
        g->micro = malloc(sizeof(float) * ((size_t)lay->n_params + 1));
        g->tops = malloc(sizeof(int64_t) * ((size_t)lay->n_tensors + 1));
        g->norm = malloc(sizeof(int64_t) * ((size_t)g->n_canon + 1));
        g->by_offset = malloc(sizeof(int) * ((size_t)lay->n_tensors + 1));
        g->xoff = malloc(sizeof(int64_t) * ((size_t)lay->n_tensors + 1));
        if (g->by_offset && g->xoff && (rc = s_offset_order(g)) != SHOAL_OK) {
            gradsum_destroy(&g);
            return rc;
        }
        if (!g->micro || !g->tops || !g->norm || !g->by_offset || !g->xoff ||
            xsum_vec_init(&g->xs, g->xoff, lay->n_tensors) != 0)
            rc = shoal_fail(SHOAL_ERR_NOMEM,
                            "gradsum: cannot allocate the exact sums of %lld "
                            "parameters (%lld bytes)",
                            (long long)lay->n_params, (long long)lay->n_params * 20);
    }
    if (rc != SHOAL_OK) {
        gradsum_destroy(&g);
        return rc;
    }
    *out = g;
    return SHOAL_OK;
}

void gradsum_destroy(gradsum_t **gp)
{
    gradsum_t *g = *gp;
    if (!g)
        return;
    xsum_vec_fini(&g->xs);
    free(g->micro);
    free(g->tops);
    free(g->canon);
    free(g->norm);
    free(g->by_offset);
    free(g->xoff);
    free(g);
    *gp = NULL;
}

void gradsum_begin(gradsum_t *g)
{
    xsum_vec_clear(&g->xs);
}

float *gradsum_micro_buffer(gradsum_t *g)
{
    memset(g->micro, 0, sizeof(float) * (size_t)g->lay->n_params);
    return g->micro;
}

float *gradsum_micro_buffer_current(gradsum_t *g)
{
    return g->micro;
}

shoal_err_t gradsum_micro_add(gradsum_t *g)
{
    if (xsum_vec_deposit(&g->xs, g->micro) != 0)
        return shoal_fail(SHOAL_ERR_STATE, "gradsum: more than %lld micro-batches in one step",
                          (long long)XSUM_MAX_DEPOSITS);
    return SHOAL_OK;
}

shoal_err_t gradsum_micro_add_range(gradsum_t *g, float *lo, float *hi)
{
    const int64_t a = lo - g->micro, b = hi - g->micro, n = g->lay->n_tensors;
    if (a < 0 || b > g->lay->n_params || a > b)
        return shoal_fail(SHOAL_ERR_STATE,
                          "gradsum: range [%lld, %lld) outside the micro-batch "
                          "buffer of %lld",
                          (long long)a, (long long)b, (long long)g->lay->n_params);
    /* the counters' tensors run by offset: the first at or after a, up to the last ending by b */
    int t0 = 0, t1;
    while (t0 < n && g->xoff[t0] < a)
        t0++;
    for (t1 = t0; t1 < n && g->xoff[t1 + 1] <= b;)
        t1++;
    if (t0 == t1 || g->xoff[t0] != a || g->xoff[t1] != b)
        return shoal_fail(SHOAL_ERR_STATE, "gradsum: [%lld, %lld) is not a run of whole tensors",
                          (long long)a, (long long)b);
    xsum_vec_deposit_tensors(&g->xs, g->micro, t0, t1);
    memset(lo, 0, sizeof(float) * (size_t)(b - a));
    return SHOAL_OK;
}

/* Sums the counters' tensors [t0, t1) over c (see gradsum_reduce). */
static shoal_err_t s_reduce_range(gradsum_t *g, comm_t *c, int t0, int t1, uint64_t step,
                                  float *out)
{
    if (t0 >= t1)
        return SHOAL_OK;
    if (c && comm_nranks(c) > 1) {
        const int64_t *off = g->xoff;
        memcpy(g->tops + t0, g->xs.top + t0, sizeof(int64_t) * (size_t)(t1 - t0));
        shoal_err_t rc = comm_allreduce_max_i64(c, g->tops + t0, (size_t)(t1 - t0), step);
        if (rc != SHOAL_OK)
            return rc;
        xsum_vec_align(&g->xs, g->tops, t0, t1);
        rc = comm_allreduce_sum_i64(c, g->xs.bins + 2 * off[t0], 2 * (size_t)(off[t1] - off[t0]),
                                    step);
        if (rc != SHOAL_OK)
            return rc;
    }
    xsum_vec_result(&g->xs, out, t0, t1);
    return SHOAL_OK;
}

shoal_err_t gradsum_reduce(gradsum_t *g, comm_t *shared, comm_t *experts, uint64_t step, float *out)
{
    shoal_err_t rc = s_reduce_range(g, shared, 0, g->first_expert, step, out);
    if (rc == SHOAL_OK)
        rc = s_reduce_range(g, experts, g->first_expert, g->lay->n_tensors, step, out);
    return rc;
}

static double s_tensor_ss(const gradsum_t *g, const float *grads, int i)
{
    return grad_sum_squares(grads + g->lay->offsets[i], model_tensor_numel(&g->lay->tensors[i]));
}

double gradsum_norm_local(const gradsum_t *g, const float *grads)
{
    /* the same additions, in the same order, as gradsum_norm_world's over the whole model */
    memset(g->norm, 0, sizeof(int64_t) * (size_t)g->n_canon);
    for (int i = 0; i < g->lay->n_tensors; i++)
        g->norm[g->canon[i]] = gradsum_bits(s_tensor_ss(g, grads, i));
    double ss = 0.0;
    for (int k = 0; k < g->n_canon; k++)
        ss += gradsum_double(g->norm[k]);
    return ss;
}

shoal_err_t gradsum_norm_world(gradsum_t *g, comm_t *world, const float *grads, int count_shared,
                               int count_experts, int has_loss, double *loss, uint64_t step,
                               double *norm_sq)
{
    memset(g->norm, 0, sizeof(int64_t) * ((size_t)g->n_canon + 1));
    for (int i = 0; i < g->lay->n_tensors; i++)
        if (g->lay->offsets[i] < g->lay->n_shared_params ? count_shared : count_experts)
            g->norm[g->canon[i]] = gradsum_bits(s_tensor_ss(g, grads, i));
    if (has_loss)
        g->norm[g->n_canon] = gradsum_bits(*loss);
    /* one cell holds each value, every other adds zero bits: the sum is that value exactly */
    if (world) {
        shoal_err_t rc = comm_allreduce_sum_i64(world, g->norm, (size_t)g->n_canon + 1, step);
        if (rc != SHOAL_OK)
            return rc;
    }
    double ss = 0.0;
    for (int k = 0; k < g->n_canon; k++)
        ss += gradsum_double(g->norm[k]);
    *norm_sq = ss;
    *loss = gradsum_double(g->norm[g->n_canon]);
    return SHOAL_OK;
}
