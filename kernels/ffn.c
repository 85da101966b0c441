/* ffn.c: SwiGLU FFN forward/backward as three GEMMs (kgemm) each way plus the fused activation.
 * FLOPs forward 6·M·d·f, backward 12·M·d·f. */
#include "ffn.h"

#include "kgemm.h"
#include "swiglu.h"

void ffn_forward(kgemm_prec_t prec, const float *x, int M, int d, int f, const float *w_gu,
                 const float *w_d, float *gu, float *a, float *y, float beta)
{
    if (M == 0)
        return;
    /* gu [M, 2f] = x [M, d] · w_gu^T */
    kgemm(prec, 0, 1, M, 2 * f, d, 1.0f, x, d, w_gu, d, 0.0f, gu, 2 * f);
    swiglu_forward(gu, M, f, a);
    /* y [M, d] = a [M, f] · w_d^T ([d, f]) */
    kgemm(prec, 0, 1, M, d, f, 1.0f, a, f, w_d, f, beta, y, d);
}

void ffn_backward(kgemm_prec_t prec, const float *x, int M, int d, int f, const float *w_gu,
                  const float *w_d, const float *gu, const float *a, const float *dy, float *dgu,
                  float *da, float *dx_acc, float dx_beta, float *dw_gu_acc, float *dw_d_acc)
{
    if (M == 0) {
        return;
    }
    /* dw_d [d, f] += dy^T [d, M] · a [M, f] */
    kgemm(prec, 1, 0, d, f, M, 1.0f, dy, d, a, f, 1.0f, dw_d_acc, f);
    /* da [M, f] = dy [M, d] · w_d [d, f] */
    kgemm(prec, 0, 0, M, f, d, 1.0f, dy, d, w_d, f, 0.0f, da, f);
    swiglu_backward(gu, da, M, f, dgu);
    /* dw_gu [2f, d] += dgu^T [2f, M] · x [M, d] */
    kgemm(prec, 1, 0, 2 * f, d, M, 1.0f, dgu, 2 * f, x, d, 1.0f, dw_gu_acc, d);
    /* dx [M, d] (+)= dgu [M, 2f] · w_gu [2f, d] */
    kgemm(prec, 0, 0, M, d, 2 * f, 1.0f, dgu, 2 * f, w_gu, d, dx_beta, dx_acc, d);
}
