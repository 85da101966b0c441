/* test_blas_select: the BLAS kernel selection as a pure function of (CPU, loaded set, env):
 * what the user or machine set is never overridden, keep turns it off, the guard stops a second
 * re-exec, unknown CPUs and sets are kept, and fallen-back sets are replaced by the CPU's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "blas_select.h"

/* Intel family 6 model 207 (Emerald Rapids): AVX-512 + BF16, unknown to OpenBLAS 0.3.21 */
static const blas_cpu_t s_intel_spr = {BLAS_CPU_INTEL, 6, 207, true, true, true};
static const blas_cpu_t s_intel_skx = {BLAS_CPU_INTEL, 6, 85, true, true, false};
static const blas_cpu_t s_intel_avx2 = {BLAS_CPU_INTEL, 6, 158, true, false, false};
static const blas_cpu_t s_amd_zen3 = {BLAS_CPU_AMD, 25, 1, true, false, false};
static const blas_cpu_t s_amd_zen5 = {BLAS_CPU_AMD, 26, 2, true, true, true};
static const blas_cpu_t s_hygon = {BLAS_CPU_HYGON, 24, 0, true, false, false};
static const blas_cpu_t s_old_intel = {BLAS_CPU_INTEL, 6, 23, false, false, false};
static const blas_cpu_t s_other = {BLAS_CPU_OTHER, 7, 1, true, true, true};

/* the environment of a process OpenBLAS started with `core`, nothing set */
static blas_env_t s_env(const char *core)
{
    return (blas_env_t){.corename = core, .dynamic_arch = true};
}

static blas_choice_t s_decide(const blas_cpu_t *cpu, blas_env_t env)
{
    blas_choice_t c;
    memset(&c, 0x5a, sizeof c); /* garbage in: every field must be written */
    blas_select_decide(cpu, &env, &c);
    assert_non_null(memchr(c.reason, 0, sizeof c.reason));
    assert_true(strlen(c.reason) > 0);
    return c;
}

static void s_assert_reexec(blas_choice_t c, const char *coretype)
{
    assert_true(c.reexec);
    assert_string_equal(c.coretype, coretype);
}

static void s_assert_keep(blas_choice_t c, const char *reason_part)
{
    assert_false(c.reexec);
    assert_string_equal(c.coretype, "");
    if (!strstr(c.reason, reason_part))
        fail_msg("reason '%s' does not say '%s'", c.reason, reason_part);
}

/* unset: the generic fallback on an AVX-512 + BF16 Intel becomes Cooperlake, and the reason
 * names what OpenBLAS chose and the CPU */
static void test_unset_fallback_intel_avx512(void **state)
{
    (void)state;
    blas_choice_t c = s_decide(&s_intel_spr, s_env("Prescott"));
    s_assert_reexec(c, "Cooperlake");
    assert_non_null(strstr(c.reason, "Prescott"));
    assert_non_null(strstr(c.reason, "model 207"));
    s_assert_reexec(s_decide(&s_intel_skx, s_env("Core2")), "SkylakeX");
    s_assert_reexec(s_decide(&s_intel_avx2, s_env("Sandybridge")), "Haswell");
    s_assert_reexec(s_decide(&s_intel_spr, s_env("prescott")), "Cooperlake"); /* any case */
}

/* AMD: AVX2 only gets Zen; AVX-512 (Zen 4/5) gets the AVX-512 sets, also over an AVX2 set
 * OpenBLAS chose by itself (Zen: 88 against 191 GFLOP/s measured on a Zen 5) */
static void test_amd(void **state)
{
    (void)state;
    s_assert_reexec(s_decide(&s_amd_zen3, s_env("Prescott")), "Zen");
    s_assert_keep(s_decide(&s_amd_zen3, s_env("Zen")), "fits");
    s_assert_keep(s_decide(&s_amd_zen3, s_env("Haswell")), "fits");
    s_assert_reexec(s_decide(&s_amd_zen5, s_env("Prescott")), "Cooperlake");
    s_assert_reexec(s_decide(&s_amd_zen5, s_env("Zen")), "Cooperlake");
    s_assert_keep(s_decide(&s_amd_zen5, s_env("Cooperlake")), "fits");
    s_assert_keep(s_decide(&s_amd_zen5, s_env("SkylakeX")), "fits");
    s_assert_reexec(s_decide(&s_hygon, s_env("Opteron_SSE3")), "Zen");
}

