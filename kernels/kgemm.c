/* kgemm.c: the CPU GEMM entry point. fp32 is cblas_sgemm unchanged. bf16 converts both operands
 * to bf16 into per-thread scratch (keeping their orientation, so no transpose) and runs oneDNN's
 * matmul with fp32 output. oneDNN primitives are cached per (precision, transposes, alpha, beta)
 * with M, N, K and the strides given at execution (DNNL_RUNTIME_DIM_VAL): the routed experts'
 * row counts change every step, and creating a primitive per shape costs 0.3–15 ms. */
#include "kgemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "kpar.h"
#include "log.h"

#ifdef SHOAL_HAVE_ONEDNN
#include <dlfcn.h>
#include <dnnl.h>
#endif

/* Round to nearest even on the bit pattern; a NaN keeps its sign and becomes a quiet NaN (the
 * carry would otherwise turn a NaN with a low payload into infinity). */
void kgemm_round_bf16(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const int is_nan = (u & 0x7fffffffu) > 0x7f800000u;
        dst[i] = (uint16_t)(is_nan ? (u >> 16) | 0x40u : rounded);
    }
}

int kgemm_cpu_has_bf16(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    /* XMM, YMM, opmask, ZMM upper halves and ZMM16-31 saved by the OS */
    const int os_avx512 = (xlo & 0xe6u) == 0xe6u;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    const int avx512f = (b >> 16) & 1, amx_bf16 = (d >> 22) & 1;
    int avx512_bf16 = 0;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
        avx512_bf16 = (a >> 5) & 1;
    return (os_avx512 && avx512f && avx512_bf16) || amx_bf16;
#else
    return 0;
#endif
}

const char *kgemm_prec_name(kgemm_prec_t prec)
{
    switch (prec) {
    case KGEMM_FP32:
        return "fp32";
    case KGEMM_BF16:
        return "bf16";
    case KGEMM_FP32_ONEDNN:
        return "fp32-onednn";
    }
    return "?";
}

