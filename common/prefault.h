/* prefault.h: maps a large buffer's pages in one system call before it is first written.
 * A page fault per 4 KiB page is the first touch's cost otherwise, and on a virtual machine
 * (paravirtualised page faults) under load it is large: 36 MiB memset on fresh pages took
 * 1.9-3.2 s on the shared 2-core build machine at load 21, 0.12-1.9 s after
 * madvise(MADV_POPULATE_WRITE). Used for the buffers every step writes in full anyway
 * (the trainer's parameters, optimizer moments, exact-sum bins, the state buffer), so eager
 * mapping costs no memory that the first step would not map. */
#ifndef SHOAL_COMMON_PREFAULT_H
#define SHOAL_COMMON_PREFAULT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels refuse it (EINVAL): pages fault in
                                * as before */
#endif

/* Populates (writable, zero-filled where fresh) the whole pages inside [p, p + bytes); buffers
 * under 1 MiB, NULL, or a kernel without MADV_POPULATE_WRITE: nothing happens. The contents are
 * unchanged. */
static inline void prefault(void *p, size_t bytes)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!p || bytes < ((size_t)1 << 20) || page == 0 || (page & (page - 1)) != 0)
        return;
    const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    const uintptr_t hi = ((uintptr_t)p + bytes) & ~(page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
}

#endif
