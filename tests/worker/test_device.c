/* test_device: --device specs (cpu, cuda:N, auto), their refusals and descriptions. Holds on a
 * machine with or without GPUs: what `auto` and `cuda:0` must give follows device_cuda_count(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "device.h"

static void s_expect_msg(const char *want)
{
    if (!strstr(shoal_errmsg(), want))
        fail_msg("message '%s' lacks '%s'", shoal_errmsg(), want);
}

static void test_cpu(void **state)
{
    (void)state;
    device_t d;
    memset(&d, 0x5a, sizeof d);
    assert_int_equal(device_select("cpu", &d), SHOAL_OK);
    assert_int_equal(d.kind, DEVICE_CPU);
    assert_int_equal(d.index, -1);
    assert_string_equal(d.name, "cpu");
    assert_true(d.memory_bytes > (64u << 20)); /* physical RAM: some memory, not garbage */
    assert_int_equal(d.cc_major, 0);
    assert_int_equal(device_bind(&d), SHOAL_OK);
    char buf[64];
    device_describe(&d, buf, sizeof buf);
    assert_true(strncmp(buf, "cpu (", 5) == 0 && strstr(buf, " GiB)"));
    device_spec(&d, buf, sizeof buf);
    assert_string_equal(buf, "cpu");
}

static void test_describe_fixed(void **state)
{
    (void)state;
    device_t d = {.kind = DEVICE_CUDA, .index = 3, .memory_bytes = 150119892992ull,
                  .cc_major = 9};
    snprintf(d.name, sizeof d.name, "NVIDIA H200");
    char buf[80];
    device_describe(&d, buf, sizeof buf);
    assert_string_equal(buf, "cuda:3 NVIDIA H200 (139.8 GiB)");
    device_spec(&d, buf, sizeof buf);
    assert_string_equal(buf, "cuda:3");
    device_t c = {.kind = DEVICE_CPU, .index = -1, .memory_bytes = 24ull << 30};
    device_describe(&c, buf, sizeof buf);
    assert_string_equal(buf, "cpu (24.0 GiB)");
    char small[8];
    device_describe(&d, small, sizeof small); /* truncated, still terminated */
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_bad_specs(void **state)
{
    (void)state;
    const char *bad[] = {"", "gpu", "CUDA:0", "cuda", "cuda:", "cuda:-1", "cuda:x", "cuda:1 ",
                         "cuda:1024", "auto ", "cpu0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        device_t d = {.kind = DEVICE_CPU, .index = 77};
        if (device_select(bad[i], &d) != SHOAL_ERR_INVALID)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(d.index, 77); /* untouched on failure */
        s_expect_msg("device '");
    }
    device_t d;
    assert_int_equal(device_select(NULL, &d), SHOAL_ERR_INVALID);
    assert_int_equal(device_select("gpu", &d), SHOAL_ERR_INVALID);
    s_expect_msg("expected cpu, cuda:N");
}

static void test_auto_and_cuda(void **state)
{
    (void)state;
    int n = device_cuda_count();
    device_t d;
    assert_int_equal(device_select("auto", &d), SHOAL_OK);
    if (n == 0) {
        assert_int_equal(d.kind, DEVICE_CPU);
        assert_int_equal(device_select("cuda:0", &d), SHOAL_ERR_INVALID);
        s_expect_msg("device 'cuda:0': ");
#ifndef SHOAL_HAVE_CUDA
        s_expect_msg("this build has no CUDA");
#endif
    } else {
        assert_int_equal(d.kind, DEVICE_CUDA);
        assert_int_equal(d.index, 0);
        assert_true(d.memory_bytes > 0 && d.cc_major > 0 && d.name[0]);
        assert_int_equal(device_bind(&d), SHOAL_OK);
        char spec[24];
        snprintf(spec, sizeof spec, "cuda:%d", n - 1);
        assert_int_equal(device_select(spec, &d), SHOAL_OK);
        assert_int_equal(d.index, n - 1);
    }
    char spec[24];
    snprintf(spec, sizeof spec, "cuda:%d", n);
    assert_int_equal(device_select(spec, &d), SHOAL_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu),
        cmocka_unit_test(test_describe_fixed),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_auto_and_cuda),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
