/* blas_select.c: names the BLAS kernels in use and, at start, re-executes the process once with
 * OPENBLAS_CORETYPE set when OpenBLAS loaded kernels below what the CPU runs (blas_select.h). */
#include "blas_select.h"

#include <cblas.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "log.h"

#define S_GUARD "SHOAL_BLAS_SELECTED"

/* OpenBLAS 0.3.21's x86 kernel sets by the widest vector ISA their sgemm uses: 2 AVX-512,
 * 1 AVX2, 0 older (SSE3 .. AVX); -1 a name this table does not know. */
static int s_set_rank(const char *name)
{
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "Excavator"};
    static const char *const older[] = {
        "Unknown",  "Katmai",     "Coppermine", "Northwood",    "Prescott",  "Banias",
        "Atom",     "Core2",      "Penryn",     "Dunnington",   "Nehalem",   "Athlon",
        "Opteron",  "Opteron_SSE3", "Barcelona", "Nano",        "Sandybridge", "Bobcat",
        "Bulldozer", "Piledriver", "Steamroller"};
    for (size_t i = 0; i < sizeof avx512 / sizeof *avx512; i++)
        if (strcasecmp(name, avx512[i]) == 0)
            return 2;
    for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++)
        if (strcasecmp(name, avx2[i]) == 0)
            return 1;
    for (size_t i = 0; i < sizeof older / sizeof *older; i++)
        if (strcasecmp(name, older[i]) == 0)
            return 0;
    return -1;
}

static const char *s_vendor_name(blas_cpu_vendor_t v)
{
    switch (v) {
    case BLAS_CPU_INTEL: return "Intel";
    case BLAS_CPU_AMD: return "AMD";
    case BLAS_CPU_HYGON: return "Hygon";
    default: return "unknown-vendor";
    }
}

static const char *s_isa_name(const blas_cpu_t *cpu)
{
    if (cpu->avx512)
        return cpu->avx512_bf16 ? "AVX-512 + BF16" : "AVX-512";
    return cpu->avx2 ? "AVX2" : "no AVX2";
}

/* The set for this CPU (NULL: none of ours fits) and its rank. Measured on a Zen 5 EPYC
 * (sgemm 1024³, one core): SkylakeX 191, Cooperlake 188, Haswell 106, Zen 88 GFLOP/s, so AMD
 * CPUs with AVX-512 get the AVX-512 sets as Intel ones do. */
static const char *s_target_set(const blas_cpu_t *cpu, int *rank)
{
    if (cpu->avx512) {
        *rank = 2;
        return cpu->avx512_bf16 ? "Cooperlake" : "SkylakeX";
    }
    if (cpu->avx2) {
        *rank = 1;
        return cpu->vendor == BLAS_CPU_INTEL ? "Haswell" : "Zen";
    }
    *rank = 0;
    return NULL;
}

/* out = keep (coretype NULL) or re-exec with coretype; reason from fmt. */
static void s_choose(blas_choice_t *out, const char *coretype, const char *fmt, va_list ap)
{
    out->reexec = coretype != NULL;
    snprintf(out->coretype, sizeof out->coretype, "%s", coretype ? coretype : "");
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
}

