/* sha256.h: SHA-256 digests (OpenSSL EVP) for checkpoint shards, manifests and the ledger chain. */
#ifndef SHOAL_SHA256_H
#define SHOAL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64 /* without the NUL */

/* Incremental hashing. sha256_new() returns NULL on failure; sha256_destroy is idempotent. */
typedef struct sha256 sha256_t;
sha256_t *sha256_new(void);
shoal_err_t sha256_update(sha256_t *self, const void *data, size_t len);
/* Writes the digest; the context can then only be destroyed. */
shoal_err_t sha256_final(sha256_t *self, uint8_t out[SHA256_LEN]);
void sha256_destroy(sha256_t **self_p);

/* Digest of one buffer. */
shoal_err_t sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN]);

/* Digest of a file's contents, streamed; `size` (may be NULL) receives the bytes hashed.
 * Missing file: SHOAL_ERR_NOTFOUND; read failure: SHOAL_ERR_IO; both name the path. */
shoal_err_t sha256_file(const char *path, uint8_t out[SHA256_LEN], uint64_t *size);

/* Lower-case hex of a digest into out[SHA256_HEX_LEN + 1]. */
void sha256_hex(const uint8_t digest[SHA256_LEN], char out[SHA256_HEX_LEN + 1]);

/* Parses 64 hex digits (either case); SHOAL_ERR_FORMAT if `hex` is anything else. */
shoal_err_t sha256_from_hex(const char *hex, uint8_t out[SHA256_LEN]);

#ifdef __cplusplus
}
#endif
#endif