static void s_sgemm_whole(int trans_a, int trans_b, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta, float *C,
                          int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* One fp32 GEMM cut into blocks of C along its longer side (rows when M >= N). */
typedef struct {
    kgemm_prec_t prec;
    int trans_a, trans_b, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
    int by_rows; /* blocks of C's rows, else of its columns */
    int block;   /* rows (columns) per block; the last may be shorter */
    /* bf16: the operand every block reads whole (B for row blocks, A for column blocks), rounded
     * once by the caller (packed rows), or NULL: each block rounds its own */
    const uint16_t *shared16;
} s_blocked_t;

/* 256 rows or columns a block: at one thread the blocks cost 2-5% against whole calls (tiny G 16,
 * Cooperlake; 64-row blocks cost 8% for 7% more at two threads); a block under 2^20 multiply-adds
 * (~10 us) is not worth a call of its own */
#define S_BLOCK 256
#define S_BLOCK_MIN_MACS ((int64_t)1 << 20)

void kgemm_fp32_blocks(int M, int N, int K, int *by_rows, int *block, int *blocks)
{
    *by_rows = M >= N;
    const int64_t side = *by_rows ? M : N;
    int64_t b = S_BLOCK, n = (side + b - 1) / b;
    const int64_t by_work = (int64_t)M * N * K / S_BLOCK_MIN_MACS;
    if (n > by_work) { /* fewer, longer blocks: multiples of 32, the kernels' tile edges */
        n = by_work > 1 ? by_work : 1;
        b = ((side + n - 1) / n + 31) / 32 * 32;
        n = (side + b - 1) / b;
    }
    *block = (int)b;
    *blocks = (int)n;
}

/* Rows (columns) [a, a + n) of g's C, on the calling thread: OpenBLAS sgemm, or oneDNN with
 * omp_threads OpenMP threads; defined per build below. */
static void s_block_run(const s_blocked_t *g, int a, int n, int omp_threads);

/* The operands of rows (columns) [a, a + n) of g's C: that block is an M x N x K GEMM. */
typedef struct {
    int M, N;
    const float *A, *B;
    float *C;
} s_block_t;

static s_block_t s_block_of(const s_blocked_t *g, int a, int n)
{
    if (g->by_rows)
        return (s_block_t){n, g->N, g->trans_a ? g->A + a : g->A + (size_t)a * g->lda, g->B,
                           g->C + (size_t)a * g->ldc};
    return (s_block_t){g->M, n, g->A, g->trans_b ? g->B + (size_t)a * g->ldb : g->B + a, g->C + a};
}

static void s_blocked_range(void *ctx, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_blocked_t *g = ctx;
    for (int64_t blk = lo; blk < hi; blk++) {
        const int a = (int)blk * g->block, side = g->by_rows ? g->M : g->N;
        s_block_run(g, a, side - a < g->block ? side - a : g->block, 1);
    }
}

/* Rounds the operand every block of g reads whole to bf16 once, for them all (oneDNN builds);
 * leaves g->shared16 NULL when it need not or cannot. */
static void s_share_bf16(s_blocked_t *g);

/* When OpenBLAS runs on one thread (blas_select_set_threads: every configured shoal process),
 * C is cut into blocks by the shape alone and the blocks are spread over kpar's threads, each
 * one single-threaded GEMM (OpenBLAS sgemm, or oneDNN on one OpenMP thread): the same calls at
 * any thread count, so the same bits, and one set of threads in the process (OpenMP's or
 * OpenBLAS's spinning between kpar's jobs made 2 threads slower than 1). When OpenBLAS has its
 * own threads (a process that never chose), the GEMM runs whole, oneDNN on kpar_threads(). */
static void s_gemm(kgemm_prec_t prec, int trans_a, int trans_b, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    const int configured = openblas_get_num_threads() == 1;
    int by_rows, block, blocks;
    kgemm_fp32_blocks(M, N, K, &by_rows, &block, &blocks);
    s_blocked_t g = {.prec = prec,
                     .trans_a = trans_a,
                     .trans_b = trans_b,
                     .M = M,
                     .N = N,
                     .K = K,
                     .alpha = alpha,
                     .beta = beta,
                     .A = A,
                     .B = B,
                     .C = C,
                     .lda = lda,
                     .ldb = ldb,
                     .ldc = ldc,
                     .by_rows = by_rows,
                     .block = block};
    if (blocks < 2 || !configured) {
        s_block_run(&g, 0, by_rows ? M : N, configured ? 1 : kpar_threads());
        return;
    }
    if (prec == KGEMM_BF16)
        s_share_bf16(&g);
    kpar_for(blocks, 1, 0, s_blocked_range, &g);
}

#ifdef SHOAL_HAVE_ONEDNN

/* One cached primitive: shapes and strides are runtime values, the rest is fixed. */
typedef struct {
    kgemm_prec_t prec;
    int trans_a, trans_b;
    uint32_t alpha_bits, beta_bits;
    dnnl_primitive_t prim;
} s_prim_t;

#define S_MAX_PRIMS 32

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    dnnl_engine_t engine; /* NULL: oneDNN did not start (error logged once) */
    void (*omp_set_num_threads)(int);
    pthread_key_t tls_key;
    int n_prims;
    s_prim_t prims[S_MAX_PRIMS];
} s_dnnl = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

/* Per thread: a stream (oneDNN streams are not for concurrent use), bf16 scratch for the two
 * operands (grown, never shrunk) and the OpenMP thread count last set on this thread. */
typedef struct {
    dnnl_stream_t stream;
    uint16_t *scratch;
    size_t scratch_elems;
    uint16_t *shared; /* s_share_bf16's operand, read by every block of one GEMM */
    size_t shared_elems;
    int omp_threads;
} s_tls_t;

static void s_tls_free(void *p)
{
    s_tls_t *t = p;
    if (t->stream)
        dnnl_stream_destroy(t->stream);
    free(t->scratch);
    free(t->shared);
    free(t);
}

static void s_dnnl_start(void)
{
    if (pthread_key_create(&s_dnnl.tls_key, s_tls_free) != 0) {
        log_error("kgemm: pthread_key_create failed: oneDNN GEMMs run in fp32 on OpenBLAS");
        return;
    }
    dnnl_status_t st = dnnl_engine_create(&s_dnnl.engine, dnnl_cpu, 0);
    if (st != dnnl_success) {
        log_error("kgemm: oneDNN engine: status %d: oneDNN GEMMs run in fp32 on OpenBLAS", (int)st);
        s_dnnl.engine = NULL;
        return;
    }
    /* Debian's oneDNN runs on OpenMP (libgomp, loaded with it): its thread count is OpenMP's.
     * Looked up rather than linked so that no OpenMP flags reach the build. */
    *(void **)&s_dnnl.omp_set_num_threads = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
}

