/* test_name: the one name rule: [A-Za-z0-9._-]+, not starting with '.'. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "name.h"

static void test_accepted(void **state)
{
    (void)state;
    const char *good[] = {"w1", "tiny-fortunes", "run_2.v3", "A", "0", "-x", "_", "a..b", "a."};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!name_ok(good[i]))
            fail_msg("'%s' refused", good[i]);
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",    ".",   "..",     ".hidden", "a/b", "../x", "a b",
                         "a\tb", "é",  "run:1",  "x\n",     "/",   "a*",   "~home"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (name_ok(bad[i]))
            fail_msg("'%s' accepted", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
