/* attention.c: causal MHA on the CPU. Per (sequence, head) the scores and the weighted sum are
 * GEMMs (kgemm) addressing q, k, v in place inside the fused qkv buffer (leading dimension 3d),
 * so there is no head transpose. FLOPs forward ≈ 8·M·d² (projections) + 4·B·T²·d (scores, pv). */
#include "attention.h"

#include <math.h>
#include <string.h>

#include "kgemm.h"
#include "kpar.h"
#include "rope.h"
#include "vexp.h"

/* The causal core (scores and p·v, per head) stays fp32 whatever s->prec says: its GEMMs are
 * small (dh wide), where oneDNN's bf16 call costs more than it saves (bench_bf16: 0.35–0.75 of
 * sgemm at dh 32), and in bf16 it moved test_train_bf16's worst step by 2.9% (0.19% with it in
 * fp32). The projections run in s->prec. */

/* Query rows per causal block: smaller blocks skip more of the masked upper triangle, larger
 * ones keep the GEMMs efficient. */
#define ATTN_QBLOCK 64

/* row[j] ← exp(row[j] − mx) for j < n; returns the sum (8 lanes, for the vectoriser). */
SHOAL_VECTOR_CLONES
static float s_exp_sum(float *restrict row, int n, float mx)
{
    float lane[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            row[j + k] = vexp(row[j + k] - mx);
            lane[k] += row[j + k];
        }
    float sum = 0.0f;
    for (; j < n; j++) {
        row[j] = vexp(row[j] - mx);
        sum += row[j];
    }
    for (int k = 0; k < 8; k++)
        sum += lane[k];
    return sum;
}

/* The causal core of (sequence, head) pairs [lo, hi): each pair reads its q, k, v and writes
 * its own P and o columns only, so pairs run on any thread (kpar) with the same results. */
typedef struct {
    const attention_shape_t *s;
    const float *qkv;
    float *p, *o;
} s_fwd_t;

static void s_forward_pairs(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_fwd_t *c = arg;
    const int T = c->s->T, d = c->s->d, H = c->s->H, dh = d / H, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    for (int64_t pair = lo; pair < hi; pair++) {
        const int b = (int)(pair / H), h = (int)(pair % H);
        const float *q = c->qkv + (size_t)b * T * ld + h * dh;
        const float *k = q + d, *v = q + 2 * d;
        float *pb = c->p + ((size_t)b * H + h) * T * T;
        float *ob = c->o + (size_t)b * T * d + h * dh;
        /* causal blocks: query rows [i0, i1) only need keys [0, i1) */
        for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
            const int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, nq = i1 - i0;
            float *pq = pb + (size_t)i0 * T;
            kgemm(KGEMM_FP32, 0, 1, nq, i1, dh, scale, q + (size_t)i0 * ld, ld, k, ld, 0.0f, pq,
                  T);
            for (int i = i0; i < i1; i++) {
                float *row = pb + (size_t)i * T;
                float mx = row[0];
                for (int j = 1; j <= i; j++)
                    mx = row[j] > mx ? row[j] : mx;
                const float inv = 1.0f / s_exp_sum(row, i + 1, mx);
                for (int j = 0; j <= i; j++)
                    row[j] *= inv;
                memset(row + i + 1, 0, sizeof(float) * (size_t)(T - i - 1));
            }
            /* o[i0:i1] = P[i0:i1, 0:i1] v[0:i1] */
            kgemm(KGEMM_FP32, 0, 0, nq, dh, i1, 1.0f, pq, T, v, ld, 0.0f, ob + (size_t)i0 * d, d);
        }
    }
}

void attention_forward(const attention_shape_t *s, const float *a, const float *w_qkv,
                       const float *w_o, const float *cos_t, const float *sin_t, float *qkv,
                       float *p, float *o, float *out)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    kgemm(s->prec, 0, 1, M, 3 * d, d, 1.0f, a, d, w_qkv, d, 0.0f, qkv, ld);
    rope_forward(qkv, B, T, H, dh, ld, cos_t, sin_t);
    rope_forward(qkv + d, B, T, H, dh, ld, cos_t, sin_t);
    s_fwd_t c = {s, qkv, p, o};
    kpar_for((int64_t)B * H, 1, 0, s_forward_pairs, &c);
    kgemm(s->prec, 0, 1, M, d, d, 1.0f, o, d, w_o, d, 0.0f, out, d);
}

/* The backward core of pairs [lo, hi): each pair writes its own dq, dk, dv columns; dP is
 * [T, T] scratch per thread (the caller's dp on the calling thread). */
typedef struct {
    const attention_shape_t *s;
    const float *qkv, *p, *dobuf;
    float *dqkv, *dp;
} s_bwd_t;