static s_tls_t *s_tls(void)
{
    s_tls_t *t = pthread_getspecific(s_dnnl.tls_key);
    if (t)
        return t;
    if (!(t = calloc(1, sizeof *t)))
        return NULL;
    if (dnnl_stream_create(&t->stream, s_dnnl.engine, dnnl_stream_default_flags) != dnnl_success ||
        pthread_setspecific(s_dnnl.tls_key, t) != 0) {
        s_tls_free(t);
        return NULL;
    }
    return t;
}

/* 2-D descriptor of a [rows, cols] logical matrix stored transposed or not; all runtime. */
static dnnl_status_t s_md_runtime(dnnl_memory_desc_t *md, dnnl_data_type_t dt, int trans)
{
    const dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
    const dnnl_dims_t dims = {R, R};
    const dnnl_dims_t strides_plain = {R, 1}, strides_trans = {1, R};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, trans ? strides_trans : strides_plain);
}

static dnnl_status_t s_md(dnnl_memory_desc_t *md, dnnl_data_type_t dt, int rows, int cols,
                          int trans, int ld)
{
    const dnnl_dims_t dims = {rows, cols};
    const dnnl_dims_t strides_plain = {ld, 1}, strides_trans = {1, ld};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, trans ? strides_trans : strides_plain);
}

static dnnl_status_t s_prim_create(kgemm_prec_t prec, int trans_a, int trans_b, float alpha,
                                   float beta, dnnl_primitive_t *out)
{
    const dnnl_data_type_t in = prec == KGEMM_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t a, b, c;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st;
    if ((st = s_md_runtime(&a, in, trans_a)) != dnnl_success ||
        (st = s_md_runtime(&b, in, trans_b)) != dnnl_success ||
        (st = s_md_runtime(&c, dnnl_f32, 0)) != dnnl_success ||
        (st = dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c)) != dnnl_success ||
        (st = dnnl_primitive_attr_create(&attr)) != dnnl_success)
        goto out;
    if (alpha != 1.0f &&
        (st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha)) != dnnl_success)
        goto out;
    if (beta != 0.0f) {
        if ((st = dnnl_post_ops_create(&po)) != dnnl_success ||
            (st = dnnl_post_ops_append_sum(po, beta)) != dnnl_success ||
            (st = dnnl_primitive_attr_set_post_ops(attr, po)) != dnnl_success)
            goto out;
    }
    if ((st = dnnl_primitive_desc_create(&pd, &desc, attr, s_dnnl.engine, NULL)) != dnnl_success)
        goto out;
    st = dnnl_primitive_create(out, pd);
out:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The cached primitive for these fixed parameters, created on first use (NULL on failure). */
static dnnl_primitive_t s_prim_get(kgemm_prec_t prec, int trans_a, int trans_b, float alpha,
                                   float beta, dnnl_status_t *st)
{
    uint32_t ab, bb;
    memcpy(&ab, &alpha, sizeof ab);
    memcpy(&bb, &beta, sizeof bb);
    dnnl_primitive_t prim = NULL;
    *st = dnnl_success;
    pthread_mutex_lock(&s_dnnl.lock);
    for (int i = 0; i < s_dnnl.n_prims && !prim; i++) {
        const s_prim_t *p = &s_dnnl.prims[i];
        if (p->prec == prec && p->trans_a == trans_a && p->trans_b == trans_b &&
            p->alpha_bits == ab && p->beta_bits == bb)
            prim = p->prim;
    }
    if (!prim && s_dnnl.n_prims < S_MAX_PRIMS &&
        (*st = s_prim_create(prec, trans_a, trans_b, alpha, beta, &prim)) == dnnl_success)
        s_dnnl.prims[s_dnnl.n_prims++] = (s_prim_t){prec, trans_a, trans_b, ab, bb, prim};
    else if (!prim && *st == dnnl_success)
        *st = dnnl_out_of_memory; /* more distinct (alpha, beta) pairs than any caller uses */
    pthread_mutex_unlock(&s_dnnl.lock);
    return prim;
}

/* Copies a [rows, cols] operand stored with row stride ld into dense bf16 (same orientation). */
static void s_to_bf16(const float *x, int rows, int cols, int ld, uint16_t *dst)
{
    for (int r = 0; r < rows; r++)
        kgemm_round_bf16(x + (size_t)r * ld, dst + (size_t)r * cols, cols);
}

