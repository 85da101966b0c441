/* attention.h: the causal multi-head self-attention block of MODEL.md (plain MHA, RoPE on q and
 * k), from the normalised input a to the block output a·Wqkv → RoPE → softmax(qk^T/√dh)v → Wo.
 * Wq, Wk, Wv [d, d] are adjacent in memory (w_qkv [3d, d]) as in the canonical order. */
#ifndef SHOAL_KERNELS_ATTENTION_H
#define SHOAL_KERNELS_ATTENTION_H
#include "kernels_common.h"
#include "kgemm.h"
#ifdef SHOAL_HAVE_CUDA
#include <cublas_v2.h>
#endif
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
    int B, T, d, H;    /* sequences, positions, width, heads (dh = d/H, even) */
    kgemm_prec_t prec; /* the projections' precision (kgemm.h; 0: fp32); the core's is fp32 */
} attention_shape_t;

/* Forward on a [B·T, d]. Saves qkv [B·T, 3d] (q, k after RoPE), p [B, H, T, T] (softmax
 * probabilities; entries above the diagonal are 0) and o [B·T, d] (heads concatenated) for the
 * backward; writes out [B·T, d]. cos_t/sin_t: rope_tables(T, dh, theta). */
void attention_forward(const attention_shape_t *s, const float *a, const float *w_qkv,
                       const float *w_o, const float *cos_t, const float *sin_t, float *qkv,
                       float *p, float *o, float *out);

/* Backward from dout [B·T, d]. Scratch: dobuf [B·T, d], dqkv [B·T, 3d], dp [T, T].
 * da [B·T, d] is overwritten with ∂L/∂a; dw_qkv_acc [3d, d], dw_o_acc [d, d] accumulate. */
void attention_backward(const attention_shape_t *s, const float *a, const float *w_qkv,
                        const float *w_o, const float *cos_t, const float *sin_t,
                        const float *qkv, const float *p, const float *o, const float *dout,
                        float *dobuf, float *dqkv, float *dp, float *da, float *dw_qkv_acc,
                        float *dw_o_acc);
#ifdef SHOAL_HAVE_CUDA
/* CUDA twins on device pointers (s is a host pointer; cos_t/sin_t are device copies of
 * rope_tables()). Same buffers and layouts as the CPU (qkv [B·T, 3d] after RoPE, p [B, H, T, T]
 * with zeros above the diagonal, o [B·T, d]) except the backward's scratch dp, which here holds
 * every head at once: [B, H, T, T] like p. `h` is the caller's cuBLAS handle, bound to `stream`
 * and host pointer mode (math mode left alone: keep fp32 without TF32). Softmax uses expf and
 * cuBLAS's reduction order: results agree with the CPU within float rounding. */
shoal_err_t attention_forward_cuda(cublasHandle_t h, const attention_shape_t *s, const float *a,
                                   const float *w_qkv, const float *w_o, const float *cos_t,
                                   const float *sin_t, float *qkv, float *p, float *o, float *out,
                                   cudaStream_t stream);
shoal_err_t attention_backward_cuda(cublasHandle_t h, const attention_shape_t *s, const float *a,
                                    const float *w_qkv, const float *w_o, const float *cos_t,
                                    const float *sin_t, const float *qkv, const float *p,
                                    const float *o, const float *dout, float *dobuf, float *dqkv,
                                    float *dp, float *da, float *dw_qkv_acc, float *dw_o_acc,
                                    cudaStream_t stream);
/* The same block with a fused causal core (flash-style: online softmax, no T×T matrix; head
 * width dh ≤ 128, else SHOAL_ERR_INVALID). Instead of p the forward saves lse [B, H, T] (per
 * score row: max + log Σ exp of the scaled scores); the backward recomputes the probabilities
 * from it and takes drow [B, H, T] as scratch in place of dp. Deterministic (one warp owns each
 * output row, fixed order, no atomics); results agree with the CPU within float rounding. */
shoal_err_t attention_forward_fused_cuda(cublasHandle_t h, const attention_shape_t *s,
                                         const float *a, const float *w_qkv, const float *w_o,
                                         const float *cos_t, const float *sin_t, float *qkv,
                                         float *lse, float *o, float *out, cudaStream_t stream);
shoal_err_t attention_backward_fused_cuda(cublasHandle_t h, const attention_shape_t *s,
                                          const float *a, const float *w_qkv, const float *w_o,
                                          const float *cos_t, const float *sin_t,
                                          const float *qkv, const float *lse, const float *o,
                                          const float *dout, float *dobuf, float *dqkv,
                                          float *drow, float *da, float *dw_qkv_acc,
                                          float *dw_o_acc, cudaStream_t stream);
#endif
#ifdef __cplusplus
}
#endif
#endif