/* OPENBLAS_CORETYPE set, even empty or to a generic set, is never overridden */
static void test_set_is_kept(void **state)
{
    (void)state;
    const char *values[] = {"", "Prescott", "Haswell", "nonsense"};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        blas_env_t e = s_env("Prescott");
        e.env_coretype = values[i];
        s_assert_keep(s_decide(&s_intel_spr, e), "set by the user or the machine");
        e.env_select = "SkylakeX"; /* a shoal request does not override it either */
        s_assert_keep(s_decide(&s_intel_spr, e), "set by the user or the machine");
    }
}

/* SHOAL_BLAS_CORETYPE=keep turns selection off; auto and empty are the default; a set name is
 * asked for as such (but not an unknown name) */
static void test_shoal_coretype(void **state)
{
    (void)state;
    blas_env_t e = s_env("Prescott");
    e.env_select = "keep";
    s_assert_keep(s_decide(&s_intel_spr, e), "SHOAL_BLAS_CORETYPE=keep");
    e.env_select = "KEEP";
    s_assert_keep(s_decide(&s_intel_spr, e), "SHOAL_BLAS_CORETYPE=keep");
    e.env_select = "auto";
    s_assert_reexec(s_decide(&s_intel_spr, e), "Cooperlake");
    e.env_select = "";
    s_assert_reexec(s_decide(&s_intel_spr, e), "Cooperlake");
    e.env_select = "Haswell";
    s_assert_reexec(s_decide(&s_intel_spr, e), "Haswell");
    e.corename = "Haswell";
    s_assert_keep(s_decide(&s_intel_spr, e), "as SHOAL_BLAS_CORETYPE asks");
    e.env_select = "Pentium9";
    s_assert_keep(s_decide(&s_intel_spr, e), "no kernel set");
}

/* the re-executed process (guard set, OPENBLAS_CORETYPE ours) never re-executes again, whatever
 * it loaded */
static void test_guard(void **state)
{
    (void)state;
    blas_env_t e = s_env("Prescott");
    e.env_coretype = "Cooperlake";
    e.env_selected = "OPENBLAS_CORETYPE=Cooperlake, as OpenBLAS chose Prescott";
    s_assert_keep(s_decide(&s_intel_spr, e), "selected at start: OPENBLAS_CORETYPE=Cooperlake");
    e.env_coretype = NULL;
    e.env_select = "SkylakeX";
    s_assert_keep(s_decide(&s_intel_spr, e), "selected at start");
}

/* unknown vendor, unknown set name, a CPU without AVX2, a library of one set: kept */
static void test_unknown_and_unfit(void **state)
{
    (void)state;
    s_assert_keep(s_decide(&s_other, s_env("Prescott")), "vendor not known");
    s_assert_keep(s_decide(&s_intel_spr, s_env("Graniterapids")), "does not know");
    s_assert_keep(s_decide(&s_old_intel, s_env("Core2")), "fits this CPU (no AVX2)");
    s_assert_keep(s_decide(&s_intel_skx, s_env("SkylakeX")), "fits");
    s_assert_keep(s_decide(&s_intel_avx2, s_env("Haswell")), "fits");
    blas_env_t e = s_env("Prescott");
    e.dynamic_arch = false;
    s_assert_keep(s_decide(&s_intel_spr, e), "one kernel set");
    e = s_env(NULL); /* no name at all reads as Unknown, a generic set */
    s_assert_reexec(s_decide(&s_intel_spr, e), "Cooperlake");
}

/* the probe on this machine agrees with /proc/cpuinfo's family and model */
static void test_probe_matches_cpuinfo(void **state)
{
    (void)state;
    blas_cpu_t cpu;
    blas_select_probe_cpu(&cpu);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f || cpu.vendor == BLAS_CPU_OTHER) {
        if (f)
            fclose(f);
        skip();
    }
    char line[8192];
    int family = -1, model = -1, avx2 = -1;
    while (fgets(line, sizeof line, f) && (family < 0 || model < 0 || avx2 < 0)) {
        if (family < 0)
            sscanf(line, "cpu family : %d", &family);
        if (model < 0 && strncmp(line, "model\t", 6) == 0)
            sscanf(line, "model : %d", &model);
        if (avx2 < 0 && strncmp(line, "flags", 5) == 0)
            avx2 = strstr(line, " avx2") != NULL;
    }
    fclose(f);
    assert_int_equal(cpu.family, family);
    assert_int_equal(cpu.model, model);
    assert_int_equal(cpu.avx2, avx2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_fallback_intel_avx512),
        cmocka_unit_test(test_amd),
        cmocka_unit_test(test_set_is_kept),
        cmocka_unit_test(test_shoal_coretype),
        cmocka_unit_test(test_guard),
        cmocka_unit_test(test_unknown_and_unfit),
        cmocka_unit_test(test_probe_matches_cpuinfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
