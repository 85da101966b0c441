/* test_name: the one name rule: [A-Za-z0-9._-]+, not starting with '.'; the id form. */
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

/* worker ids' form, which no worker name may take */
static void test_id_form(void **state)
{
    (void)state;
    const char *ids[] = {"w1", "w0", "w42", "w007", "w18446744073709551616"};
    const char *names[] = {"w", "w1x", "x1", "W1", "w-1", "ww1", "w1.", "", "local-1", "1"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (!name_has_id_form(ids[i]))
            fail_msg("'%s' not seen as an id", ids[i]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name_has_id_form(names[i]))
            fail_msg("'%s' seen as an id", names[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_id_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
