/* optim.c: AdamW (torch.optim.AdamW operation order), global-norm clipping, LR schedule and
 * the aux-loss-free balancing bias update (MODEL.md "Training step"). */
#include "optim.h"

#include <math.h>

#include "kpar.h"
#include "vexp.h" /* SHOAL_VECTOR_CLONES */
#define OPT_LANES 8

/* Scalars are formed as PyTorch forms them: Python doubles, rounded to float when they meet a
 * float tensor; the per-element arithmetic is float in the same order as the oracle's
 *   p.mul_(1-lr*wd); m.mul_(b1).add_(g, alpha=1-b1); v.mul_(b2).addcmul_(g, g, value=1-b2);
 *   denom = (v.sqrt() / sqrt(bc2)).add_(eps); p.addcdiv_(m, denom, value=-lr/bc1). */
typedef struct {
    float *p, *m, *v;
    const float *g;
    float lr;
    int decay;
    int64_t t;
    const adamw_hparams_t *hp;
} s_adamw_t;

/* elements [lo, hi) of adamw_update */
SHOAL_VECTOR_CLONES
static void s_adamw_range(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_adamw_t *a = arg;
    const adamw_hparams_t *hp = a->hp;
    const float lr = a->lr;
    const int decay = a->decay;
    const int64_t t = a->t, n = hi - lo;
    double b1 = hp->beta1, b2 = hp->beta2;
    double bc1 = 1.0 - pow(b1, (double)t);
    double bc2 = 1.0 - pow(b2, (double)t);
    const float b1f = hp->beta1, b2f = hp->beta2, eps = hp->eps;
    const float omb1 = (float)(1.0 - b1), omb2 = (float)(1.0 - b2);
    const float sbc2 = (float)sqrt(bc2);
    const float step = (float)(-(double)lr / bc1);
    /* ×1.0f is exact, so one branch-free loop serves both cases */
    const float keep = decay ? (float)(1.0 - (double)lr * (double)hp->weight_decay) : 1.0f;
    float *restrict pp = a->p + lo;
    const float *restrict gg = a->g + lo;
    float *restrict mm = a->m + lo;
    float *restrict vv = a->v + lo;
    for (int64_t i = 0; i < n; i++) {
        float pi = pp[i] * keep;
        float gi = gg[i];
        float mi = mm[i] * b1f + omb1 * gi;
        float vi = vv[i] * b2f + omb2 * gi * gi;
        mm[i] = mi;
        vv[i] = vi;
        float denom = sqrtf(vi) / sbc2 + eps;
        pp[i] = pi + step * mi / denom;
    }
}

/* elementwise: ranges on the kernels' threads (kpar), the same bits at any thread count */
void adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr, int decay,
                  int64_t t, const adamw_hparams_t *hp)
{
    s_adamw_t a = {p, m, v, g, lr, decay, t, hp};
    kpar_for(n, 32768, 0, s_adamw_range, &a);
}

SHOAL_VECTOR_CLONES
double grad_sum_squares(const float *g, int64_t n)
{
    double acc[OPT_LANES] = {0};
    int64_t i = 0;
    for (; i + OPT_LANES <= n; i += OPT_LANES)
        for (int l = 0; l < OPT_LANES; l++)
            acc[l] += (double)g[i + l] * (double)g[i + l];
    for (; i < n; i++)
        acc[0] += (double)g[i] * (double)g[i];
    double s = 0.0;
    for (int l = 0; l < OPT_LANES; l++)
        s += acc[l];
    return s;
}

double clip_coefficient(double total_norm, double max_norm)
{
    double coef = max_norm / (total_norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

SHOAL_VECTOR_CLONES
void grad_scale(float *g, int64_t n, float coef)
{
    float *restrict gg = g;
    for (int64_t i = 0; i < n; i++)
        gg[i] *= coef;
}

void moe_bias_update(float *bias, const int64_t *counts, int N, float gamma)
{
    int64_t total = 0;
    for (int i = 0; i < N; i++)
        total += counts[i];
    for (int i = 0; i < N; i++) {
        int64_t diff = total - (int64_t)N * counts[i];
        float sign = diff > 0 ? 1.0f : (diff < 0 ? -1.0f : 0.0f);
        bias[i] = bias[i] + gamma * sign;
    }
}

void adamw_update_segments(float *p, float *g, float *m, float *v, const adamw_segment_t *segs,
                           int n_segs, float lr, float gcoef, int64_t t,
                           const adamw_hparams_t *hp)
{
    for (int i = 0; i < n_segs; i++) {
        const int64_t o = segs[i].start;
        if (gcoef < 1.0f)
            grad_scale(g + o, segs[i].n, gcoef);
        adamw_update(p + o, g + o, m + o, v + o, segs[i].n, lr, segs[i].decay, t, hp);
    }
}
