/* gpu_module.c: the table of libshoal_gpu.so (gpu_module.h): the GPU trainer's entry points. */
#include "gpu_module.h"

#include <cublas_v2.h>
#include <stdio.h>

#include "trainer_gpu.h"

static void s_describe(char *buf, size_t cap)
{
    int major = 0, minor = 0, patch = 0;
    if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS ||
        cublasGetProperty(MINOR_VERSION, &minor) != CUBLAS_STATUS_SUCCESS ||
        cublasGetProperty(PATCH_LEVEL, &patch) != CUBLAS_STATUS_SUCCESS) {
        snprintf(buf, cap, "cuBLAS (version unknown)");
        return;
    }
    snprintf(buf, cap, "cuBLAS %d.%d.%d", major, minor, patch);
}

static const gpu_module_t s_table = {
    .size_table = sizeof(gpu_module_t),
    .size_runspec = sizeof(runspec_t),
    .size_device = sizeof(device_t),
    .size_step_info = sizeof(trainer_step_info_t),
    .trainer_new = trainer_gpu_new,
    .trainer_destroy = trainer_gpu_destroy,
    .trainer_resume = trainer_gpu_resume,
    .trainer_step = trainer_gpu_step,
    .trainer_next_step = trainer_gpu_next_step,
    .trainer_checkpoint_due = trainer_gpu_checkpoint_due,
    .trainer_bf16 = trainer_gpu_bf16,
    .trainer_host = trainer_gpu_host,
    .trainer_checkpoint_async = trainer_gpu_checkpoint_async,
    .trainer_export = trainer_gpu_export,
    .describe = s_describe,
};

const gpu_module_t *shoal_gpu_module(void)
{
    return &s_table;
}
