/* gpu_module_load.c: shoal-worker's loader of libshoal_gpu.so (gpu_module.h). */
#include "gpu_module.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const gpu_module_t *s_loaded;

void gpu_module_path(char *buf, size_t cap)
{
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { /* no /proc: the loader's own search path */
        snprintf(buf, cap, "%s", GPU_MODULE_FILE);
        return;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        slash[1] = '\0';
    snprintf(buf, cap, "%s%s", slash ? exe : "", GPU_MODULE_FILE);
}

shoal_err_t gpu_module_load(const gpu_module_t **out)
{
    if (s_loaded) {
        *out = s_loaded;
        return SHOAL_OK;
    }
    char path[PATH_MAX + 32];
    gpu_module_path(path, sizeof path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return shoal_fail(SHOAL_ERR_NOTFOUND,
                          "the GPU trainer module %s does not load (%s): install it beside "
                          "shoal-worker, or use --device cpu",
                          path, dlerror());
    const gpu_module_t *(*entry)(void) = NULL;
    void *sym = dlsym(h, GPU_MODULE_ENTRY);
    memcpy(&entry, &sym, sizeof sym); /* object pointer -> function pointer, as POSIX allows */
    const gpu_module_t *m = entry ? entry() : NULL;
    if (!m) {
        dlclose(h);
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s: no %s in it: not a shoal GPU module", path,
                          GPU_MODULE_ENTRY);
    }
    if (m->size_table != sizeof(gpu_module_t) || m->size_runspec != sizeof(runspec_t) ||
        m->size_device != sizeof(device_t) || m->size_step_info != sizeof(trainer_step_info_t)) {
        dlclose(h);
        return shoal_fail(SHOAL_ERR_STATE,
                          "%s was built from other sources than this shoal-worker (struct "
                          "sizes differ): rebuild and install both together",
                          path);
    }
    s_loaded = m; /* kept loaded for the life of the process */
    *out = m;
    return SHOAL_OK;
}
