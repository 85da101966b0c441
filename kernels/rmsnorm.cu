/* rmsnorm.cu: CUDA twin of rmsnorm.c. One warp per row for the row reductions; dg is reduced
 * over rows by a separate column kernel in a fixed order (deterministic). */
#include "kcuda.cuh"
#include "rmsnorm.h"

#define RMS_ROWS_PER_BLOCK 4

/* res NULL: plain; else x += res first (each lane adds, stores and later rereads its own
 * elements, so no synchronisation is needed). */
__global__ void k_rmsnorm_forward(float *__restrict__ x, const float *__restrict__ res,
                                  const float *__restrict__ g, int M, int d, float eps,
                                  float *__restrict__ y, float *__restrict__ rstd)
{
    const int lane = threadIdx.x & 31;
    const int m = blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (m >= M)
        return;
    float *xr = x + (int64_t)m * d;
    float ss = 0.0f;
    if (res) {
        const float *rr = res + (int64_t)m * d;
        for (int j = lane; j < d; j += 32) {
            const float v = __fadd_rn(xr[j], rr[j]);
            xr[j] = v;
            ss += v * v;
        }
    } else {
        for (int j = lane; j < d; j += 32)
            ss += xr[j] * xr[j];
    }
    ss = kcuda_warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    float *yr = y + (int64_t)m * d;
    for (int j = lane; j < d; j += 32)
        yr[j] = (xr[j] * r) * g[j];
    if (rstd && lane == 0)
        rstd[m] = r;
}

/* dx_k += r g_k dy_k − x_k (r³/d) Σ_j dy_j g_j x_j */
__global__ void k_rmsnorm_backward_dx(const float *__restrict__ x, const float *__restrict__ g,
                                      const float *__restrict__ rstd, const float *__restrict__ dy,
                                      int M, int d, float *__restrict__ dx_acc)
{
    const int lane = threadIdx.x & 31;
    const int m = blockIdx.x * RMS_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (m >= M)
        return;
    const float *xr = x + (int64_t)m * d, *dyr = dy + (int64_t)m * d;
    float s = 0.0f;
    for (int j = lane; j < d; j += 32)
        s += dyr[j] * g[j] * xr[j];
    s = kcuda_warp_sum(s);
    const float r = rstd[m], c = s * r * r * r / (float)d;
    float *dxr = dx_acc + (int64_t)m * d;
    for (int j = lane; j < d; j += 32)
        dxr[j] += r * g[j] * dyr[j] - xr[j] * c;
}

#define DG_COLS 32
#define DG_ROWS 16

/* dg_j += Σ_m dy_mj x_mj r_m: block (32 columns, 16 row lanes), fixed-order tree at the end */
__global__ void k_rmsnorm_backward_dg(const float *__restrict__ x, const float *__restrict__ rstd,
                                      const float *__restrict__ dy, int M, int d,
                                      float *__restrict__ dg_acc)
{
    __shared__ float s_part[DG_ROWS][DG_COLS + 1];
    const int j = blockIdx.x * DG_COLS + threadIdx.x;
    float acc = 0.0f;
    if (j < d)
        for (int m = threadIdx.y; m < M; m += DG_ROWS)
            acc += dy[(int64_t)m * d + j] * x[(int64_t)m * d + j] * rstd[m];
    s_part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        float s = 0.0f;
        for (int r = 0; r < DG_ROWS; r++)
            s += s_part[r][threadIdx.x];
        dg_acc[j] += s;
    }
}

extern "C" shoal_err_t rmsnorm_forward_cuda(const float *x, const float *g, int M, int d, float eps,
                                            float *y, float *rstd, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    const unsigned grid = (unsigned)((M + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    /* x is only read when res is NULL */
    k_rmsnorm_forward<<<grid, 32 * RMS_ROWS_PER_BLOCK, 0, stream>>>((float *)x, NULL, g, M, d, eps,
                                                                    y, rstd);
    return kcuda_check("rmsnorm_forward_cuda");
}

extern "C" shoal_err_t rmsnorm_residual_forward_cuda(float *x, const float *res, const float *g,
                                                     int M, int d, float eps, float *y,
                                                     float *rstd, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    const unsigned grid = (unsigned)((M + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    k_rmsnorm_forward<<<grid, 32 * RMS_ROWS_PER_BLOCK, 0, stream>>>(x, res, g, M, d, eps, y, rstd);
    return kcuda_check("rmsnorm_residual_forward_cuda");
}

extern "C" shoal_err_t rmsnorm_backward_cuda(const float *x, const float *g, const float *rstd,
                                             const float *dy, int M, int d, float *dx_acc,
                                             float *dg_acc, cudaStream_t stream)
{
    if (M == 0)
        return SHOAL_OK;
    const unsigned grid = (unsigned)((M + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    k_rmsnorm_backward_dx<<<grid, 32 * RMS_ROWS_PER_BLOCK, 0, stream>>>(x, g, rstd, dy, M, d,
                                                                        dx_acc);
    shoal_err_t rc = kcuda_check("rmsnorm_backward_cuda (dx)");
    if (rc != SHOAL_OK)
        return rc;
    k_rmsnorm_backward_dg<<<(unsigned)((d + DG_COLS - 1) / DG_COLS), dim3(DG_COLS, DG_ROWS), 0,
                            stream>>>(x, rstd, dy, M, d, dg_acc);
    return kcuda_check("rmsnorm_backward_cuda (dg)");
}
