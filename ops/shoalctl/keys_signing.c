/* keys_signing.c: `shoalctl keys new-signing --out DIR`: the Ed25519 key pair that signs the
 * coordinator's ledger (ledger_signing.key, 0600, and ledger_signing.pub). The coordinator reads
 * the secret file named by ledger_signing_key in its config; anyone verifying a published run
 * needs only the .pub (shoalctl verify --pubkey). */
#include <stdio.h>

#include <sodium.h>

#include "ledger_chain.h"
#include "shoalctl.h"

static const char s_usage[] =
    "usage: shoalctl keys new-signing --out DIR [--json]\n"
    "  Writes DIR/" LEDGER_KEY_FILE " (secret, mode 0600; never overwrites one) and\n"
    "  DIR/" LEDGER_PUB_FILE " (public, 64 hex digits), and prints the public key.\n"
    "  Name the secret file as ledger_signing_key in the coordinator config.\n";

int cmd_keys_new_signing(ctl_opts_t *o, int argc, char **argv)
{
    const char *out = NULL;
    const ctl_optdef_t defs[] = {{"out", true, &out, NULL}, {NULL, false, NULL, NULL}};
    const char *pos[1];
    int n_pos = 0;
    int ex = ctl_parse_args(o, argc, argv, defs, s_usage, pos, 0, &n_pos);
    if (ex != CTL_EXIT_OK)
        return ex < 0 ? CTL_EXIT_OK : ex;
    if (!out)
        return ctl_usage_error(o, s_usage, "--out DIR is required");
    uint8_t pk[LEDGER_PUBKEY_LEN], sk[LEDGER_SECKEY_LEN];
    char pk_hex[LEDGER_PUBKEY_HEX];
    shoal_err_t rc = ledger_key_generate(pk, sk);
    if (rc == SHOAL_OK)
        rc = ledger_key_write(out, pk, sk);
    sodium_memzero(sk, sizeof sk);
    if (rc != SHOAL_OK)
        return ctl_error(o, "%s", shoal_errmsg());
    ledger_hex(pk, sizeof pk, pk_hex);
    if (o->json) {
        json_t *doc = json_pack("{s:s, s:s}", "public_key", pk_hex, "dir", out);
        ctl_print_json(doc);
        json_decref(doc);
    } else {
        printf("wrote %s/%s (secret, 0600) and %s/%s\npublic key %s\n", out, LEDGER_KEY_FILE,
               out, LEDGER_PUB_FILE, pk_hex);
    }
    return CTL_EXIT_OK;
}
