/* gpu_module.h: the GPU trainer as a module loaded at run time. In a CUDA build the GPU trainer,
 * the kernels' CUDA twins and cuBLAS/cuBLASLt live in libshoal_gpu.so beside shoal-worker, not in
 * the binary: loading cuBLAS costs about half a second of CPU, which every start paid before
 * (--help, --device cpu, each daemon restart). shoal-worker loads the module only when --device
 * selects CUDA (and for --version, which reports it). The module resolves the CPU side (the
 * host trainer, kernels, errors, logs) against the binary's own symbols (shoal-worker exports
 * them), so both share one copy of each. */
#ifndef SHOAL_WORKER_GPU_MODULE_H
#define SHOAL_WORKER_GPU_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "err.h"
#include "runspec.h"
#include "trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GPU_MODULE_FILE "libshoal_gpu.so"
#define GPU_MODULE_ENTRY "shoal_gpu_module"

typedef struct trainer_gpu trainer_gpu_t;

/* trainer_gpu.h's entry points that shoal-worker uses, and the module's libraries. */
typedef struct {
    /* sizes of the structs passed across, as the module was compiled: a stale module built
     * from other headers is refused rather than run */
    size_t size_table, size_runspec, size_device, size_step_info;
    shoal_err_t (*trainer_new)(const runspec_t *spec, const char *ckpt_root, const device_t *dev,
                               trainer_gpu_t **out);
    void (*trainer_destroy)(trainer_gpu_t **t);
    shoal_err_t (*trainer_resume)(trainer_gpu_t *t, const char *init_model_dir,
                                  int64_t *resumed_step);
    shoal_err_t (*trainer_step)(trainer_gpu_t *t, trainer_step_info_t *info);
    int64_t (*trainer_next_step)(const trainer_gpu_t *t);
    int (*trainer_checkpoint_due)(const trainer_gpu_t *t);
    int (*trainer_bf16)(const trainer_gpu_t *t);
    trainer_t *(*trainer_host)(trainer_gpu_t *t);
    shoal_err_t (*trainer_checkpoint_async)(trainer_gpu_t *t);
    shoal_err_t (*trainer_export)(trainer_gpu_t *t, const char *dir);
    /* "cuBLAS 13.0.2" */
    void (*describe)(char *buf, size_t cap);
} gpu_module_t;

/* The module's one exported symbol (GPU_MODULE_ENTRY). */
const gpu_module_t *shoal_gpu_module(void);

/* shoal-worker's side: loads GPU_MODULE_FILE from the directory of this executable
 * (/proc/self/exe) once per process and returns its table. SHOAL_ERR_NOTFOUND (with the path and
 * the loader's reason) when it is missing or does not load, SHOAL_ERR_STATE when it was built
 * from other headers than this binary. Not thread-safe on the first call. */
shoal_err_t gpu_module_load(const gpu_module_t **out);

/* Where gpu_module_load looks ("<dir of the executable>/libshoal_gpu.so"). */
void gpu_module_path(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