static void s_keep(blas_choice_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_keep(blas_choice_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_choose(out, NULL, fmt, ap);
    va_end(ap);
}

static void s_reexec(blas_choice_t *out, const char *coretype, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_reexec(blas_choice_t *out, const char *coretype, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_choose(out, coretype, fmt, ap);
    va_end(ap);
}

void blas_select_decide(const blas_cpu_t *cpu, const blas_env_t *env, blas_choice_t *out)
{
    const char *cur = env->corename ? env->corename : "Unknown";
    const bool named = env->env_select && env->env_select[0] &&
                       strcasecmp(env->env_select, "auto") != 0 &&
                       strcasecmp(env->env_select, "keep") != 0;
    int cur_rank = s_set_rank(cur), want_rank = 0;
    const char *want = named ? env->env_select : s_target_set(cpu, &want_rank);
    /* the guard first: in the re-executed process OPENBLAS_CORETYPE is ours */
    if (env->env_selected)
        s_keep(out, "selected at start: %s", env->env_selected);
    else if (env->env_select && strcasecmp(env->env_select, "keep") == 0)
        s_keep(out, "kept %s: SHOAL_BLAS_CORETYPE=keep", cur);
    else if (env->env_coretype)
        s_keep(out, "kept: OPENBLAS_CORETYPE='%s' was set by the user or the machine",
               env->env_coretype);
    else if (!env->dynamic_arch)
        s_keep(out, "kept %s: the library has one kernel set (no DYNAMIC_ARCH)", cur);
    else if (named && s_set_rank(want) < 0)
        s_keep(out, "kept %s: SHOAL_BLAS_CORETYPE=%s is no kernel set shoal knows", cur, want);
    else if (named && strcasecmp(want, cur) == 0)
        s_keep(out, "kept %s: as SHOAL_BLAS_CORETYPE asks", cur);
    else if (named)
        s_reexec(out, want, "OPENBLAS_CORETYPE=%s from SHOAL_BLAS_CORETYPE (OpenBLAS chose %s)",
                 want, cur);
    else if (cpu->vendor == BLAS_CPU_OTHER)
        s_keep(out, "kept %s: CPU vendor not known to the selection", cur);
    else if (cur_rank < 0)
        s_keep(out, "kept %s: a kernel set the selection does not know", cur);
    else if (!want || cur_rank >= want_rank)
        s_keep(out, "kept %s: it fits this CPU (%s)", cur, s_isa_name(cpu));
    else
        s_reexec(out, want,
                 "OPENBLAS_CORETYPE=%s, as OpenBLAS chose %s (%s) on %s family %d model %d with %s",
                 want, cur, cur_rank == 0 ? "no AVX2" : "AVX2 only", s_vendor_name(cpu->vendor),
                 cpu->family, cpu->model, s_isa_name(cpu));
}

void blas_select_probe_cpu(blas_cpu_t *out)
{
    memset(out, 0, sizeof *out);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    const unsigned max_leaf = a;
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = 0;
    out->vendor = strcmp(vendor, "GenuineIntel") == 0   ? BLAS_CPU_INTEL
                  : strcmp(vendor, "AuthenticAMD") == 0 ? BLAS_CPU_AMD
                  : strcmp(vendor, "HygonGenuine") == 0 ? BLAS_CPU_HYGON
                                                        : BLAS_CPU_OTHER;
    __get_cpuid(1, &a, &b, &c, &d);
    const unsigned base_family = (a >> 8) & 0xf;
    out->family = (int)(base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family);
    out->model = (int)((a >> 4) & 0xf);
    if (base_family == 6 || base_family == 0xf)
        out->model += (int)(((a >> 16) & 0xf) << 4);
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (!osxsave || !avx || max_leaf < 7)
        return;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const bool ymm_os = (xcr0_lo & 0x6) == 0x6, zmm_os = (xcr0_lo & 0xe6) == 0xe6;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned avx512_bits = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
    out->avx2 = ymm_os && fma && (b & (1u << 5));
    out->avx512 = out->avx2 && zmm_os && (b & avx512_bits) == avx512_bits;
    const unsigned subleaves = a;
    if (out->avx512 && subleaves >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        out->avx512_bf16 = a & (1u << 5);
    }
#endif
}

static char s_reason[sizeof ((blas_choice_t *)0)->reason] = "selection not run in this process";

void blas_select_at_start(char **argv)
{
    blas_cpu_t cpu;
    blas_select_probe_cpu(&cpu);
    const char *test_core = getenv("SHOAL_BLAS_TEST_CORENAME");
    const char *loaded = openblas_get_corename();
    blas_env_t env = {.corename = test_core && test_core[0] ? test_core : loaded,
                      .dynamic_arch = strstr(openblas_get_config(), "DYNAMIC_ARCH") != NULL,
                      .env_coretype = getenv("OPENBLAS_CORETYPE"),
                      .env_select = getenv("SHOAL_BLAS_CORETYPE"),
                      .env_selected = getenv(S_GUARD)};
    blas_choice_t ch;
    blas_select_decide(&cpu, &env, &ch);
    snprintf(s_reason, sizeof s_reason, "%s", ch.reason);
    if (env.env_selected && env.env_coretype && strcasecmp(env.env_coretype, loaded) != 0)
        log_warn("BLAS: asked OpenBLAS for %s kernels, it loaded %s", env.env_coretype, loaded);
    if (!ch.reexec)
        return;
    if (setenv("OPENBLAS_CORETYPE", ch.coretype, 1) != 0 || setenv(S_GUARD, ch.reason, 1) != 0) {
        log_warn("BLAS: cannot set OPENBLAS_CORETYPE=%s; keeping %s", ch.coretype, loaded);
        snprintf(s_reason, sizeof s_reason, "kept %s: setenv failed", loaded);
        return;
    }
    execv("/proc/self/exe", argv);
    /* still here: run on with the loaded kernels, and let children choose for themselves */
    log_warn("BLAS: re-executing with OPENBLAS_CORETYPE=%s failed (%m); keeping %s", ch.coretype,
             loaded);
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(S_GUARD);
    snprintf(s_reason, sizeof s_reason, "kept %s: the re-exec failed", loaded);
}

void blas_select_describe(char *buf, size_t cap)
{
    /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64": the first two
     * words are the library and its version */
    const char *cfg = openblas_get_config();
    const int name_len = (int)strcspn(cfg, " ");
    const char *ver = cfg + name_len + (cfg[name_len] ? 1 : 0);
    snprintf(buf, cap, "%.*s %.*s%s, kernels %s, threads %d; selection: %s", name_len, cfg,
             (int)strcspn(ver, " "), ver, strstr(cfg, "DYNAMIC_ARCH") ? " (DYNAMIC_ARCH)" : "",
             openblas_get_corename(), blas_select_threads(), s_reason);
}

void blas_select_log(const char *who)
{
    char line[512];
    blas_select_describe(line, sizeof line);
    log_info("%s: BLAS %s", who, line);
}

static int s_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static atomic_int s_threads; /* blas_select_set_threads; 0: never called */

void blas_select_set_threads(int threads)
{
    /* more threads than cores this process may run on only makes them wait for each other */
    const int cores = s_cores();
    if (threads > cores) {
        log_warn("BLAS: %d threads asked, %d cores available to this process: using %d", threads,
                 cores, cores);
        threads = cores;
    }
    atomic_store(&s_threads, threads < 1 ? 1 : threads);
    /* shoal spreads each GEMM's blocks over its own threads (kernels/kgemm.c), and every block
     * runs whole on the thread that took it */
    openblas_set_num_threads(1);
}

int blas_select_threads(void)
{
    const int t = atomic_load(&s_threads);
    return t > 0 ? t : openblas_get_num_threads();
}
