/* grad_sanity.c: the per-step accept/reject decision over data-parallel replicas and the
 * coordinate-wise trimmed mean (see grad_sanity.h). */
#include "grad_sanity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void grad_sanity_reset(grad_sanity_t *s, double k, uint64_t generation)
{
    memset(s, 0, sizeof *s);
    s->k = k;
    s->generation = generation;
}

static int s_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The lower median: with two replicas, one of them honest, the honest norm is not averaged
 * with a hundredfold one. */
static double s_lower_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp_double);
    return v[(n - 1) / 2];
}

shoal_err_t grad_sanity_decide(grad_sanity_t *s, const grad_report_t *rep, int n,
                               uint64_t *rejected, char *why, size_t cap)
{
    *rejected = 0;
    if (cap)
        why[0] = 0;
    if (n < 1 || n > GRAD_SANITY_MAX_REPLICAS)
        return shoal_fail(SHOAL_ERR_INVALID, "gradient sanity: %d replicas (1 to %d)", n,
                          GRAD_SANITY_MAX_REPLICAS);
    if (s->k <= 0)
        return SHOAL_OK;
    double pool[GRAD_SANITY_WINDOW + GRAD_SANITY_MAX_REPLICAS];
    int np = 0, with_data = 0;
    for (int i = 0; i < s->n_hist; i++)
        pool[np++] = s->hist[i];
    for (int i = 0; i < n; i++)
        if (rep[i].micro > 0 && rep[i].finite && isfinite(rep[i].norm))
            pool[np++] = rep[i].norm;
    /* the norm test needs a reference: three replicas this step, or a history; two honest
     * replicas alone differ by more than k now and then (one micro-batch of outliers) */
    const int n_step = np - s->n_hist;
    const int norm_test = n_step >= 3 || s->n_hist >= GRAD_SANITY_MIN_HISTORY;
    /* an outlier is measured against its peers of the same step too: when every replica's norm
     * rises together (a loss spike, a new data shard) that is the run's, not an attacker's, and
     * clipping already bounds it; a lone replica has no peers to be an outlier among */
    double step_norms[GRAD_SANITY_MAX_REPLICAS];
    memcpy(step_norms, pool + s->n_hist, (size_t)n_step * sizeof *step_norms);
    const double step_ref = n_step >= 2 ? s_lower_median(step_norms, n_step) : 0.0;
    const double ref = np && norm_test && step_ref > 0 ? s_lower_median(pool, np) : 0.0;
    for (int i = 0; i < n; i++) {
        if (rep[i].micro <= 0)
            continue;
        with_data++;
        int bad = 0;
        if (!rep[i].finite || !isfinite(rep[i].norm)) {
            bad = 1;
            if (cap && !why[0])
                snprintf(why, cap, "replica %d: non-finite gradient", i);
        } else if (ref > 0 && rep[i].norm > s->k * ref && rep[i].norm > s->k * step_ref) {
            bad = 1;
            if (cap && !why[0])
                snprintf(why, cap, "replica %d: gradient norm %.4g > %g x running median %.4g", i,
                         rep[i].norm, s->k, ref);
        }
        if (bad)
            *rejected |= 1ull << i;
    }
    int accepted = 0;
    for (int i = 0; i < n; i++)
        if (rep[i].micro > 0 && !(*rejected >> i & 1))
            accepted++;
    if (with_data > 0 && accepted == 0)
        return shoal_fail(SHOAL_ERR_NUMERIC, "gradient sanity: every replica rejected (%s)",
                          cap ? why : "");
    for (int i = 0; i < n; i++)
        if (rep[i].micro > 0 && !(*rejected >> i & 1)) {
            s->hist[s->next] = rep[i].norm;
            s->next = (s->next + 1) % GRAD_SANITY_WINDOW;
            if (s->n_hist < GRAD_SANITY_WINDOW)
                s->n_hist++;
        }
    return SHOAL_OK;
}

void grad_trimmed_mean(const float *rows, int n_rows, size_t ld, int64_t n, const int *use,
                       uint64_t rejected, double trim, double *scratch, float *out)
{
    for (int64_t j = 0; j < n; j++) {
        int m = 0;
        for (int i = 0; i < n_rows; i++)
            if (use[i] && !(rejected >> i & 1))
                scratch[m++] = rows[(size_t)i * ld + (size_t)j];
        if (m == 0) {
            out[j] = 0.0f;
            continue;
        }
        qsort(scratch, (size_t)m, sizeof *scratch, s_cmp_double);
        const int cut = (int)floor(trim * m);
        double sum = 0.0;
        for (int i = cut; i < m - cut; i++)
            sum += scratch[i];
        out[j] = (float)(sum / (m - 2 * cut));
    }
}
