/* test_ledger_sign: the signed ledger. Key files (0600, never overwritten, refused when others
 * may read them, public keys as hex or file); a chain signed in a real RocksDB store verifies with
 * its public key and fails with another; an unsigned prefix (a ledger from before signing) passes
 * the coordinator's own check but not a check that requires every signature; the exported array
 * form verifies the same way, and a forged entry re-signed with another key fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ledger.h"
#include "store.h"

static char s_dir[256];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/shoal-lsign-XXXXXX");
    assert_non_null(mkdtemp(s_dir));
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_key_files(void **state)
{
    (void)state;
    uint8_t pk[LEDGER_PUBKEY_LEN], sk[LEDGER_SECKEY_LEN], pk2[LEDGER_PUBKEY_LEN],
        sk2[LEDGER_SECKEY_LEN];
    char dir[300], path[400], hex[LEDGER_PUBKEY_HEX];
    snprintf(dir, sizeof dir, "%s/keys", s_dir);
    assert_int_equal(ledger_key_generate(pk, sk), SHOAL_OK);
    assert_int_equal(ledger_key_write(dir, pk, sk), SHOAL_OK);
    snprintf(path, sizeof path, "%s/%s", dir, LEDGER_KEY_FILE);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(ledger_key_load(path, pk2, sk2), SHOAL_OK);
    assert_memory_equal(pk, pk2, sizeof pk);
    assert_memory_equal(sk, sk2, sizeof sk);
    /* a second key pair never replaces the first */
    assert_int_equal(ledger_key_generate(pk2, sk2), SHOAL_OK);
    assert_int_equal(ledger_key_write(dir, pk2, sk2), SHOAL_ERR_STATE);
    assert_int_equal(ledger_key_load(path, pk2, sk2), SHOAL_OK);
    assert_memory_equal(pk, pk2, sizeof pk);
    /* readable by others: refused */
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(ledger_key_load(path, pk2, sk2), SHOAL_ERR_INVALID);
    assert_non_null(strstr(shoal_errmsg(), "chmod 600"));
    snprintf(path, sizeof path, "%s/missing.key", dir);
    assert_int_equal(ledger_key_load(path, pk2, sk2), SHOAL_ERR_NOTFOUND);
    /* public keys: hex (either case) or the .pub file; anything else is refused */
    ledger_hex(pk, sizeof pk, hex);
    memset(pk2, 0, sizeof pk2);
    assert_int_equal(ledger_pubkey_parse(hex, pk2), SHOAL_OK);
    assert_memory_equal(pk, pk2, sizeof pk);
    snprintf(path, sizeof path, "%s/%s", dir, LEDGER_PUB_FILE);
    memset(pk2, 0, sizeof pk2);
    assert_int_equal(ledger_pubkey_parse(path, pk2), SHOAL_OK);
    assert_memory_equal(pk, pk2, sizeof pk);
    hex[10] = 'g';
    assert_int_not_equal(ledger_pubkey_parse(hex, pk2), SHOAL_OK);
    hex[63] = 0; /* 63 digits: neither a key nor a file */
    assert_int_not_equal(ledger_pubkey_parse(hex, pk2), SHOAL_OK);
}

static void s_append(ledger_t *l, store_t *st, const char *kind, int64_t t)
{
    store_batch_t *b = store_batch_new(st);
    json_t *d = json_pack("{s:I}", "t", (json_int_t)t);
    assert_int_equal(ledger_append(l, b, "r1", kind, d, t, NULL), SHOAL_OK);
    json_decref(d);
    assert_int_equal(store_commit(b), SHOAL_OK);
    ledger_staged_commit(l);
    store_batch_destroy(&b);
}

