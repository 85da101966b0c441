/* cross_entropy.c: per-row max-subtracted logsumexp, loss summed in double, gradient
 * scale·(softmax − onehot) written (possibly in place over the logits). The exp uses vexp and
 * the row sums use 8 double lanes so that every loop vectorises. */
#include "cross_entropy.h"

#include <math.h>

#include "vexp.h"

#define CE_LANES 8

SHOAL_VECTOR_CLONES
static float s_row_max(const float *restrict z, int V)
{
    float mx[CE_LANES];
    int j = 0;
    for (int l = 0; l < CE_LANES; l++)
        mx[l] = z[0];
    for (; j + CE_LANES <= V; j += CE_LANES)
        for (int l = 0; l < CE_LANES; l++)
            mx[l] = z[j + l] > mx[l] ? z[j + l] : mx[l];
    for (; j < V; j++)
        mx[0] = z[j] > mx[0] ? z[j] : mx[0];
    float r = mx[0];
    for (int l = 1; l < CE_LANES; l++)
        r = mx[l] > r ? mx[l] : r;
    return r;
}

/* Σ_j exp(z_j − mx) in double, 8 double lanes; e (distinct from z) receives the exps. */
SHOAL_VECTOR_CLONES
static double s_exp_row(const float *restrict z, int V, float mx, float *restrict e)
{
    double acc[CE_LANES] = {0};
    int j = 0;
    for (; j + CE_LANES <= V; j += CE_LANES)
        for (int l = 0; l < CE_LANES; l++) {
            float v = vexp(z[j + l] - mx);
            e[j + l] = v;
            acc[l] += (double)v;
        }
    for (; j < V; j++) {
        float v = vexp(z[j] - mx);
        e[j] = v;
        acc[0] += (double)v;
    }
    double s = 0.0;
    for (int l = 0; l < CE_LANES; l++)
        s += acc[l];
    return s;
}

/* The same in place (x ← exp(x − mx)): a separate function because a may-alias pair would be
 * vectorised only behind a runtime overlap check that an in-place call always fails. */
SHOAL_VECTOR_CLONES
static double s_exp_row_inplace(float *restrict x, int V, float mx)
{
    double acc[CE_LANES] = {0};
    int j = 0;
    for (; j + CE_LANES <= V; j += CE_LANES)
        for (int l = 0; l < CE_LANES; l++) {
            float v = vexp(x[j + l] - mx);
            x[j + l] = v;
            acc[l] += (double)v;
        }
    for (; j < V; j++) {
        float v = vexp(x[j] - mx);
        x[j] = v;
        acc[0] += (double)v;
    }
    double s = 0.0;
    for (int l = 0; l < CE_LANES; l++)
        s += acc[l];
    return s;
}

/* Σ_j exp(z_j − mx) in double without storing the exps. */
SHOAL_VECTOR_CLONES
static double s_exp_sum(const float *restrict z, int V, float mx)
{
    double acc[CE_LANES] = {0};
    int j = 0;
    for (; j + CE_LANES <= V; j += CE_LANES)
        for (int l = 0; l < CE_LANES; l++)
            acc[l] += (double)vexp(z[j + l] - mx);
    for (; j < V; j++)
        acc[0] += (double)vexp(z[j] - mx);
    double s = 0.0;
    for (int l = 0; l < CE_LANES; l++)
        s += acc[l];
    return s;
}

double cross_entropy_forward_backward(const float *logits, const int32_t *tgt, int M, int V,
                                      float scale, float *dlogits)
{
    double total = 0.0;
    for (int m = 0; m < M; m++) {
        const float *z = logits + (size_t)m * V;
        float mx = s_row_max(z, V);
        float zt = z[tgt[m]]; /* read before dlogits (which may alias z) is written */
        float *dz = dlogits ? dlogits + (size_t)m * V : NULL;
        double sum = !dz       ? s_exp_sum(z, V, mx)
                     : dz == z ? s_exp_row_inplace(dz, V, mx)
                               : s_exp_row(z, V, mx, dz);
        if (dz) {
            float k = (float)((double)scale / sum);
            for (int j = 0; j < V; j++)
                dz[j] *= k;
            dz[tgt[m]] -= scale;
        }
        total += log(sum) + (double)mx - (double)zt;
    }
    return total;
}
