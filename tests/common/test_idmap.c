/* test_idmap: the hash table against a plain array under a seeded mix of puts, replaces and
 * deletes (deletes shift entries back: every key must stay findable after each one), with keys
 * chosen to collide in the low bits so that probe runs wrap and cross. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "idmap.h"

#define N_KEYS 3000

static char keys[N_KEYS][16];
static int present[N_KEYS];
static int vals[N_KEYS];

static uint32_t s_rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static void s_check_all(const idmap_t *m)
{
    size_t n = 0;
    for (int k = 0; k < N_KEYS; k++) {
        const int *v = idmap_get(m, keys[k], strlen(keys[k]));
        if (present[k]) {
            n++;
            if (!v || v != &vals[k])
                fail_msg("key %s lost or wrong", keys[k]);
        } else if (v) {
            fail_msg("deleted key %s still found", keys[k]);
        }
    }
    assert_int_equal(n, m->n);
}

static void test_against_array(void **state)
{
    (void)state;
    for (int k = 0; k < N_KEYS; k++)
        snprintf(keys[k], sizeof keys[k], "w%d", k + 1);
    idmap_t m = {0};
    uint64_t rng = 7;
    for (int round = 0; round < 40000; round++) {
        int k = (int)(s_rng(&rng) % N_KEYS);
        if (s_rng(&rng) % 3) {
            assert_int_equal(idmap_put(&m, keys[k], strlen(keys[k]), &vals[k]), SHOAL_OK);
            present[k] = 1;
        } else {
            assert_int_equal(idmap_del(&m, keys[k], strlen(keys[k])), present[k]);
            present[k] = 0;
        }
        if (round % 4000 == 0)
            s_check_all(&m);
    }
    s_check_all(&m);
    /* a prefix is another key, not a match */
    assert_null(idmap_get(&m, "w", 1));
    idmap_clear(&m);
    memset(present, 0, sizeof present);
    s_check_all(&m);
    idmap_fini(&m);
    assert_null(idmap_get(&m, keys[0], strlen(keys[0])));
}

/* binary keys (ZeroMQ routing ids start with a zero byte) */
static void test_binary_keys(void **state)
{
    (void)state;
    unsigned char ids[500][5];
    idmap_t m = {0};
    for (int i = 0; i < 500; i++) {
        ids[i][0] = 0;
        memcpy(&ids[i][1], &(uint32_t){(uint32_t)i << 12}, 4);
        assert_int_equal(idmap_put(&m, ids[i], 5, ids[i]), SHOAL_OK);
    }
    for (int i = 0; i < 500; i += 2)
        assert_true(idmap_del(&m, ids[i], 5));
    for (int i = 0; i < 500; i++)
        assert_ptr_equal(idmap_get(&m, ids[i], 5), i % 2 ? (void *)ids[i] : NULL);
    idmap_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_array),
        cmocka_unit_test(test_binary_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
