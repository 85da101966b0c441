/* cross_entropy.c: per-row max-subtracted logsumexp, loss summed in double, gradient
 * scale·(softmax − onehot) written (possibly in place over the logits). */
#include "cross_entropy.h"

#include <math.h>

#define CE_LANES 8

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

double cross_entropy_forward_backward(const float *logits, const int32_t *tgt, int M, int V,
                                      float scale, float *dlogits)
{
    double total = 0.0;
    for (int m = 0; m < M; m++) {
        const float *z = logits + (size_t)m * V;
        float mx = s_row_max(z, V);
        float zt = z[tgt[m]]; /* read before dlogits (which may alias z) is written */
        double sum = 0.0;
        if (dlogits) {
            /* no restrict: dlogits may be the logits buffer itself */
            float *dz = dlogits + (size_t)m * V;
            for (int j = 0; j < V; j++) {
                float e = expf(z[j] - mx);
                dz[j] = e;
                sum += (double)e;
            }
            float k = (float)((double)scale / sum);
            for (int j = 0; j < V; j++)
                dz[j] *= k;
            dz[tgt[m]] -= scale;
        } else {
            for (int j = 0; j < V; j++)
                sum += (double)expf(z[j] - mx);
        }
        total += log(sum) + (double)mx - (double)zt;
    }
    return total;
}
