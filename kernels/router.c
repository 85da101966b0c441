/* router.c: sigmoid routing with group-limited top-K selection. N and K are small (tens), so
 * selection is K linear scans per token with strict comparisons (lower index wins ties). */
#include "router.h"

#include <math.h>
#include <string.h>

#include "model_config.h"

void router_sigmoid(float *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        s[i] = 1.0f / (1.0f + expf(-s[i]));
}

/* Index of the largest eligible value (lowest index among equals), -1 if none. */
static int s_argmax(const float *v, const unsigned char *eligible, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (eligible[i] && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

void router_select(const router_config_t *c, const float *s, const float *bias, int M,
                   int32_t *idx)
{
    const int N = c->N, K = c->K, G = c->n_group, per = N / G;
    float sb[MODEL_MAX_EXPERTS], gscore[MODEL_MAX_EXPERTS];
    unsigned char eligible[MODEL_MAX_EXPERTS], gfree[MODEL_MAX_EXPERTS];
    for (int m = 0; m < M; m++) {
        const float *sm = s + (size_t)m * N;
        for (int i = 0; i < N; i++)
            sb[i] = sm[i] + bias[i];
        memset(eligible, 1, (size_t)N);
        if (G > 1) {
            for (int g = 0; g < G; g++) {
                const float *v = sb + g * per;
                float a = v[0], b = v[1];
                if (b > a) {
                    float t = a;
                    a = b;
                    b = t;
                }
                for (int i = 2; i < per; i++) {
                    if (v[i] > a) {
                        b = a;
                        a = v[i];
                    } else if (v[i] > b) {
                        b = v[i];
                    }
                }
                gscore[g] = a + b;
                gfree[g] = 1;
            }
            memset(eligible, 0, (size_t)N);
            for (int t = 0; t < c->topk_group; t++) {
                int g = s_argmax(gscore, gfree, G);
                gfree[g] = 0;
                memset(eligible + g * per, 1, (size_t)per);
            }
        }
        for (int k = 0; k < K; k++) {
            int e = s_argmax(sb, eligible, N);
            eligible[e] = 0;
            idx[(size_t)m * K + k] = e;
        }
    }
}

void router_gates_forward(const router_config_t *c, const float *s, const int32_t *idx, int M,
                          float *gates)
{
    const int N = c->N, K = c->K;
    for (int m = 0; m < M; m++) {
        const float *sm = s + (size_t)m * N;
        const int32_t *im = idx + (size_t)m * K;
        float sum = 0.0f;
        for (int k = 0; k < K; k++)
            sum += sm[im[k]];
        for (int k = 0; k < K; k++)
            gates[(size_t)m * K + k] = c->rsf * (sm[im[k]] / sum);
    }
}

void router_gates_backward(const router_config_t *c, const float *s, const int32_t *idx,
                           const float *dgates, int M, float *dlogits)
{
    const int N = c->N, K = c->K;
    memset(dlogits, 0, sizeof(float) * (size_t)M * N);
    for (int m = 0; m < M; m++) {
        const float *sm = s + (size_t)m * N;
        const int32_t *im = idx + (size_t)m * K;
        const float *dg = dgates + (size_t)m * K;
        float sum = 0.0f, dot = 0.0f;
        for (int k = 0; k < K; k++) {
            sum += sm[im[k]];
            dot += dg[k] * sm[im[k]];
        }
        /* g_k = rsf·s_k/S  ⇒  ∂L/∂s_j = rsf/S · (dg_j − Σ_k dg_k s_k / S) */
        const float inv = 1.0f / sum;
        for (int k = 0; k < K; k++) {
            const int e = im[k];
            const float ds = c->rsf * inv * (dg[k] - dot * inv);
            dlogits[(size_t)m * N + e] = ds * sm[e] * (1.0f - sm[e]);
        }
    }
}
