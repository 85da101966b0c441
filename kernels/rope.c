/* rope.c: rotate-half rotary position embedding (MODEL.md), in place on q/k rows. */
#include "rope.h"

#include <math.h>

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

/* sgn = +1: forward rotation by φ; sgn = −1: the transpose (rotation by −φ). */
SHOAL_VECTOR_CLONES
static void s_rope_apply(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                         const float *sin_t, float sgn)
{
    int half = dh / 2;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *restrict c = cos_t + (size_t)t * half;
            const float *restrict s = sin_t + (size_t)t * half;
            float *row = x + ((size_t)b * T + t) * (size_t)ld;
            for (int h = 0; h < H; h++) {
                float *restrict x1 = row + (size_t)h * dh;
                float *restrict x2 = x1 + half;
                for (int i = 0; i < half; i++) {
                    float a = x1[i], e = x2[i], si = sgn * s[i];
                    x1[i] = a * c[i] - e * si;
                    x2[i] = e * c[i] + a * si;
                }
            }
        }
    }
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
