/* gpu_testutil.h: what the GPU parity tests share: fatal checks of CUDA and shoal calls, and
 * the --bench timer (CPU body vs GPU body; the including file defines `static int s_bench`). */
#ifndef SHOAL_GPU_TESTUTIL_H
#define SHOAL_GPU_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "clock.h"
#include "err.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define SK(call)                                                                                   \
    do {                                                                                           \
        shoal_err_t sk_rc_ = (call);                                                               \
        if (sk_rc_ != SHOAL_OK) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, shoal_errmsg());         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Timing helpers for --bench: the CPU body and the GPU body are run `reps` times. */
#define BENCH(name, reps, cpu_body, gpu_body)                                                      \
    do {                                                                                           \
        if (!s_bench)                                                                              \
            break;                                                                                 \
        double t0_ = clock_mono_s();                                                               \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            cpu_body;                                                                              \
        }                                                                                          \
        double cpu_ms_ = (clock_mono_s() - t0_) * 1e3 / (reps);                                    \
        cudaEvent_t a_, b_;                                                                        \
        CK(cudaEventCreate(&a_));                                                                  \
        CK(cudaEventCreate(&b_));                                                                  \
        gpu_body; /* warm-up */                                                                    \
        CK(cudaEventRecord(a_, 0));                                                                \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            gpu_body;                                                                              \
        }                                                                                          \
        CK(cudaEventRecord(b_, 0));                                                                \
        CK(cudaEventSynchronize(b_));                                                              \
        float gpu_ms_ = 0;                                                                         \
        CK(cudaEventElapsedTime(&gpu_ms_, a_, b_));                                                \
        gpu_ms_ /= (reps);                                                                         \
        printf("  BENCH %-30s cpu %9.4f ms  gpu %9.4f ms  speedup %7.1fx\n", name, cpu_ms_,        \
               (double)gpu_ms_, cpu_ms_ / (double)gpu_ms_);                                        \
        CK(cudaEventDestroy(a_));                                                                  \
        CK(cudaEventDestroy(b_));                                                                  \
    } while (0)

/* The start of every parity test: 0 when a CUDA device is usable (its name is printed, and
 * *bench is set from a --bench argument), 77 (ctest's skip) when there is none. */
static inline int gpu_test_start(const char *name, int argc, char **argv, int *bench)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        printf("%s: SKIP: no usable CUDA device (%s, count %d)\n", name,
               e != cudaSuccess ? cudaGetErrorString(e) : "no error", count);
        return 77;
    }
    *bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("%s: device 0: %s (sm_%d%d), %d device(s)%s\n", name, prop.name, prop.major, prop.minor,
           count, *bench ? ", with timings" : "");
    return 0;
}

#endif
