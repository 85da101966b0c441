/* device.c: device selection for a worker. The CUDA runtime is called only when the build has
 * CUDA; everything else (parsing, the CPU device, descriptions) is plain C. */
#include "device.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "numparse.h"

#ifdef SHOAL_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* Why there is no GPU here (static text), or NULL with *count set when there are GPUs. */
static const char *s_cuda_probe(int *count)
{
    *count = 0;
#ifdef SHOAL_HAVE_CUDA
    /* Without the NVIDIA kernel driver the runtime's first call still takes a second or more
     * (it loads and initialises libcuda to find out): every worker start would pay it, and a
     * restarted worker would miss step boundaries it could have joined at. */
    if (access("/dev/nvidiactl", F_OK) != 0 && access("/proc/driver/nvidia/version", F_OK) != 0)
        return "no NVIDIA driver loaded: no /dev/nvidiactl, no /proc/driver/nvidia";
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice)
        return "no GPU found";
    if (e != cudaSuccess) {
        /* 35 (insufficient driver) is also what a machine without the NVIDIA driver reports */
        static _Thread_local char why[160];
        snprintf(why, sizeof why, "%s: %s",
                 e == cudaErrorInsufficientDriver ? "no NVIDIA driver, or one too old"
                                                  : "CUDA driver error",
                 cudaGetErrorString(e));
        cudaGetLastError(); /* clear it: later runtime calls must not report it again */
        return why;
    }
    if (n <= 0)
        return "no GPU found";
    *count = n;
    return NULL;
#else
    return "this build has no CUDA";
#endif
}

int device_cuda_count(void)
{
    int n;
    (void)s_cuda_probe(&n);
    return n;
}

static void s_select_cpu(device_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = DEVICE_CPU;
    out->index = -1;
    snprintf(out->name, sizeof out->name, "cpu");
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    out->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

#ifdef SHOAL_HAVE_CUDA
static shoal_err_t s_select_cuda(int index, device_t *out)
{
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, index);
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_INVALID, "device cuda:%d: cudaGetDeviceProperties: %s", index,
                          cudaGetErrorString(e));
    memset(out, 0, sizeof *out);
    out->kind = DEVICE_CUDA;
    out->index = index;
    snprintf(out->name, sizeof out->name, "%.*s", (int)sizeof out->name - 1, p.name);
    out->memory_bytes = (uint64_t)p.totalGlobalMem;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    return SHOAL_OK;
}
#endif

shoal_err_t device_select(const char *spec, device_t *out)
{
    if (!spec || !out)
        return shoal_fail(SHOAL_ERR_INVALID, "device: no device spec given");
    if (strcmp(spec, "cpu") == 0) {
        s_select_cpu(out);
        return SHOAL_OK;
    }
    int count;
    const char *why_not = s_cuda_probe(&count);
    if (strcmp(spec, "auto") == 0) {
        if (!why_not) {
#ifdef SHOAL_HAVE_CUDA
            return s_select_cuda(0, out);
#endif
        }
        /* said once per process: a daemon re-selecting at each restart of its loop stays quiet */
        static atomic_int said;
        if (atomic_exchange(&said, 1) == 0)
            log_info("device auto: running on the CPU (%s)", why_not);
        s_select_cpu(out);
        return SHOAL_OK;
    }
    if (strncmp(spec, "cuda:", 5) != 0)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "device '%s': expected cpu, cuda:N (N a GPU ordinal) or auto", spec);
    int index;
    if (numparse_int(spec + 5, 0, DEVICE_MAX_CUDA - 1, &index) != SHOAL_OK)
        return shoal_fail(SHOAL_ERR_INVALID, "device '%s': the GPU ordinal must be 0 .. %d",
                          spec, DEVICE_MAX_CUDA - 1);
    if (why_not)
        return shoal_fail(SHOAL_ERR_INVALID, "device '%s': %s", spec, why_not);
    if (index >= count)
        return shoal_fail(SHOAL_ERR_INVALID, "device '%s': this machine has %d GPU%s (cuda:0 .. "
                          "cuda:%d)", spec, count, count == 1 ? "" : "s", count - 1);
#ifdef SHOAL_HAVE_CUDA
    return s_select_cuda(index, out);
#else
    return shoal_fail(SHOAL_ERR_INVALID, "device '%s': this build has no CUDA", spec);
#endif
}

void device_spec(const device_t *d, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    if (d->kind == DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d", d->index);
    else
        snprintf(buf, cap, "cpu");
}

void device_describe(const device_t *d, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    double gib = (double)d->memory_bytes / (double)(1ull << 30);
    if (d->kind == DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d %s (%.1f GiB)", d->index, d->name, gib);
    else
        snprintf(buf, cap, "cpu (%.1f GiB)", gib);
}

shoal_err_t device_bind(const device_t *d)
{
    if (!d)
        return shoal_fail(SHOAL_ERR_INVALID, "device_bind: no device");
    if (d->kind == DEVICE_CPU)
        return SHOAL_OK;
#ifdef SHOAL_HAVE_CUDA
    cudaError_t e = cudaSetDevice(d->index);
    if (e != cudaSuccess)
        return shoal_fail(SHOAL_ERR_CUDA, "cudaSetDevice(%d): %s", d->index,
                          cudaGetErrorString(e));
    return SHOAL_OK;
#else
    return shoal_fail(SHOAL_ERR_INVALID, "device cuda:%d: this build has no CUDA", d->index);
#endif
}
