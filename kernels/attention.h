/* attention.h: the causal multi-head self-attention block of MODEL.md (plain MHA, RoPE on q and
 * k), from the normalised input a to the block output a·Wqkv → RoPE → softmax(qk^T/√dh)v → Wo.
 * Wq, Wk, Wv [d, d] are adjacent in memory (w_qkv [3d, d]) as in the canonical order. */
#ifndef SHOAL_KERNELS_ATTENTION_H
#define SHOAL_KERNELS_ATTENTION_H
#include "kernels_common.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct {
    int B, T, d, H; /* sequences, positions, width, heads (dh = d/H, even) */
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
#ifdef __cplusplus
}
#endif
#endif
