/* kpar.h: the kernels' parallel loop on the CPU. One process-wide set of helper threads, started
 * on first use and kept (no threads per call), splits the elementwise and per-head work of the
 * kernels that OpenBLAS does not thread. It runs as many threads as OpenBLAS is set to
 * (openblas_set_num_threads: train.threads / --threads), so one knob sets GEMMs, oneDNN and this.
 *
 * Determinism: [0, n) is cut into fixed contiguous ranges by the thread count, and each index's
 * work must not depend on which range or thread ran it (each writes only its own outputs, no
 * reduction across indices). Then the results are the same bits for any thread count. */
#ifndef SHOAL_KERNELS_KPAR_H
#define SHOAL_KERNELS_KPAR_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Work on indices [lo, hi). scratch: NULL on the calling thread (it uses the caller's own
 * buffers), else a private buffer of at least the scratch_bytes given to kpar_for, for the
 * calling thread's duration of this range only. */
typedef void (*kpar_fn)(void *ctx, int64_t lo, int64_t hi, void *scratch);

/* Runs fn over [0, n) in up to kpar_threads() ranges, each at least `grain` indices (fewer
 * threads when n is small), the first on the calling thread; returns when all are done. Runs
 * fn(ctx, 0, n, NULL) on the calling thread alone when one thread is set, when called from
 * inside another kpar_for or while another thread's kpar_for runs, or when a helper thread or
 * its scratch cannot be had (same results, as said above). Never fails. */
void kpar_for(int64_t n, int64_t grain, size_t scratch_bytes, kpar_fn fn, void *ctx);

/* The thread count kpar_for would use for a large n: OpenBLAS's (or kpar_set_threads'), at
 * most KPAR_MAX_THREADS. */
int kpar_threads(void);

/* Sets the kernels' loop thread count apart from OpenBLAS's (tests: the loops at 1 and at 2
 * threads with the GEMMs on one); 0 (the default) follows OpenBLAS. */
void kpar_set_threads(int threads);

#define KPAR_MAX_THREADS 64

#ifdef __cplusplus
}
#endif
#endif
