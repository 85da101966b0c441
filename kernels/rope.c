/* rope.c: rotate-half rotary position embedding (MODEL.md), in place on q/k rows. */
#include "rope.h"

#include <math.h>

#include "kpar.h"
#include "vexp.h" /* SHOAL_VECTOR_CLONES */
void rope_tables(int T, int dh, double theta, float *cos_t, float *sin_t)
{
    int half = dh / 2;
    for (int i = 0; i < half; i++) {
        /* same expression as the oracle: theta ** (-2.0 * i / dh), then t * inv, in double */
        double inv = pow(theta, -2.0 * (double)i / (double)dh);
        for (int t = 0; t < T; t++) {
            double phi = (double)t * inv;
            cos_t[(size_t)t * half + i] = (float)cos(phi);
            sin_t[(size_t)t * half + i] = (float)sin(phi);
        }
    }
}

typedef struct {
    float *x;
    int T, H, dh, ld;
    const float *cos_t, *sin_t;
    float sgn;
} s_rope_t;

/* Token rows [r0, r1) (row r is position r mod T); sgn = +1: forward rotation by φ; sgn = −1:
 * the transpose (rotation by −φ). Rows are independent: ranges of them run on the kernels'
 * threads (kpar), the same bits at any thread count. */
SHOAL_VECTOR_CLONES
static void s_rope_rows(void *arg, int64_t r0, int64_t r1, void *scratch)
{
    (void)scratch;
    const s_rope_t *a = arg;
    const int T = a->T, H = a->H, dh = a->dh, half = dh / 2;
    const float sgn = a->sgn;
    for (int64_t r = r0; r < r1; r++) {
        const int t = (int)(r % T);
        const float *restrict c = a->cos_t + (size_t)t * half;
        const float *restrict s = a->sin_t + (size_t)t * half;
        float *row = a->x + (size_t)r * (size_t)a->ld;
        for (int h = 0; h < H; h++) {
            float *restrict x1 = row + (size_t)h * dh;
            float *restrict x2 = x1 + half;
            for (int i = 0; i < half; i++) {
                float xa = x1[i], e = x2[i], si = sgn * s[i];
                x1[i] = xa * c[i] - e * si;
                x2[i] = e * c[i] + xa * si;
            }
        }
    }
}

static void s_rope_apply(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                         const float *sin_t, float sgn)
{
    s_rope_t a = {x, T, H, dh, ld, cos_t, sin_t, sgn};
    const int64_t width = (int64_t)H * dh > 0 ? (int64_t)H * dh : 1;
    kpar_for((int64_t)B * T, width >= 16384 ? 1 : 16384 / width, 0, s_rope_rows, &a);
}

void rope_forward(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                  const float *sin_t)
{
    s_rope_apply(x, B, T, H, dh, ld, cos_t, sin_t, 1.0f);
}

void rope_backward(float *dx, int B, int T, int H, int dh, int ld, const float *cos_t,
                   const float *sin_t)
{
    s_rope_apply(dx, B, T, H, dh, ld, cos_t, sin_t, -1.0f);
}
