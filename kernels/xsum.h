/* xsum.h: exact, order-independent sums of float vectors (binned fixed point), so that a sum of
 * gradients over micro-batches and workers has the same bits however the work was split.
 *
 * Each tensor of a vector (ranges given by offsets) has a window of two bins of XSUM_BIN_BITS
 * bits on a grid of absolute exponents: bin b counts units of 2^(XSUM_BIN_BITS·b -
 * XSUM_GRID_OFFSET). A tensor's window top T is the bin holding its largest magnitude; each
 * element keeps two int64 counters (bin T and bin T-1). Depositing x adds trunc(x / u_T) to the
 * top counter and trunc(x / u_{T-1}) - trunc(x / u_T)·2^BITS to the low one: both are exact
 * functions of x alone, so the counters are exact integer sums whatever the order. When a larger
 * value raises the window, the counters move up a bin (the lowest drops out): again what a
 * deposit at the higher window would have given. Hence the result is
 *     Σ_i trunc(x_i / u_{T-1}) · u_{T-1}   for the final window T,
 * rounded once to float: a function of the multiset of deposited values alone. Precision: each
 * deposit is exact to u_{T-1}, at most 2^-48 of its tensor's largest magnitude (at best 2^-96):
 * an element down to 2^-24 of its tensor's maximum keeps fp32's precision. Capacity:
 * 2^(63 - XSUM_BIN_BITS) = 32768 deposits per element (micro-batches of a step, over all
 * workers) before a counter could overflow.
 *
 * To sum over workers: max-reduce the windows (xsum_vec_tops), raise every rank's to the
 * maximum (xsum_vec_align), add the counters as int64 (any order), then xsum_vec_result. */
#ifndef SHOAL_KERNELS_XSUM_H
#define SHOAL_KERNELS_XSUM_H

#include <stddef.h>
#include <stdint.h>

#ifdef SHOAL_HAVE_CUDA
#include "kernels_common.h" /* cudaStream_t, shoal_err_t */
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define XSUM_BIN_BITS 48
#define XSUM_GRID_OFFSET 240
/* Window tops that are not a bin: nothing deposited yet (or only zeros), and a deposit held a
 * NaN or an infinity (the tensor's result is NaN). Ordered so that a maximum keeps the worst. */
#define XSUM_EMPTY INT64_MIN
#define XSUM_NONFINITE INT64_MAX
/* Most deposits per element (counter capacity). */
#define XSUM_MAX_DEPOSITS ((int64_t)1 << (63 - XSUM_BIN_BITS))

typedef struct {
    int n_tensors;
    int64_t *offsets; /* [n_tensors + 1] element ranges (copied) */
    int64_t *top;     /* [n_tensors] window top bin, or XSUM_EMPTY / XSUM_NONFINITE */
    int64_t *bins;    /* [2 · n]: (top counter, low counter) of element i at 2i, 2i + 1 */
    int64_t deposits; /* since the last clear */
} xsum_vec_t;

/* Allocates a vector of offsets[n_tensors] elements, cleared. Returns 0, or -1 on OOM. */
int xsum_vec_init(xsum_vec_t *x, const int64_t *offsets, int n_tensors);
void xsum_vec_fini(xsum_vec_t *x);
/* Back to nothing deposited, in O(tensors): counters are rewritten by each tensor's first
 * deposit (or zeroed by xsum_vec_align), so `bins` of a tensor still EMPTY hold stale values;
 * read them only after xsum_vec_align. */
void xsum_vec_clear(xsum_vec_t *x);

/* Adds g[0 .. n) (the whole vector, in its element order) exactly. Returns 0, or -1 when the
 * vector has taken XSUM_MAX_DEPOSITS deposits already. */
int xsum_vec_deposit(xsum_vec_t *x, const float *g);

/* Adds tensors [t0, t1) of g (indexed like the whole vector) exactly, and nothing else: for
 * gradients computed in pieces (the experts of several micro-batches). Not counted in
 * `deposits`: the caller keeps each element below XSUM_MAX_DEPOSITS deposits. */
void xsum_vec_deposit_tensors(xsum_vec_t *x, const float *g, int t0, int t1);

/* Raises the windows of tensors [t0, t1) to top[t0 .. t1) (each >= the tensor's own; a
 * maximum over ranks), dropping what falls below, exactly as if every deposit had been made
 * at that window. */
void xsum_vec_align(xsum_vec_t *x, const int64_t *top, int t0, int t1);

/* The sums of tensors [t0, t1) as floats into out (indexed like the vector): each a function
 * of its window and counters only. A NONFINITE tensor gives NaN, an EMPTY one zeros. */
void xsum_vec_result(const xsum_vec_t *x, float *out, int t0, int t1);

#ifdef SHOAL_HAVE_CUDA
/* The CUDA twin (kernels/xsum.cu): the same vector in device memory, bit for bit the CPU's.
 * `top` and `bins` have xsum_vec_t's layout, so between deposit and result a copy of the windows
 * can be max-reduced and the counters summed in place as int64 over NCCL (comm_nccl), as gradsum
 * does on the CPU. Every call enqueues on `stream`; the largest magnitudes are unsigned integer maxima
 * and each counter is owned by one thread: no float reduction, no float atomics. */
typedef struct {
    int n_tensors;
    int64_t n;             /* elements */
    int64_t *offsets;      /* host [n_tensors + 1] (copied) */
    int *chunk_first;      /* host [n_tensors + 1]: tensor t's chunks are [first[t], first[t+1]) */
    void *chunks;          /* device: (tensor, element range) of each chunk, tensor order */
    int64_t *top;          /* device [n_tensors], as xsum_vec_t's */
    int64_t *bins;         /* device [2 · n], as xsum_vec_t's */
    unsigned int *maxbits; /* device [n_tensors]: a deposit's largest |g| bit pattern */
    void *steps;           /* device [n_tensors]: what a deposit or align does to each tensor */
    int64_t deposits;      /* since the last clear */
} xsum_vec_cuda_t;

/* Allocates and clears (synchronously) a vector of offsets[n_tensors] elements; offsets is a host
 * array. SHOAL_ERR_NOMEM or SHOAL_ERR_CUDA on failure (nothing left allocated). */
shoal_err_t xsum_vec_cuda_init(xsum_vec_cuda_t *x, const int64_t *offsets, int n_tensors);
void xsum_vec_cuda_fini(xsum_vec_cuda_t *x);
shoal_err_t xsum_vec_cuda_clear(xsum_vec_cuda_t *x, cudaStream_t stream);
/* xsum_vec_deposit of the device array g; SHOAL_ERR_STATE past XSUM_MAX_DEPOSITS. */
shoal_err_t xsum_vec_cuda_deposit(xsum_vec_cuda_t *x, const float *g, cudaStream_t stream);
shoal_err_t xsum_vec_cuda_deposit_tensors(xsum_vec_cuda_t *x, const float *g, int t0, int t1,
                                          cudaStream_t stream);
/* top: a device array indexed like x->top, not x->top itself: a copy of it max-reduced over
 * the ranks (gradsum's tops). */
shoal_err_t xsum_vec_cuda_align(xsum_vec_cuda_t *x, const int64_t *top, int t0, int t1,
                                cudaStream_t stream);
/* out: a device array indexed like the vector. */
shoal_err_t xsum_vec_cuda_result(const xsum_vec_cuda_t *x, float *out, int t0, int t1,
                                 cudaStream_t stream);
#endif

#ifdef __cplusplus
}
#endif
#endif
