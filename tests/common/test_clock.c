/* test_clock: the monotonic clocks agree and move forward, the wall clock is the epoch's, and a
 * sleep lasts at least what it was asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <time.h>

#include "clock.h"

static void test_mono_units_agree(void **state)
{
    (void)state;
    int64_t ms0 = clock_mono_ms();
    uint64_t ns0 = clock_mono_ns();
    double s0 = clock_mono_s();
    /* the three read the same clock within a few ms */
    assert_true(llabs((long long)(ns0 / 1000000) - (long long)ms0) <= 5);
    assert_true(llabs((long long)(s0 * 1000) - (long long)ms0) <= 5);
    clock_sleep_ms(30);
    int64_t ms1 = clock_mono_ms();
    assert_true(ms1 - ms0 >= 30);
    assert_true(ms1 - ms0 < 5000);
    assert_true(clock_mono_ns() > ns0);
    assert_true(clock_mono_s() > s0);
}

static void test_wall_is_epoch(void **state)
{
    (void)state;
    int64_t w = clock_wall_ms();
    int64_t t = (int64_t)time(NULL) * 1000;
    assert_true(llabs((long long)(w - t)) <= 2000);
    assert_true(w > 1600000000000LL); /* after 2020 */
}

static void test_sleep_nonpositive_returns(void **state)
{
    (void)state;
    int64_t t0 = clock_mono_ms();
    clock_sleep_ms(0);
    clock_sleep_ms(-5);
    assert_true(clock_mono_ms() - t0 < 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mono_units_agree),
        cmocka_unit_test(test_wall_is_epoch),
        cmocka_unit_test(test_sleep_nonpositive_returns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
