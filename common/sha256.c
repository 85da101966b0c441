/* sha256.c: SHA-256 through OpenSSL's EVP interface (uses the CPU's SHA instructions). */
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sha256 {
    EVP_MD_CTX *md;
};

sha256_t *sha256_new(void)
{
    sha256_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->md = EVP_MD_CTX_new();
    if (!self->md || EVP_DigestInit_ex(self->md, EVP_sha256(), NULL) != 1) {
        sha256_destroy(&self);
        return NULL;
    }
    return self;
}

shoal_err_t sha256_update(sha256_t *self, const void *data, size_t len)
{
    if (len > 0 && EVP_DigestUpdate(self->md, data, len) != 1)
        return shoal_fail(SHOAL_ERR_IO, "sha256: EVP_DigestUpdate failed");
    return SHOAL_OK;
}

shoal_err_t sha256_final(sha256_t *self, uint8_t out[SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(self->md, out, &n) != 1 || n != SHA256_LEN)
        return shoal_fail(SHOAL_ERR_IO, "sha256: EVP_DigestFinal_ex failed");
    return SHOAL_OK;
}

void sha256_destroy(sha256_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    EVP_MD_CTX_free((*self_p)->md);
    free(*self_p);
    *self_p = NULL;
}

shoal_err_t sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA256_LEN)
        return shoal_fail(SHOAL_ERR_IO, "sha256: EVP_Digest failed");
    return SHOAL_OK;
}

shoal_err_t sha256_file(const char *path, uint8_t out[SHA256_LEN], uint64_t *size)
{
    enum { CHUNK = 1 << 20 };
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return shoal_fail(errno == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO, "%s: %s", path,
                          strerror(errno));
    shoal_err_t rc = SHOAL_OK;
    uint64_t total = 0;
    uint8_t *buf = malloc(CHUNK);
    sha256_t *h = sha256_new();
    if (!buf || !h) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "%s: sha256: out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = shoal_fail(SHOAL_ERR_IO, "%s: read: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        if ((rc = sha256_update(h, buf, (size_t)r)) != SHOAL_OK)
            goto out;
        total += (uint64_t)r;
    }
    rc = sha256_final(h, out);
    if (size)
        *size = total;
out:
    sha256_destroy(&h);
    free(buf);
    close(fd);
    return rc;
}

void sha256_hex(const uint8_t digest[SHA256_LEN], char out[SHA256_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_LEN; i++) {
        out[2 * i] = digits[digest[i] >> 4];
        out[2 * i + 1] = digits[digest[i] & 15];
    }
    out[SHA256_HEX_LEN] = '\0';
}

static int s_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

shoal_err_t sha256_from_hex(const char *hex, uint8_t out[SHA256_LEN])
{
    if (!hex || strlen(hex) != SHA256_HEX_LEN)
        return shoal_fail(SHOAL_ERR_FORMAT, "sha256: expected %d hex digits", SHA256_HEX_LEN);
    for (int i = 0; i < SHA256_LEN; i++) {
        int hi = s_nibble(hex[2 * i]), lo = s_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return shoal_fail(SHOAL_ERR_FORMAT, "sha256: '%s' is not hex", hex);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return SHOAL_OK;
}