/* The oneDNN matmul; dnnl_success or the failing status. */
static dnnl_status_t s_dnnl_gemm(kgemm_prec_t prec, int threads, int trans_a, int trans_b, int M,
                                 int N, int K, float alpha, const float *A, int lda, const float *B,
                                 int ldb, float beta, float *C, int ldc, const uint16_t *a16,
                                 const uint16_t *b16)
{
    pthread_once(&s_dnnl.once, s_dnnl_start);
    if (!s_dnnl.engine)
        return dnnl_runtime_error;
    s_tls_t *t = s_tls();
    if (!t)
        return dnnl_out_of_memory;
    dnnl_status_t st;
    dnnl_primitive_t prim = s_prim_get(prec, trans_a, trans_b, alpha, beta, &st);
    if (!prim)
        return st;
    /* stored shapes: A is [M, K] or, transposed, [K, M]; B is [K, N] or [N, K] */
    const int a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
    const int b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
    const void *a_data = A, *b_data = B;
    int a_ld = lda, b_ld = ldb;
    dnnl_data_type_t in = dnnl_f32;
    if (prec == KGEMM_BF16) { /* a16, b16: already rounded (packed rows), else rounded here */
        const size_t need = (a16 ? 0 : (size_t)M * K) + (b16 ? 0 : (size_t)K * N);
        if (need > t->scratch_elems) {
            uint16_t *grown = realloc(t->scratch, need * sizeof(uint16_t));
            if (!grown)
                return dnnl_out_of_memory;
            t->scratch = grown;
            t->scratch_elems = need;
        }
        if (!a16)
            s_to_bf16(A, a_rows, a_cols, lda, t->scratch);
        if (!b16)
            s_to_bf16(B, b_rows, b_cols, ldb, t->scratch + (a16 ? 0 : (size_t)M * K));
        a_data = a16 ? a16 : t->scratch;
        b_data = b16 ? b16 : t->scratch + (a16 ? 0 : (size_t)M * K);
        a_ld = a_cols;
        b_ld = b_cols;
        in = dnnl_bf16;
    }
    if (s_dnnl.omp_set_num_threads && threads != t->omp_threads) {
        s_dnnl.omp_set_num_threads(threads);
        t->omp_threads = threads;
    }
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    if ((st = s_md(&amd, in, M, K, trans_a, a_ld)) != dnnl_success ||
        (st = s_md(&bmd, in, K, N, trans_b, b_ld)) != dnnl_success ||
        (st = s_md(&cmd, dnnl_f32, M, N, 0, ldc)) != dnnl_success ||
        (st = dnnl_memory_create(&am, &amd, s_dnnl.engine, (void *)a_data)) != dnnl_success ||
        (st = dnnl_memory_create(&bm, &bmd, s_dnnl.engine, (void *)b_data)) != dnnl_success ||
        (st = dnnl_memory_create(&cm, &cmd, s_dnnl.engine, C)) != dnnl_success)
        goto out;
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    if ((st = dnnl_primitive_execute(prim, t->stream, 3, args)) == dnnl_success)
        st = dnnl_stream_wait(t->stream);
out:
    if (am)
        dnnl_memory_destroy(am);
    if (bm)
        dnnl_memory_destroy(bm);
    if (cm)
        dnnl_memory_destroy(cm);
    return st;
}

static void s_block_run(const s_blocked_t *g, int a, int n, int omp_threads)
{
    const s_block_t b = s_block_of(g, a, n);
    if (g->prec != KGEMM_FP32 && b.M > 0 && b.N > 0 && g->K > 0) { /* K 0: C = beta·C (sgemm) */
        const dnnl_status_t st =
            s_dnnl_gemm(g->prec, omp_threads, g->trans_a, g->trans_b, b.M, b.N, g->K, g->alpha, b.A,
                        g->lda, b.B, g->ldb, g->beta, b.C, g->ldc, g->by_rows ? NULL : g->shared16,
                        g->by_rows ? g->shared16 : NULL);
        if (st == dnnl_success)
            return;
        static int s_reported;
        if (!__atomic_exchange_n(&s_reported, 1, __ATOMIC_RELAXED))
            log_error("kgemm: oneDNN %s matmul %dx%dx%d failed (status %d): this and any later "
                      "failing GEMM run in fp32 on OpenBLAS",
                      kgemm_prec_name(g->prec), b.M, b.N, g->K, (int)st);
    }
    s_sgemm_whole(g->trans_a, g->trans_b, b.M, b.N, g->K, g->alpha, b.A, g->lda, b.B, g->ldb,
                  g->beta, b.C, g->ldc);
}

