/* ledger_chain.c: hash chain, Ed25519 signatures and signing keys of the ledger (see
 * ledger_chain.h for the entry format). */
#include "ledger_chain.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl_reply.h"
#include "fsutil.h"
#include "sha256.h"

#define LEDGER_DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)

static const char s_zero_hash[LEDGER_HASH_HEX] =
    "0000000000000000000000000000000000000000000000000000000000000000";

void ledger_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = 0;
}

/* Exactly 2 * len hex digits (either case) into bytes; 0 on anything else. */
static int s_unhex(const char *hex, size_t hexlen, uint8_t *bytes, size_t len)
{
    size_t got = 0;
    if (hexlen != 2 * len)
        return 0;
    return sodium_hex2bin(bytes, len, hex, hexlen, NULL, &got, NULL) == 0 && got == len;
}

shoal_err_t ledger_hash(const char *prev_hash, const char *text, char out[LEDGER_HASH_HEX])
{
    uint8_t md[SHA256_LEN];
    sha256_t *h = sha256_new();
    if (!h)
        return shoal_fail(SHOAL_ERR_NOMEM, "ledger hash");
    shoal_err_t rc = sha256_update(h, prev_hash, strlen(prev_hash));
    if (rc == SHOAL_OK)
        rc = sha256_update(h, text, strlen(text));
    if (rc == SHOAL_OK)
        rc = sha256_final(h, md);
    sha256_destroy(&h);
    if (rc == SHOAL_OK)
        ledger_hex(md, SHA256_LEN, out);
    return rc;
}

/* hex hash of the canonical form of `entry` (a copy without "hash" and "sig") after prev. */
static shoal_err_t s_entry_hash(const json_t *entry, const char *prev, char out[LEDGER_HASH_HEX])
{
    json_t *copy = json_copy((json_t *)entry);
    char *canon = NULL;
    shoal_err_t rc = SHOAL_OK;
    if (copy) {
        json_object_del(copy, CTL_F_HASH);
        json_object_del(copy, LEDGER_F_SIG);
        canon = json_dumps(copy, LEDGER_DUMP_FLAGS);
    }
    if (!canon)
        rc = shoal_fail(SHOAL_ERR_NOMEM, "ledger entry canonical form");
    else
        rc = ledger_hash(prev, canon, out);
    free(canon);
    json_decref(copy);
    return rc;
}

shoal_err_t ledger_entry_seal(json_t *entry, const char *prev_hash, const uint8_t *sk,
                              char hash_out[LEDGER_HASH_HEX])
{
    shoal_err_t rc = s_entry_hash(entry, prev_hash, hash_out);
    if (rc != SHOAL_OK)
        return rc;
    if (json_object_set_new(entry, CTL_F_HASH, json_string(hash_out)) != 0)
        return shoal_fail(SHOAL_ERR_NOMEM, "ledger entry hash");
    if (!sk)
        return SHOAL_OK;
    uint8_t sig[crypto_sign_BYTES];
    char sig_hex[LEDGER_SIG_HEX];
    if (crypto_sign_detached(sig, NULL, (const uint8_t *)hash_out, LEDGER_HASH_HEX - 1, sk) != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "ledger entry: signing failed");
    ledger_hex(sig, sizeof sig, sig_hex);
    if (json_object_set_new(entry, LEDGER_F_SIG, json_string(sig_hex)) != 0)
        return shoal_fail(SHOAL_ERR_NOMEM, "ledger entry signature");
    return SHOAL_OK;
}

void ledger_chain_init(ledger_chain_t *c, const uint8_t *pk, bool require_sig)
{
    memset(c, 0, sizeof *c);
    memcpy(c->prev, s_zero_hash, LEDGER_HASH_HEX);
    c->pk = pk;
    c->require_sig = require_sig && pk;
}

static bool s_why(char *why, size_t cap, const char *text)
{
    snprintf(why, cap, "%s", text);
    return false;
}

