/* kpar.c: the kernels' parallel loop (see kpar.h). Helpers wait for a job generation: a short
 * spin first (a training step issues kernels back to back, microseconds apart), then a condition
 * variable, so that an idle trainer costs no CPU. One job at a time: a second caller (another
 * session's thread) or a nested call runs its loop alone instead of waiting. */
#include "kpar.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "blas_select.h"
#include "log.h"

/* Polling before sleeping (pause is ~10-140 cycles by CPU). When OpenBLAS runs on one thread
 * (blas_select_set_threads), these threads run the GEMMs' blocks as well as the loops, and a
 * step issues them back to back, microseconds apart: a helper that slept would be woken by a
 * futex call at every one (tiny G 16 at 2 threads, idle 2-core VM: 24,700-28,000 tokens/s
 * polling 256 times, 27,400-31,900 polling 32,768; ~0.1-1.5 ms before sleeping). When OpenBLAS
 * has its own threads they need the cores between two loops, so only a few microseconds
 * (polling 32,768 there halved the speed). */
static int s_spin_count(void)
{
    return openblas_get_num_threads() == 1 ? 32768 : 256;
}

static inline void s_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static struct {
    pthread_once_t once;
    pthread_mutex_t busy; /* held by the thread whose job runs */
    pthread_mutex_t mu;   /* with wake/done: sleeping and waking */
    pthread_cond_t wake, done;
    int n_helpers; /* started so far (each lives as long as the process) */
    atomic_uint gen;     /* job generation: bumped to start a job */
    atomic_int pending;  /* helpers not yet through the current generation */
    /* the current job; written before gen is bumped, read after */
    kpar_fn fn;
    void *ctx;
    int64_t n;
    int workers; /* ranges of this job: the caller's and workers - 1 helpers' */
    void *scratch[KPAR_MAX_THREADS];
    size_t scratch_cap[KPAR_MAX_THREADS];
    unsigned start_gen[KPAR_MAX_THREADS]; /* gen when helper w was started: its first wait */
} s_pool = {.once = PTHREAD_ONCE_INIT,
            .busy = PTHREAD_MUTEX_INITIALIZER,
            .mu = PTHREAD_MUTEX_INITIALIZER,
            .wake = PTHREAD_COND_INITIALIZER,
            .done = PTHREAD_COND_INITIALIZER};

/* Range w of `workers` over [0, n): fixed by (n, workers) alone. */
static void s_range(int64_t n, int workers, int w, int64_t *lo, int64_t *hi)
{
    *lo = n * w / workers;
    *hi = n * (w + 1) / workers;
}