typedef struct {
    const float *x;
    int cols, ld;
    uint16_t *dst;
} s_round_job_t;

static void s_round_rows(void *ctx, int64_t lo, int64_t hi, void *scratch)
{
    (void)scratch;
    const s_round_job_t *j = ctx;
    s_to_bf16(j->x + (size_t)lo * j->ld, (int)(hi - lo), j->cols, j->ld,
              j->dst + (size_t)lo * j->cols);
}

static void s_share_bf16(s_blocked_t *g)
{
    g->shared16 = NULL;
    pthread_once(&s_dnnl.once, s_dnnl_start);
    s_tls_t *t = s_dnnl.engine ? s_tls() : NULL;
    if (!t || g->M == 0 || g->N == 0 || g->K == 0)
        return;
    /* row blocks all read B whole ([K, N], or [N, K] transposed), column blocks A ([M, K] or
     * [K, M]) */
    const int rows = g->by_rows ? (g->trans_b ? g->N : g->K) : (g->trans_a ? g->K : g->M);
    const int cols = g->by_rows ? (g->trans_b ? g->K : g->N) : (g->trans_a ? g->M : g->K);
    const size_t need = (size_t)rows * cols;
    if (need > t->shared_elems) {
        uint16_t *grown = realloc(t->shared, need * sizeof(uint16_t));
        if (!grown)
            return; /* each block rounds its own */
        t->shared = grown;
        t->shared_elems = need;
    }
    s_round_job_t j = {g->by_rows ? g->B : g->A, cols, g->by_rows ? g->ldb : g->lda, t->shared};
    kpar_for(rows, 64, 0, s_round_rows, &j);
    g->shared16 = t->shared;
}

void kgemm(kgemm_prec_t prec, int trans_a, int trans_b, int M, int N, int K, float alpha,
           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    s_gemm(prec, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int kgemm_bf16_available(void)
{
    return kgemm_cpu_has_bf16();
}

shoal_err_t kgemm_check(kgemm_prec_t prec)
{
    if (prec == KGEMM_FP32)
        return SHOAL_OK;
    if (prec == KGEMM_BF16 && !kgemm_cpu_has_bf16())
        return shoal_fail(SHOAL_ERR_INVALID,
                          "bf16 on the CPU needs AVX512_BF16 or AMX-BF16, which this CPU lacks "
                          "(cpuid); use train.precision fp32");
    pthread_once(&s_dnnl.once, s_dnnl_start);
    if (!s_dnnl.engine)
        return shoal_fail(SHOAL_ERR_INVALID, "%s on the CPU: oneDNN did not start (see the log)",
                          kgemm_prec_name(prec));
    dnnl_status_t st;
    if (!s_prim_get(prec, 0, 1, 1.0f, 0.0f, &st))
        return shoal_fail(SHOAL_ERR_INVALID, "%s on the CPU: oneDNN refused a matmul (status %d)",
                          kgemm_prec_name(prec), (int)st);
    return SHOAL_OK;
}

#else /* built without oneDNN */

int kgemm_bf16_available(void)
{
    return 0;
}

static void s_block_run(const s_blocked_t *g, int a, int n, int omp_threads)
{
    (void)omp_threads; /* fp32 only: kgemm_check refused anything else */
    const s_block_t b = s_block_of(g, a, n);
    s_sgemm_whole(g->trans_a, g->trans_b, b.M, b.N, g->K, g->alpha, b.A, g->lda, b.B, g->ldb,
                  g->beta, b.C, g->ldc);
}

static void s_share_bf16(s_blocked_t *g)
{
    g->shared16 = NULL;
}

void kgemm(kgemm_prec_t prec, int trans_a, int trans_b, int M, int N, int K, float alpha,
           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    (void)prec; /* kgemm_check refused anything else; keep the math right regardless */
    s_gemm(KGEMM_FP32, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

shoal_err_t kgemm_check(kgemm_prec_t prec)
{
    if (prec == KGEMM_FP32)
        return SHOAL_OK;
    return shoal_fail(SHOAL_ERR_INVALID,
                      "%s on the CPU needs oneDNN, and this shoal was built without it "
                      "(install libdnnl-dev and rebuild: ops/install-deps.sh); use "
                      "train.precision fp32",
                      kgemm_prec_name(prec));
}

#endif
