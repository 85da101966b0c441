/* test_numparse: strict decimal parsing: whole string, bounds, overflow, and messages that say
 * what was wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "numparse.h"

static void s_expect_msg(const char *want)
{
    if (!strstr(shoal_errmsg(), want))
        fail_msg("message '%s' lacks '%s'", shoal_errmsg(), want);
}

static void test_i64(void **state)
{
    (void)state;
    int64_t v = 7;
    assert_int_equal(numparse_i64("42", 0, 100, &v), SHOAL_OK);
    assert_int_equal(v, 42);
    assert_int_equal(numparse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), SHOAL_OK);
    assert_true(v == INT64_MIN);
    assert_int_equal(numparse_i64("+5", 0, 10, &v), SHOAL_OK);
    assert_int_equal(v, 5);
    const char *bad[] = {"", " 1", "1 ", "1x", "0x10", "1.0", "+", "-", "--1", "1e3", "٣"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        if (numparse_i64(bad[i], INT64_MIN, INT64_MAX, &v) != SHOAL_ERR_INVALID)
            fail_msg("'%s' accepted", bad[i]);
        assert_int_equal(v, 7);
    }
    assert_int_equal(numparse_i64("soon", 0, 1, &v), SHOAL_ERR_INVALID);
    s_expect_msg("'soon' is not an integer");
    assert_int_equal(numparse_i64("10", 50, 86400000, &v), SHOAL_ERR_NUMERIC);
    s_expect_msg("10 is out of range [50, 86400000]");
    assert_int_equal(numparse_i64("99999999999999999999", INT64_MIN, INT64_MAX, &v),
                     SHOAL_ERR_NUMERIC);
    s_expect_msg("99999999999999999999 is out of range");
    assert_int_equal(v, 7);
}

static void test_u64(void **state)
{
    (void)state;
    uint64_t v = 7;
    assert_int_equal(numparse_u64("18446744073709551615", UINT64_MAX, &v), SHOAL_OK);
    assert_true(v == UINT64_MAX);
    assert_int_equal(numparse_u64("18446744073709551616", UINT64_MAX, &v), SHOAL_ERR_NUMERIC);
    assert_int_equal(numparse_u64("-1", UINT64_MAX, &v), SHOAL_ERR_INVALID); /* never wraps */
    s_expect_msg("'-1' is not a non-negative integer");
    assert_int_equal(numparse_u64("11", 10, &v), SHOAL_ERR_NUMERIC);
    s_expect_msg("11 is out of range [0, 10]");
    assert_int_equal(numparse_u64("+3", 10, &v), SHOAL_OK);
    assert_true(v == 3);
}

static void test_int(void **state)
{
    (void)state;
    int v = 0;
    assert_int_equal(numparse_int("1024", 1, 1024, &v), SHOAL_OK);
    assert_int_equal(v, 1024);
    assert_int_equal(numparse_int("0", 1, 1024, &v), SHOAL_ERR_NUMERIC);
    assert_int_equal(numparse_int("2x", 1, 1024, &v), SHOAL_ERR_INVALID);
    assert_int_equal(numparse_int("4294967297", INT32_MIN, INT32_MAX, &v), SHOAL_ERR_NUMERIC);
    assert_int_equal(v, 1024);
}

static void test_double(void **state)
{
    (void)state;
    double v = 0;
    struct {
        const char *s;
        double want;
    } good[] = {{"1", 1}, {"-2.5", -2.5}, {"1e-8", 1e-8}, {".5", .5}, {"3.", 3}, {"+1E+3", 1000}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(numparse_double(good[i].s, &v), SHOAL_OK);
        assert_true(v == good[i].want);
    }
    const char *bad[] = {"",    " 1",  "1 ", "inf", "nan", "-inf", "0x1p3", "1e", "1e+",
                         ".",   "e5",  "1.2.3", "1,5", "infinity"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        if (numparse_double(bad[i], &v) != SHOAL_ERR_INVALID)
            fail_msg("'%s' accepted", bad[i]);
        assert_true(v == 7);
    }
    s_expect_msg("'infinity' is not a number");
    assert_int_equal(numparse_double("1e999", &v), SHOAL_ERR_NUMERIC);
    s_expect_msg("1e999 is out of range");
    assert_int_equal(numparse_double("1e-999", &v), SHOAL_OK); /* underflow: 0, finite */
    assert_true(isfinite(v));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i64),
        cmocka_unit_test(test_u64),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_double),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
