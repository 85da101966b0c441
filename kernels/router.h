/* router.h: the MoE router of MODEL.md: affinities s = sigmoid(u Wr^T), group-limited top-K
 * selection on s + b (ties to the lower index everywhere), normalised gates
 * g_i = rsf · s_i / Σ_S s_j, and the gradient of the gates back to the router logits. */
#ifndef SHOAL_KERNELS_ROUTER_H
#define SHOAL_KERNELS_ROUTER_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
    int N, K;            /* routed experts, experts per token */
    int n_group, topk_group;
    float rsf;           /* routed_scaling_factor */
} router_config_t;

/* s [M, N] ← sigmoid(s) in place (s holds the logits u Wr^T on entry). */
void router_sigmoid(float *s, int64_t n);

/* idx [M, K]: for each token the selected experts, ordered by decreasing s + b (stable).
 * Experts of groups that are not among the topk_group best (group score = sum of the two
 * largest s + b of the group) are never selected. */
void router_select(const router_config_t *c, const float *s, const float *bias, int M,
                   int32_t *idx);

/* gates [M, K] = rsf · s[idx] / Σ_k s[idx_k]. */
void router_gates_forward(const router_config_t *c, const float *s, const int32_t *idx, int M,
                          float *gates);

/* From dgates [M, K] writes dlogits [M, N] = ∂L/∂(u Wr^T) (zero for unselected experts),
 * through the gate normalisation and the sigmoid. */
void router_gates_backward(const router_config_t *c, const float *s, const int32_t *idx,
                           const float *dgates, int M, float *dlogits);
#ifdef SHOAL_HAVE_CUDA
/* CUDA twins on device arrays (c is a host pointer). router_select_cuda runs the CPU's scans
 * one thread per token and selects bitwise the same experts on the same s and bias; it returns
 * SHOAL_ERR_INVALID for a config the CPU would mis-handle (N not a multiple of n_group, K larger
 * than the eligible experts). router_gates_forward_cuda and router_gates_backward_cuda repeat
 * the CPU's arithmetic in its order without FMA contraction; router_sigmoid_cuda uses the
 * device expf (within 2 ulp of the CPU's, so not bitwise). */
shoal_err_t router_sigmoid_cuda(float *s, int64_t n, cudaStream_t stream);
shoal_err_t router_select_cuda(const router_config_t *c, const float *s, const float *bias, int M,
                               int32_t *idx, cudaStream_t stream);
shoal_err_t router_gates_forward_cuda(const router_config_t *c, const float *s, const int32_t *idx,
                                      int M, float *gates, cudaStream_t stream);
shoal_err_t router_gates_backward_cuda(const router_config_t *c, const float *s, const int32_t *idx,
                                       const float *dgates, int M, float *dlogits,
                                       cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
