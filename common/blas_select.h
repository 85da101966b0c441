/* blas_select.h: which BLAS kernels this process runs, and choosing them at start. Debian's
 * OpenBLAS 0.3.21 falls back to generic kernels (Prescott, SSE3) on CPUs newer than it knows
 * (Intel family 6 model 207 with AVX-512: 30 GFLOP/s instead of 110-190), and it reads its kernel
 * choice (OPENBLAS_CORETYPE) once, in a constructor, before main. So the choice is made by
 * re-executing the process once with OPENBLAS_CORETYPE set; README "BLAS kernels" says what is
 * chosen and how to override it.
 *
 * Environment read: OPENBLAS_CORETYPE (set, even empty: never overridden), SHOAL_BLAS_CORETYPE
 * (keep: no selection; auto or unset: the default; a kernel set name: that one),
 * SHOAL_BLAS_SELECTED (the re-exec guard, set by the first process; holds its reason), and, for
 * tests only, SHOAL_BLAS_TEST_CORENAME (act as if OpenBLAS had loaded that set). */
#ifndef SHOAL_BLAS_SELECT_H
#define SHOAL_BLAS_SELECT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BLAS_CPU_OTHER = 0, BLAS_CPU_INTEL, BLAS_CPU_AMD, BLAS_CPU_HYGON } blas_cpu_vendor_t;

/* What cpuid says (family and model as /proc/cpuinfo shows them; the ISA flags count only when
 * the OS saves the registers, as xgetbv says). */
typedef struct {
    blas_cpu_vendor_t vendor;
    int family, model;
    bool avx2;        /* AVX2 + FMA, YMM state enabled */
    bool avx512;      /* AVX-512 F, BW, VL, DQ, CD (what OpenBLAS's SkylakeX kernels use), ZMM state */
    bool avx512_bf16; /* AVX512_BF16 (OpenBLAS's Cooperlake set) */
} blas_cpu_t;

/* What the selection looks at besides the CPU. Strings are borrowed; NULL means unset. */
typedef struct {
    const char *corename;      /* the kernel set OpenBLAS loaded (openblas_get_corename) */
    bool dynamic_arch;         /* the library can switch sets (DYNAMIC_ARCH in its config) */
    const char *env_coretype;  /* OPENBLAS_CORETYPE; "" is set */
    const char *env_select;    /* SHOAL_BLAS_CORETYPE */
    const char *env_selected;  /* SHOAL_BLAS_SELECTED: this process is the re-executed one */
} blas_env_t;

typedef struct {
    bool reexec;        /* re-execute with OPENBLAS_CORETYPE = coretype */
    char coretype[32];  /* the set to ask for (reexec) */
    char reason[224];   /* why, in words, for the log line */
} blas_choice_t;

/* The decision, a pure function of its inputs: keep the loaded set, or re-execute with
 * OPENBLAS_CORETYPE = out->coretype. Never re-executes when the guard or OPENBLAS_CORETYPE is
 * set, with SHOAL_BLAS_CORETYPE=keep, or with a library of one kernel set. Without a name in
 * SHOAL_BLAS_CORETYPE it re-executes only when the loaded set is below what the CPU runs (no
 * AVX2 on an AVX2 CPU, AVX2 only on an AVX-512 CPU), asking for Cooperlake (AVX-512 with BF16),
 * SkylakeX (AVX-512), Zen (AMD/Hygon AVX2) or Haswell (Intel AVX2); an unknown vendor or set
 * name is kept. */
void blas_select_decide(const blas_cpu_t *cpu, const blas_env_t *env, blas_choice_t *out);

/* This CPU, from cpuid and xgetbv. */
void blas_select_probe_cpu(blas_cpu_t *out);

/* Call first in main, before threads, files or sockets: decides from this process's CPU, library
 * and environment, and when that says so re-executes /proc/self/exe with `argv` (and does not
 * return). If the exec fails it logs a warning and the process continues with the loaded set.
 * Remembers the reason for blas_select_describe. */
void blas_select_at_start(char **argv);

/* One line: library and version, kernel set in use, threads, and the selection's reason, e.g.
 * "OpenBLAS 0.3.21 (DYNAMIC_ARCH), kernels Cooperlake, threads 2; selection: ...". */
void blas_select_describe(char *buf, size_t cap);

/* Logs blas_select_describe's line at INFO as "<who>: BLAS ...". */
void blas_select_log(const char *who);

/* Sets the process's compute threads (train.threads, --threads), cut to the cores it may run
 * on: kernels/kpar's threads run the kernel loops and the blocks of each GEMM (kgemm), and
 * OpenBLAS itself is set to one thread, so that each block runs whole on the thread that took
 * it and a run computes the same bits at any thread count. */
void blas_select_set_threads(int threads);

/* The count blas_select_set_threads set; before any call, OpenBLAS's own thread count. */
int blas_select_threads(void);

#ifdef __cplusplus
}
#endif
#endif