bool ledger_chain_next(ledger_chain_t *c, const json_t *entry, char *why, size_t cap)
{
    if (!json_is_object(entry))
        return s_why(why, cap, "not a JSON object");
    json_t *jseq = json_object_get(entry, CTL_F_SEQ);
    if (!json_is_integer(jseq) || (uint64_t)json_integer_value(jseq) != c->n + 1)
        return s_why(why, cap, "sequence gap or mismatch");
    const char *h = json_string_value(json_object_get(entry, CTL_F_HASH));
    const char *prev = json_string_value(json_object_get(entry, CTL_F_PREV_HASH));
    if (!h || strlen(h) != LEDGER_HASH_HEX - 1 || !prev)
        return s_why(why, cap, "missing hash or prev_hash");
    if (strcmp(prev, c->prev) != 0)
        return s_why(why, cap, "prev_hash does not match the previous entry's hash");
    char recomputed[LEDGER_HASH_HEX];
    if (s_entry_hash(entry, c->prev, recomputed) != SHOAL_OK || strcmp(recomputed, h) != 0)
        return s_why(why, cap, "hash does not match the entry's content");
    json_t *jsig = json_object_get(entry, LEDGER_F_SIG);
    if (c->pk && (jsig || c->require_sig)) {
        const char *sig_hex = json_string_value(jsig);
        uint8_t sig[crypto_sign_BYTES];
        if (!sig_hex)
            return s_why(why, cap,
                         "unsigned (written before the coordinator signed its ledger, or "
                         "its signature was stripped)");
        if (!s_unhex(sig_hex, strlen(sig_hex), sig, sizeof sig))
            return s_why(why, cap, "signature is not 128 hex digits");
        if (crypto_sign_verify_detached(sig, (const uint8_t *)h, LEDGER_HASH_HEX - 1, c->pk) != 0)
            return s_why(why, cap,
                         "signature does not verify with the given public key (wrong key, or "
                         "the entry was re-signed by another key)");
        c->n_signed++;
    }
    memcpy(c->prev, h, LEDGER_HASH_HEX);
    c->n++;
    return true;
}

void ledger_chain_check_array(const json_t *entries, const uint8_t *pk, bool require_sig,
                              uint64_t *n, uint64_t *first_bad, char *reason, size_t cap)
{
    ledger_chain_t c;
    ledger_chain_init(&c, pk, require_sig);
    char why[256];
    *first_bad = 0;
    if (cap)
        reason[0] = 0;
    if (!json_is_array(entries)) {
        *first_bad = 1;
        snprintf(reason, cap, "entry 1: the ledger is not a JSON array of entries");
    }
    for (size_t i = 0; json_is_array(entries) && i < json_array_size(entries); i++)
        if (!ledger_chain_next(&c, json_array_get(entries, i), why, sizeof why)) {
            *first_bad = c.n + 1;
            snprintf(reason, cap, "entry %" PRIu64 ": %s", c.n + 1, why);
            break;
        }
    *n = c.n;
}

shoal_err_t ledger_key_generate(uint8_t pk[LEDGER_PUBKEY_LEN], uint8_t sk[LEDGER_SECKEY_LEN])
{
    if (sodium_init() < 0)
        return shoal_fail(SHOAL_ERR_INVALID, "libsodium failed to initialise");
    if (crypto_sign_keypair(pk, sk) != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "Ed25519 key generation failed");
    return SHOAL_OK;
}

