/* rmsnorm.c: RMSNorm forward/backward over rows of [M, d]. Row reductions use 8 independent
 * float lanes so that they vectorise without fast-math and stay deterministic. */
#include "rmsnorm.h"

#include <math.h>

#include "kpar.h"
#include "vexp.h" /* SHOAL_VECTOR_CLONES (on the backward only: measured slower on the forward) */
#define RMS_LANES 8

/* Σ_j a_j·b_j over n floats, laned (fixed summation order for every call). */
static float s_dot(const float *restrict a, const float *restrict b, int n)
{
    float acc[RMS_LANES] = {0};
    int j = 0;
    for (; j + RMS_LANES <= n; j += RMS_LANES)
        for (int l = 0; l < RMS_LANES; l++)
            acc[l] += a[j + l] * b[j + l];
    for (; j < n; j++)
        acc[0] += a[j] * b[j];
    float s = 0.0f;
    for (int l = 0; l < RMS_LANES; l++)
        s += acc[l];
    return s;
}

/* Rows [m0, m1) of the forward, after adding res to them when res is not NULL. Rows are
 * independent: ranges run on the kernels' threads (kpar), the same bits at any thread count. */
typedef struct {
    float *x; /* written only with res */
    const float *res, *g;
    int d;
    float eps, *y, *rstd;
} s_fwd_t;

static void s_forward_rows(void *arg, int64_t m0, int64_t m1, void *scratch)
{
    (void)scratch;
    const s_fwd_t *a = arg;
    const int d = a->d;
    const float *g = a->g;
    if (a->res)
        for (size_t i = (size_t)m0 * d; i < (size_t)m1 * d; i++)
            a->x[i] += a->res[i];
    for (int64_t m = m0; m < m1; m++) {
        const float *restrict xr = a->x + (size_t)m * d;
        float *restrict yr = a->y + (size_t)m * d;
        float r = 1.0f / sqrtf(s_dot(xr, xr, d) / (float)d + a->eps);
        for (int j = 0; j < d; j++)
            yr[j] = (xr[j] * r) * g[j];
        if (a->rstd)
            a->rstd[m] = r;
    }
}

static int64_t s_grain(int d)
{
    return d >= 16384 ? 1 : 16384 / (d > 0 ? d : 1);
}

void rmsnorm_forward(const float *x, const float *g, int M, int d, float eps, float *y, float *rstd)
{
    s_fwd_t a = {(float *)x, NULL, g, d, eps, y, rstd}; /* x is only read without res */
    kpar_for(M, s_grain(d), 0, s_forward_rows, &a);
}

void rmsnorm_residual_forward(float *x, const float *res, const float *g, int M, int d, float eps,
                              float *y, float *rstd)
{
    s_fwd_t a = {x, res, g, d, eps, y, rstd};
    kpar_for(M, s_grain(d), 0, s_forward_rows, &a);
}

/* y_j = x_j r g_j, r = (Σx²/d + eps)^(-1/2), ∂r/∂x_k = −r³ x_k / d, so
 * dx_k = r g_k dy_k − x_k (r³/d) Σ_j dy_j g_j x_j  and  dg_j = dy_j x_j r. */
SHOAL_VECTOR_CLONES
void rmsnorm_backward(const float *x, const float *g, const float *rstd, const float *dy, int M,
                      int d, float *dx_acc, float *dg_acc)
{
    for (int m = 0; m < M; m++) {
        const float *restrict xr = x + (size_t)m * d;
        const float *restrict dyr = dy + (size_t)m * d;
        float *restrict dxr = dx_acc + (size_t)m * d;
        float *restrict dgr = dg_acc;
        float r = rstd[m];
        float acc[RMS_LANES] = {0};
        int j = 0;
        for (; j + RMS_LANES <= d; j += RMS_LANES)
            for (int l = 0; l < RMS_LANES; l++)
                acc[l] += dyr[j + l] * g[j + l] * xr[j + l];
        for (; j < d; j++)
            acc[0] += dyr[j] * g[j] * xr[j];
        float s = 0.0f;
        for (int l = 0; l < RMS_LANES; l++)
            s += acc[l];
        float c = s * r * r * r / (float)d;
        for (j = 0; j < d; j++) {
            dxr[j] += r * g[j] * dyr[j] - xr[j] * c;
            dgr[j] += dyr[j] * xr[j] * r;
        }
    }
}
