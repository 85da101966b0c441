/* rope.cu: CUDA twin of rope.c; one thread per rotated pair (row, head, i < dh/2). */
#include "kcuda.cuh"
#include "rope.h"

__global__ void k_rope(float *__restrict__ x, int B, int T, int H, int dh, int ld,
                       const float *__restrict__ cos_t, const float *__restrict__ sin_t, float sgn)
{
    const int half = dh / 2;
    const int64_t n = (int64_t)B * T * H * half;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const int64_t rh = idx / half;
        const int h = (int)(rh % H);
        const int64_t row = rh / H;
        const int t = (int)(row % T);
        float *x1 = x + row * ld + (int64_t)h * dh;
        const float c = cos_t[(int64_t)t * half + i],
                    s = __fmul_rn(sgn, sin_t[(int64_t)t * half + i]);
        const float a = x1[i], e = x1[i + half];
        /* no FMA contraction: bitwise the CPU's result */
        x1[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(e, s));
        x1[i + half] = __fadd_rn(__fmul_rn(e, c), __fmul_rn(a, s));
    }
}

static shoal_err_t s_rope(float *x, int B, int T, int H, int dh, int ld, const float *cos_t,
                          const float *sin_t, float sgn, cudaStream_t stream, const char *what)
{
    const int64_t n = (int64_t)B * T * H * (dh / 2);
    if (n == 0)
        return SHOAL_OK;
    k_rope<<<kcuda_blocks(n, 256), 256, 0, stream>>>(x, B, T, H, dh, ld, cos_t, sin_t, sgn);
    return kcuda_check(what);
}

extern "C" shoal_err_t rope_forward_cuda(float *x, int B, int T, int H, int dh, int ld,
                                         const float *cos_t, const float *sin_t,
                                         cudaStream_t stream)
{
    return s_rope(x, B, T, H, dh, ld, cos_t, sin_t, 1.0f, stream, "rope_forward_cuda");
}

extern "C" shoal_err_t rope_backward_cuda(float *dx, int B, int T, int H, int dh, int ld,
                                          const float *cos_t, const float *sin_t,
                                          cudaStream_t stream)
{
    return s_rope(dx, B, T, H, dh, ld, cos_t, sin_t, -1.0f, stream, "rope_backward_cuda");
}