static void *s_helper(void *arg)
{
    const int me = (int)(intptr_t)arg; /* range index 1 .. */
    unsigned seen = s_pool.start_gen[me];
    for (;;) {
        unsigned g = seen;
        const int spin = s_spin_count();
        for (int s = 0; s < spin && g == seen; s++) {
            s_relax();
            g = atomic_load_explicit(&s_pool.gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&s_pool.mu);
            while ((g = atomic_load_explicit(&s_pool.gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&s_pool.wake, &s_pool.mu);
            pthread_mutex_unlock(&s_pool.mu);
        }
        seen = g;
        if (me < s_pool.workers) {
            int64_t lo, hi;
            s_range(s_pool.n, s_pool.workers, me, &lo, &hi);
            if (lo < hi)
                s_pool.fn(s_pool.ctx, lo, hi, s_pool.scratch[me]);
        }
        if (atomic_fetch_sub_explicit(&s_pool.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&s_pool.mu);
            pthread_cond_signal(&s_pool.done);
            pthread_mutex_unlock(&s_pool.mu);
        }
    }
    return NULL;
}

/* A forked child has none of the parent's helpers: it starts its own when it needs them. The
 * parent's locks may have been held by a thread that does not exist in the child. */
static void s_atfork_child(void)
{
    pthread_mutex_init(&s_pool.busy, NULL);
    pthread_mutex_init(&s_pool.mu, NULL);
    pthread_cond_init(&s_pool.wake, NULL);
    pthread_cond_init(&s_pool.done, NULL);
    s_pool.n_helpers = 0;
    atomic_store(&s_pool.pending, 0);
}

static void s_start(void)
{
    pthread_atfork(NULL, NULL, s_atfork_child);
}

static atomic_int s_threads_set; /* kpar_set_threads; 0: OpenBLAS's */

void kpar_set_threads(int threads)
{
    atomic_store(&s_threads_set, threads < 0 ? 0 : threads);
}

int kpar_threads(void)
{
    const int set = atomic_load(&s_threads_set);
    const int t = set > 0 ? set : blas_select_threads();
    return t < 1 ? 1 : t > KPAR_MAX_THREADS ? KPAR_MAX_THREADS : t;
}

/* Helpers up to workers - 1 started and scratch for ranges 1 .. workers-1 grown; returns how many
 * ranges can run (1: the caller alone). Called holding busy. */
static int s_prepare(int workers, size_t scratch_bytes)
{
    while (s_pool.n_helpers < workers - 1) {
        pthread_t th;
        pthread_attr_t attr;
        /* the helper may first run after this job's gen bump: it must still take this job */
        s_pool.start_gen[s_pool.n_helpers + 1] = atomic_load(&s_pool.gen);
        int rc = pthread_attr_init(&attr);
        if (rc == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            rc = pthread_create(&th, &attr, s_helper, (void *)(intptr_t)(s_pool.n_helpers + 1));
            pthread_attr_destroy(&attr);
        }
        if (rc != 0) {
            static atomic_int s_reported;
            if (!atomic_exchange(&s_reported, 1))
                log_warn("kpar: cannot start a helper thread (error %d): the kernels' loops run "
                         "on %d thread(s)",
                         rc, s_pool.n_helpers + 1);
            break;
        }
        s_pool.n_helpers++;
    }
    if (workers > s_pool.n_helpers + 1)
        workers = s_pool.n_helpers + 1;
    for (int w = 1; w < workers && scratch_bytes > 0; w++) {
        if (s_pool.scratch_cap[w] >= scratch_bytes)
            continue;
        void *grown = realloc(s_pool.scratch[w], scratch_bytes);
        if (!grown)
            return w; /* ranges with scratch so far */
        s_pool.scratch[w] = grown;
        s_pool.scratch_cap[w] = scratch_bytes;
    }
    return workers;
}

void kpar_for(int64_t n, int64_t grain, size_t scratch_bytes, kpar_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int workers = kpar_threads();
    if ((int64_t)workers > n / grain)
        workers = (int)(n / grain > 1 ? n / grain : 1);
    pthread_once(&s_pool.once, s_start);
    if (workers < 2 || pthread_mutex_trylock(&s_pool.busy) != 0) {
        fn(ctx, 0, n, NULL);
        return;
    }
    workers = s_prepare(workers, scratch_bytes);
    if (workers < 2) {
        pthread_mutex_unlock(&s_pool.busy);
        fn(ctx, 0, n, NULL);
        return;
    }
    s_pool.fn = fn;
    s_pool.ctx = ctx;
    s_pool.n = n;
    s_pool.workers = workers;
    /* every started helper takes part in the generation; those beyond `workers` just report */
    atomic_store_explicit(&s_pool.pending, s_pool.n_helpers, memory_order_relaxed);
    pthread_mutex_lock(&s_pool.mu);
    atomic_fetch_add_explicit(&s_pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&s_pool.wake);
    pthread_mutex_unlock(&s_pool.mu);
    int64_t lo, hi;
    s_range(n, workers, 0, &lo, &hi);
    if (lo < hi)
        fn(ctx, lo, hi, NULL);
    const int spin = s_spin_count();
    for (int s = 0; s < spin && atomic_load_explicit(&s_pool.pending, memory_order_acquire) > 0;
         s++)
        s_relax();
    if (atomic_load_explicit(&s_pool.pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&s_pool.mu);
        while (atomic_load_explicit(&s_pool.pending, memory_order_acquire) > 0)
            pthread_cond_wait(&s_pool.done, &s_pool.mu);
        pthread_mutex_unlock(&s_pool.mu);
    }
    pthread_mutex_unlock(&s_pool.busy);
}