shoal_err_t ledger_key_write(const char *dir, const uint8_t pk[LEDGER_PUBKEY_LEN],
                             const uint8_t sk[LEDGER_SECKEY_LEN])
{
    char path[4096], text[2 * LEDGER_SECKEY_LEN + 2];
    shoal_err_t rc = fsutil_mkdir_p(dir);
    if (rc == SHOAL_OK)
        rc = fsutil_path(path, sizeof path, "%s/%s", dir, LEDGER_KEY_FILE);
    if (rc != SHOAL_OK)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return shoal_fail(errno == EEXIST ? SHOAL_ERR_STATE : SHOAL_ERR_IO,
                          "%s: %s (an existing signing key is never overwritten)", path,
                          strerror(errno));
    ledger_hex(sk, LEDGER_SECKEY_LEN, text);
    strcat(text, "\n");
    rc = fsutil_write_all(fd, text, strlen(text), path);
    if (rc == SHOAL_OK && fsync(fd) != 0)
        rc = shoal_fail(SHOAL_ERR_IO, "fsync %s: %s", path, strerror(errno));
    close(fd);
    sodium_memzero(text, sizeof text);
    if (rc != SHOAL_OK)
        return rc;
    ledger_hex(pk, LEDGER_PUBKEY_LEN, text);
    strcat(text, "\n");
    rc = fsutil_path(path, sizeof path, "%s/%s", dir, LEDGER_PUB_FILE);
    if (rc != SHOAL_OK)
        return rc;
    return fsutil_write_file_atomic(path, text, strlen(text));
}

/* The first line of a small text file, trailing whitespace removed. */
static shoal_err_t s_read_line(const char *path, char *out, size_t cap)
{
    uint8_t *data = NULL;
    size_t len = 0;
    shoal_err_t rc = fsutil_read_file(path, &data, &len);
    if (rc != SHOAL_OK)
        return rc;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
        len--;
    if (len >= cap || memchr(data, 0, len))
        rc = shoal_fail(SHOAL_ERR_FORMAT, "%s: not a key file (too long)", path);
    else {
        memcpy(out, data, len);
        out[len] = 0;
    }
    sodium_memzero(data, len);
    free(data);
    return rc;
}

shoal_err_t ledger_key_load(const char *path, uint8_t pk[LEDGER_PUBKEY_LEN],
                            uint8_t sk[LEDGER_SECKEY_LEN])
{
    struct stat stbuf;
    if (stat(path, &stbuf) != 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO,
                          "signing key %s: %s", path, strerror(errno));
    if (stbuf.st_mode & 077)
        return shoal_fail(SHOAL_ERR_INVALID,
                          "signing key %s: mode %03o lets others read it (chmod 600)", path,
                          (unsigned)(stbuf.st_mode & 0777));
    char text[2 * LEDGER_SECKEY_LEN + 8];
    shoal_err_t rc = s_read_line(path, text, sizeof text);
    if (rc != SHOAL_OK)
        return rc;
    int ok = s_unhex(text, strlen(text), sk, LEDGER_SECKEY_LEN);
    sodium_memzero(text, sizeof text);
    if (!ok)
        return shoal_fail(SHOAL_ERR_FORMAT, "signing key %s: expected 128 hex digits", path);
    if (sodium_init() < 0 || crypto_sign_ed25519_sk_to_pk(pk, sk) != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "signing key %s: unusable", path);
    return SHOAL_OK;
}

shoal_err_t ledger_pubkey_parse(const char *hex_or_path, uint8_t pk[LEDGER_PUBKEY_LEN])
{
    size_t len = strlen(hex_or_path);
    if (len == 2 * LEDGER_PUBKEY_LEN && s_unhex(hex_or_path, len, pk, LEDGER_PUBKEY_LEN))
        return SHOAL_OK;
    char text[2 * LEDGER_PUBKEY_LEN + 8];
    shoal_err_t rc = s_read_line(hex_or_path, text, sizeof text);
    if (rc == SHOAL_ERR_NOTFOUND)
        return shoal_fail_context(rc, "public key '%s' is neither 64 hex digits nor a file",
                                  hex_or_path);
    if (rc != SHOAL_OK)
        return rc;
    if (!s_unhex(text, strlen(text), pk, LEDGER_PUBKEY_LEN))
        return shoal_fail(SHOAL_ERR_FORMAT, "public key file %s: expected 64 hex digits",
                          hex_or_path);
    return SHOAL_OK;
}
