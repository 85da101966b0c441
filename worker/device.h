/* device.h: which compute device a worker runs on (`--device cpu|cuda:N|auto`), what it is, and
 * binding it to a thread. CUDA calls exist only in a build with CUDA (SHOAL_HAVE_CUDA); a build
 * without it, or a machine without a GPU, selects the CPU for `auto` and says why once. */
#ifndef SHOAL_WORKER_DEVICE_H
#define SHOAL_WORKER_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } device_kind_t;

typedef struct {
    device_kind_t kind;
    int index;              /* CUDA ordinal; -1 for cpu */
    char name[128];         /* "cpu" or the CUDA device name */
    uint64_t memory_bytes;  /* device memory (cuda) or physical RAM (cpu) */
    int cc_major, cc_minor; /* compute capability; 0 for cpu */
} device_t;

/* Most CUDA ordinals a "cuda:N" spec may name (N < DEVICE_MAX_CUDA). */
#define DEVICE_MAX_CUDA 1024

/* "cpu", "cuda:N", "auto" -> a usable device. auto: cuda:0 when a GPU is present, else the
 * CPU (logged once per process: why: no CUDA in this build / no GPU / driver error). cuda:N on a
 * build without CUDA or without that GPU: SHOAL_ERR_INVALID naming the spec and why. NULL spec or
 * anything else: SHOAL_ERR_INVALID quoting it. *out is set only on success. */
shoal_err_t device_select(const char *spec, device_t *out);

/* "cuda:0 NVIDIA H200 (139.8 GiB)" / "cpu (24.0 GiB)"; always NUL-terminated (truncated to
 * cap). */
void device_describe(const device_t *d, char *buf, size_t cap);

/* The device as a spec that device_select accepts again ("cpu", "cuda:0"). */
void device_spec(const device_t *d, char *buf, size_t cap);

/* Makes d current on this thread (cudaSetDevice); no-op for cpu. Errors: SHOAL_ERR_CUDA (the
 * CUDA error named), SHOAL_ERR_INVALID (a cuda device in a build without CUDA). */
shoal_err_t device_bind(const device_t *d);

/* Number of CUDA devices usable here (0 without CUDA, without a GPU or on a driver error). */
int device_cuda_count(void);

#ifdef __cplusplus
}
#endif
#endif