static void s_backward_pairs(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    const s_bwd_t *c = arg;
    const int T = c->s->T, d = c->s->d, H = c->s->H, dh = d / H, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)dh);
    float *dp = scratch ? scratch : c->dp;
    for (int64_t pair = lo; pair < hi; pair++) {
        const int b = (int)(pair / H), h = (int)(pair % H);
        const size_t base = (size_t)b * T * ld + h * dh;
        const float *q = c->qkv + base, *k = q + d, *v = q + 2 * d;
        float *dq = c->dqkv + base, *dk = dq + d, *dv = dq + 2 * d;
        const float *pb = c->p + ((size_t)b * H + h) * T * T;
        const float *dob = c->dobuf + (size_t)b * T * d + h * dh;
        /* the same causal blocks, last first: it covers every key, so it initialises dK, dV
         * (beta 0) and the earlier blocks accumulate */
        const int last = (T - 1) / ATTN_QBLOCK * ATTN_QBLOCK;
        for (int i0 = last; i0 >= 0; i0 -= ATTN_QBLOCK) {
            const int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, nq = i1 - i0;
            const float beta = i0 == last ? 0.0f : 1.0f;
            const float *pq = pb + (size_t)i0 * T;
            float *dpq = dp + (size_t)i0 * T;
            /* dP[i0:i1, 0:i1] = dO[i0:i1] v[0:i1]^T;  dV[0:i1] += P[i0:i1, 0:i1]^T dO[i0:i1] */
            kgemm(KGEMM_FP32, 0, 1, nq, i1, dh, 1.0f, dob + (size_t)i0 * d, d, v, ld, 0.0f, dpq,
                  T);
            kgemm(KGEMM_FP32, 1, 0, i1, dh, nq, 1.0f, pq, T, dob + (size_t)i0 * d, d, beta, dv,
                  ld);
            /* dS = P ⊙ (dP − rowsum(P ⊙ dP)), scaled here by 1/√dh for both q and k */
            for (int i = i0; i < i1; i++) {
                const float *prow = pb + (size_t)i * T;
                float *drow = dp + (size_t)i * T;
                float dot = 0.0f;
                for (int j = 0; j <= i; j++)
                    dot += prow[j] * drow[j];
                for (int j = 0; j <= i; j++)
                    drow[j] = scale * prow[j] * (drow[j] - dot);
                memset(drow + i + 1, 0, sizeof(float) * (size_t)(i1 - i - 1));
            }
            /* dQ[i0:i1] = dS K[0:i1];  dK[0:i1] += dS^T Q[i0:i1] */
            kgemm(KGEMM_FP32, 0, 0, nq, dh, i1, 1.0f, dpq, T, k, ld, 0.0f, dq + (size_t)i0 * ld,
                  ld);
            kgemm(KGEMM_FP32, 1, 0, i1, dh, nq, 1.0f, dpq, T, q + (size_t)i0 * ld, ld, beta, dk,
                  ld);
        }
    }
}

void attention_backward(const attention_shape_t *s, const float *a, const float *w_qkv,
                        const float *w_o, const float *cos_t, const float *sin_t,
                        const float *qkv, const float *p, const float *o, const float *dout,
                        float *dobuf, float *dqkv, float *dp, float *da, float *dw_qkv_acc,
                        float *dw_o_acc)
{
    const int B = s->B, T = s->T, d = s->d, H = s->H, dh = d / H, M = B * T, ld = 3 * d;
    /* dWo [d, d] += dout^T o;  do [M, d] = dout Wo */
    kgemm(s->prec, 1, 0, d, d, M, 1.0f, dout, d, o, d, 1.0f, dw_o_acc, d);
    kgemm(s->prec, 0, 0, M, d, d, 1.0f, dout, d, w_o, d, 0.0f, dobuf, d);
    s_bwd_t c = {s, qkv, p, dobuf, dqkv, dp};
    kpar_for((int64_t)B * H, 1, sizeof(float) * (size_t)T * T, s_backward_pairs, &c);
    rope_backward(dqkv, B, T, H, dh, ld, cos_t, sin_t);
    rope_backward(dqkv + d, B, T, H, dh, ld, cos_t, sin_t);
    /* dWqkv [3d, d] += dqkv^T a;  da [M, d] = dqkv Wqkv */
    kgemm(s->prec, 1, 0, 3 * d, d, M, 1.0f, dqkv, ld, a, d, 1.0f, dw_qkv_acc, d);
    kgemm(s->prec, 0, 0, M, d, 3 * d, 1.0f, dqkv, ld, w_qkv, d, 0.0f, da, d);
}
