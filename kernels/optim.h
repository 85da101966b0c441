/* optim.h: the optimizer step pieces of MODEL.md: AdamW (PyTorch semantics), global-norm
 * clipping (torch clip_grad_norm_), the LR schedule, and the aux-loss-free bias update. */
#ifndef SHOAL_KERNELS_OPTIM_H
#define SHOAL_KERNELS_OPTIM_H
#include "kernels_common.h"
#include "lr_schedule.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
    float beta1, beta2, eps, weight_decay;
} adamw_hparams_t;

/* One AdamW update of n elements at optimizer step t (1-based):
 *   if decay: p ← p − lr·wd·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
 *   p ← p − (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps).
 * `decay` is 1 for 2-D tensors, 0 otherwise. */
void adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr, int decay,
                  int64_t t, const adamw_hparams_t *hp);

/* Σ g² over n elements, accumulated in double (for the global norm across tensors/ranks). */
double grad_sum_squares(const float *g, int64_t n);

/* torch clip_grad_norm_: coef = max_norm/(norm + 1e-6); returns coef if < 1 else 1. */
double clip_coefficient(double total_norm, double max_norm);

/* g ← g · coef. */
void grad_scale(float *g, int64_t n, float coef);

/* lr_at: the LR schedule (common/lr_schedule.h, shared with the tools that never train). */

/* b_i ← b_i + γ·sign(c̄ − c_i) with c̄ the mean of counts, the sign evaluated exactly in
 * integers (sign(Σc − N·c_i)), sign(0) = 0. */
void moe_bias_update(float *bias, const int64_t *counts, int N, float gamma);

/* A range of the flat parameter array that AdamW updates with one decay flag: elements
 * [start, start + n); `packed` is the count of elements in the segments before it. */
typedef struct {
    int64_t start, n, packed;
    int decay;
} adamw_segment_t;

/* The optimizer step of a whole flat array in one pass: for each segment, g is first scaled by
 * gcoef when gcoef < 1 (grad_scale, in place), then adamw_update(segment). What the CPU trainer
 * does tensor by tensor, as one call. */
void adamw_update_segments(float *p, float *g, float *m, float *v, const adamw_segment_t *segs,
                           int n_segs, float lr, float gcoef, int64_t t,
                           const adamw_hparams_t *hp);
#ifdef SHOAL_HAVE_CUDA
/* Same scalars and element formula as adamw_update (hp is a host pointer). */
shoal_err_t adamw_update_cuda(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                              int decay, int64_t t, const adamw_hparams_t *hp,
                              cudaStream_t stream);
/* adamw_update_segments in one launch: segs is a device array of n_segs (sorted by packed),
 * n_packed = Σ n. g is read, not scaled in place; the element results are bitwise those of
 * adamw_update_segments (explicitly rounded operations, no FMA contraction). */
shoal_err_t adamw_update_segments_cuda(float *p, const float *g, float *m, float *v,
                                       const adamw_segment_t *segs, int n_segs, int64_t n_packed,
                                       float lr, float gcoef, int64_t t,
                                       const adamw_hparams_t *hp, cudaStream_t stream);
/* *acc (device double) += Σ g² over n elements; one block, fixed order: deterministic. */
shoal_err_t grad_sum_squares_cuda(const float *g, int64_t n, double *acc, cudaStream_t stream);
shoal_err_t grad_scale_cuda(float *g, int64_t n, float coef, cudaStream_t stream);
/* bias and counts are device arrays of N. */
shoal_err_t moe_bias_update_cuda(float *bias, const int64_t *counts, int N, float gamma,
                                 cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
