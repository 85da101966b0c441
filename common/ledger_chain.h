/* ledger_chain.h: the ledger's hash chain and Ed25519 signatures, independent of the store, so
 * that the coordinator (which writes and re-checks its ledger) and shoalctl (which checks an
 * exported ledger against a public key, trusting no coordinator) share one definition.
 *
 * An entry is a JSON object; its canonical form is the object without "hash" and "sig", dumped
 * compact, keys sorted, ASCII. hash = hex SHA-256(prev_hash as 64 hex chars || canonical form);
 * the first entry's prev_hash is 64 zeros. sig = hex Ed25519 detached signature of the 64 hex
 * characters of hash, so it covers the chain link (prev_hash) and the whole content. */
#ifndef SHOAL_LEDGER_CHAIN_H
#define SHOAL_LEDGER_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define LEDGER_HASH_HEX 65       /* 64 hex digits + NUL */
#define LEDGER_SIG_HEX 129       /* 128 hex digits + NUL */
#define LEDGER_PUBKEY_LEN 32     /* Ed25519 public key */
#define LEDGER_SECKEY_LEN 64     /* libsodium's Ed25519 secret key (seed || public key) */
#define LEDGER_PUBKEY_HEX 65
#define LEDGER_F_SIG "sig"
#define LEDGER_KEY_FILE "ledger_signing.key" /* names `shoalctl keys new-signing` writes */
#define LEDGER_PUB_FILE "ledger_signing.pub"

/* hex SHA-256 of prev_hash || text (OpenSSL EVP). */
shoal_err_t ledger_hash(const char *prev_hash, const char *text, char out[LEDGER_HASH_HEX]);

/* Seals `entry` (which must hold no "hash" or "sig"): computes its hash over prev_hash and the
 * canonical form, sets "hash" and, when sk is not NULL, "sig". hash_out receives the hash. */
shoal_err_t ledger_entry_seal(json_t *entry, const char *prev_hash, const uint8_t *sk,
                              char hash_out[LEDGER_HASH_HEX]);

/* A chain being checked entry by entry from seq 1. */
typedef struct {
    uint64_t n;                 /* entries verified so far */
    uint64_t n_signed;          /* of which carried a good signature */
    char prev[LEDGER_HASH_HEX]; /* hash of the last verified entry */
    const uint8_t *pk;          /* NULL: signatures are not checked */
    bool require_sig;           /* an entry without "sig" breaks the chain (with pk) */
} ledger_chain_t;

void ledger_chain_init(ledger_chain_t *c, const uint8_t *pk, bool require_sig);

/* Checks that `entry` (not modified) is the chain's next one: seq, prev_hash, hash and, with a
 * public key, the signature. Returns true and advances the chain, or false with `why` (the
 * reason, without the entry number) filled. */
bool ledger_chain_next(ledger_chain_t *c, const json_t *entry, char *why, size_t cap);

/* Checks an array of entries (seq 1 first), as `shoalctl events RUN --json` exports it.
 * *first_bad = 0 when all verify, else the seq of the first bad entry, with `reason` filled
 * as "entry N: why". An empty array verifies nothing: *first_bad = 0, *n = 0. */
void ledger_chain_check_array(const json_t *entries, const uint8_t *pk, bool require_sig,
                              uint64_t *n, uint64_t *first_bad, char *reason, size_t cap);

/* A new Ed25519 key pair. */
shoal_err_t ledger_key_generate(uint8_t pk[LEDGER_PUBKEY_LEN], uint8_t sk[LEDGER_SECKEY_LEN]);

/* Writes DIR/ledger_signing.key (the secret key in hex, mode 0600, created exclusively: an
 * existing key is never overwritten) and DIR/ledger_signing.pub (the public key in hex). */
shoal_err_t ledger_key_write(const char *dir, const uint8_t pk[LEDGER_PUBKEY_LEN],
                             const uint8_t sk[LEDGER_SECKEY_LEN]);

/* Reads a secret key file (128 hex digits, optional trailing newline); refuses a file that
 * group or others may read. pk receives its public half. Missing file: SHOAL_ERR_NOTFOUND. */
shoal_err_t ledger_key_load(const char *path, uint8_t pk[LEDGER_PUBKEY_LEN],
                            uint8_t sk[LEDGER_SECKEY_LEN]);

/* A public key given as 64 hex digits, or as the path of a file holding them. */
shoal_err_t ledger_pubkey_parse(const char *hex_or_path, uint8_t pk[LEDGER_PUBKEY_LEN]);

/* Lower-case hex of `len` bytes into out (2 * len + 1 bytes). */
void ledger_hex(const uint8_t *bytes, size_t len, char *out);

#endif
