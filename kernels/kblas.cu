/* kblas.cu: the per-handle matmul precision the kblas.cuh GEMMs read (kernels_common.h). A small
 * table under a mutex: a handful of handles per process, one lookup per GEMM call. */
#include <pthread.h>

#include "kblas.cuh"

#define KBLAS_MAX_BF16_HANDLES 64

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static cublasHandle_t s_bf16[KBLAS_MAX_BF16_HANDLES];
static int s_n_bf16; /* read without the lock for the common case: no handle in bf16 */

extern "C" shoal_err_t kernels_matmul_bf16_cuda(cublasHandle_t h, int bf16)
{
    shoal_err_t rc = SHOAL_OK;
    pthread_mutex_lock(&s_lock);
    int at = -1;
    for (int i = 0; i < s_n_bf16; i++)
        if (s_bf16[i] == h)
            at = i;
    if (bf16 && at < 0) {
        if (s_n_bf16 < KBLAS_MAX_BF16_HANDLES) {
            s_bf16[s_n_bf16] = h;
            __atomic_store_n(&s_n_bf16, s_n_bf16 + 1, __ATOMIC_RELEASE);
        }
        else
            rc = shoal_fail(SHOAL_ERR_NOMEM, "kernels_matmul_bf16_cuda: more than %d cuBLAS "
                            "handles in bf16", KBLAS_MAX_BF16_HANDLES);
    } else if (!bf16 && at >= 0) {
        s_bf16[at] = s_bf16[s_n_bf16 - 1];
        __atomic_store_n(&s_n_bf16, s_n_bf16 - 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s_lock);
    return rc;
}

extern "C" int kernels_matmul_is_bf16_cuda(cublasHandle_t h)
{
    if (__atomic_load_n(&s_n_bf16, __ATOMIC_ACQUIRE) == 0)
        return 0;
    pthread_mutex_lock(&s_lock);
    int found = 0;
    for (int i = 0; i < s_n_bf16; i++)
        found |= s_bf16[i] == h;
    pthread_mutex_unlock(&s_lock);
    return found;
}
