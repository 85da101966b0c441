/* swiglu.c: a = silu(gate) ⊙ up on fused [M, 2f] rows, and its gradient. Rows are independent:
 * ranges of them run on the kernels' threads (kpar), with the same bits for any thread count. */
#include "swiglu.h"

#include "kpar.h"
#include "vexp.h"

/* rows per thread at least this many elements: below, waking a thread costs more than it saves */
#define S_GRAIN_ELEMS 16384
/* the backward prefetches the gu row this many rows ahead */
#define S_AHEAD 2

typedef struct {
    const float *gu, *da;
    int f;
    float *out; /* a (forward) or dgu (backward) */
} s_job_t;

static int64_t s_grain(int f)
{
    return f >= S_GRAIN_ELEMS ? 1 : S_GRAIN_ELEMS / (f > 0 ? f : 1);
}

SHOAL_VECTOR_CLONES_512
static void s_forward_rows(const float *gu, int64_t m0, int64_t m1, int f, float *a)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *restrict gr = gu + (size_t)m * 2 * f;
        const float *restrict ur = gr + f;
        float *restrict ar = a + (size_t)m * f;
        for (int j = 0; j < f; j++) {
            float z = gr[j];
            ar[j] = z / (1.0f + vexp(-z)) * ur[j];
        }
    }
}

static void s_forward_job(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_job_t *j = arg;
    s_forward_rows(j->gu, lo, hi, j->f, j->out);
}

void swiglu_forward(const float *gu, int M, int f, float *a)
{
    s_job_t j = {gu, NULL, f, a};
    kpar_for(M, s_grain(f), 0, s_forward_job, &j);
}

/* silu'(z) = σ(z)(1 + z(1 − σ(z))). */
SHOAL_VECTOR_CLONES_512
static void s_backward_rows(const float *gu, const float *da, int64_t m0, int64_t m1, int f,
                            float *dgu)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *restrict gr = gu + (size_t)m * 2 * f;
        const float *restrict ur = gr + f;
        const float *restrict dar = da + (size_t)m * f;
        float *restrict dg = dgu + (size_t)m * 2 * f;
        if (m + S_AHEAD < m1) /* gu was saved by the forward, long out of cache */
            for (int j = 0; j < 2 * f; j += 16)
                __builtin_prefetch(gu + (size_t)(m + S_AHEAD) * 2 * f + j);
        float *restrict du = dg + f;
        for (int j = 0; j < f; j++) {
            float z = gr[j];
            float sig = 1.0f / (1.0f + vexp(-z));
            du[j] = dar[j] * z * sig;
            dg[j] = dar[j] * ur[j] * sig * (1.0f + z * (1.0f - sig));
        }
    }
}

static void s_backward_job(void *arg, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_job_t *j = arg;
    s_backward_rows(j->gu, j->da, lo, hi, j->f, j->out);
}

void swiglu_backward(const float *gu, const float *da, int M, int f, float *dgu)
{
    s_job_t j = {gu, da, f, dgu};
    kpar_for(M, s_grain(f), 0, s_backward_job, &j);
}