static void test_signed_chain(void **state)
{
    (void)state;
    uint8_t pk[LEDGER_PUBKEY_LEN], sk[LEDGER_SECKEY_LEN], pk2[LEDGER_PUBKEY_LEN],
        sk2[LEDGER_SECKEY_LEN];
    assert_int_equal(ledger_key_generate(pk, sk), SHOAL_OK);
    assert_int_equal(ledger_key_generate(pk2, sk2), SHOAL_OK);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/store", s_dir);
    store_t *st = NULL;
    assert_int_equal(store_open(dir, &st), SHOAL_OK);
    ledger_t *l = ledger_new(st);
    assert_null(ledger_public_key(l));
    /* two entries from before signing, then three signed ones */
    s_append(l, st, "submit", 1);
    s_append(l, st, "plan", 2);
    ledger_set_signing_key(l, sk);
    assert_memory_equal(ledger_public_key(l), pk, sizeof pk);
    for (int t = 3; t <= 5; t++)
        s_append(l, st, "step", t);

    uint64_t n = 0, bad = 0;
    char reason[512];
    assert_int_equal(ledger_verify_signed(st, "r1", pk, false, &n, &bad, reason, sizeof reason),
                     SHOAL_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(n, 5);
    /* every signature required: the unsigned first entry breaks it */
    assert_int_equal(ledger_verify_signed(st, "r1", pk, true, &n, &bad, reason, sizeof reason),
                     SHOAL_OK);
    assert_int_equal(bad, 1);
    assert_non_null(strstr(reason, "entry 1: unsigned"));
    /* another key: the first signed entry fails */
    assert_int_equal(ledger_verify_signed(st, "r1", pk2, false, &n, &bad, reason, sizeof reason),
                     SHOAL_OK);
    assert_int_equal(bad, 3);
    assert_int_equal(n, 2);
    assert_non_null(strstr(reason, "signature does not verify"));

    /* the exported form (ledger_list, as events --json prints it) verifies the same way */
    json_t *arr = json_array();
    assert_int_equal(ledger_list(st, "r1", 0, 0, arr), SHOAL_OK);
    assert_int_equal(json_array_size(arr), 5);
    ledger_chain_check_array(arr, pk, false, &n, &bad, reason, sizeof reason);
    assert_int_equal(bad, 0);
    assert_int_equal(n, 5);
    /* a forger without sk rewrites entry 4 and re-seals it and entry 5 with their own key */
    json_t *e4 = json_array_get(arr, 3), *e5 = json_array_get(arr, 4);
    json_object_set_new(json_object_get(e4, "detail"), "t", json_integer(99));
    json_object_del(e4, "hash");
    json_object_del(e4, LEDGER_F_SIG);
    char h[LEDGER_HASH_HEX];
    const char *prev4 = json_string_value(json_object_get(e4, "prev_hash"));
    char prev[LEDGER_HASH_HEX];
    snprintf(prev, sizeof prev, "%s", prev4);
    assert_int_equal(ledger_entry_seal(e4, prev, sk2, h), SHOAL_OK);
    json_object_set_new(e5, "prev_hash", json_string(h));
    json_object_del(e5, "hash");
    json_object_del(e5, LEDGER_F_SIG);
    assert_int_equal(ledger_entry_seal(e5, h, sk2, h), SHOAL_OK);
    ledger_chain_check_array(arr, NULL, false, &n, &bad, reason, sizeof reason);
    assert_int_equal(bad, 0); /* the bare chain cannot tell */
    ledger_chain_check_array(arr, pk, true, &n, &bad, reason, sizeof reason);
    assert_int_equal(bad, 1); /* the unsigned prefix */
    ledger_chain_check_array(arr, pk, false, &n, &bad, reason, sizeof reason);
    assert_int_equal(bad, 4);
    assert_non_null(strstr(reason, "entry 4: signature does not verify"));
    /* not an array */
    ledger_chain_check_array(e4, pk, true, &n, &bad, reason, sizeof reason);
    assert_int_equal(bad, 1);
    json_decref(arr);

    /* a new ledger over the same store continues the signed chain */
    ledger_destroy(&l);
    l = ledger_new(st);
    ledger_set_signing_key(l, sk);
    s_append(l, st, "done", 6);
    assert_int_equal(ledger_verify_signed(st, "r1", pk, false, &n, &bad, reason, sizeof reason),
                     SHOAL_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(n, 6);
    ledger_destroy(&l);
    store_destroy(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_signed_chain),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
