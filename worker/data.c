/* data.c: loads the corpus into memory and maps global batch positions to sequences. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datafiles.h"

struct data {
    unsigned char *bytes;
    int64_t n_bytes, n_seq;
    int T;
    uint64_t seed;
    int64_t perm_epoch; /* epoch whose permutation is cached, -1 if none */
    int64_t *perm;
};

static shoal_err_t s_append_file(data_t *d, const char *path, int64_t *cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "data file %s: %s", path, strerror(errno));
    shoal_err_t rc = SHOAL_OK;
    for (;;) {
        if (d->n_bytes + 65536 > *cap) {
            int64_t ncap = *cap ? *cap * 2 : 1 << 20;
            unsigned char *nb = realloc(d->bytes, (size_t)ncap);
            if (!nb) {
                rc = shoal_fail(SHOAL_ERR_NOMEM, "data file %s: out of memory", path);
                break;
            }
            d->bytes = nb;
            *cap = ncap;
        }
        size_t got = fread(d->bytes + d->n_bytes, 1, 65536, f);
        d->n_bytes += (int64_t)got;
        if (got < 65536) {
            if (ferror(f))
                rc = shoal_fail(SHOAL_ERR_IO, "data file %s: read error", path);
            break;
        }
    }
    fclose(f);
    return rc;
}

shoal_err_t data_open(const char *const *paths, int n_paths, int T, int vocab_size,
                      uint64_t seed, data_t **out)
{
    *out = NULL;
    if (n_paths < 1)
        return shoal_fail(SHOAL_ERR_INVALID, "data: no files given");
    data_t *d = calloc(1, sizeof *d);
    if (!d)
        return shoal_fail(SHOAL_ERR_NOMEM, "data: out of memory");
    d->T = T;
    d->seed = seed;
    d->perm_epoch = -1;
    int64_t cap = 0;
    datafiles_t files;
    shoal_err_t rc = datafiles_list(paths, n_paths, &files);
    for (int i = 0; i < files.n && rc == SHOAL_OK; i++)
        rc = s_append_file(d, files.paths[i], &cap);
    datafiles_fini(&files);
    if (rc != SHOAL_OK)
        goto fail;
    d->n_seq = d->n_bytes / (T + 1);
    if (d->n_seq < 1) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "data: %lld bytes in %s%s is shorter than one "
                        "sequence of %d bytes", (long long)d->n_bytes, paths[0],
                        n_paths > 1 ? " ..." : "", T + 1);
        goto fail;
    }
    if (seed != 0 && !(d->perm = malloc(sizeof(int64_t) * (size_t)d->n_seq))) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "data: out of memory");
        goto fail;
    }
    if (vocab_size < 256) {
        for (int64_t i = 0; i < d->n_bytes; i++) {
            if (d->bytes[i] >= vocab_size) {
                rc = shoal_fail(SHOAL_ERR_INVALID, "data: byte %d at offset %lld is not a token "
                                "of a vocabulary of %d", d->bytes[i], (long long)i, vocab_size);
                goto fail;
            }
        }
    }
    *out = d;
    return SHOAL_OK;
fail:
    data_destroy(&d);
    return rc;
}

void data_destroy(data_t **dp)
{
    data_t *d = *dp;
    if (!d)
        return;
    free(d->bytes);
    free(d->perm);
    free(d);
    *dp = NULL;
}

int64_t data_num_sequences(const data_t *d)
{
    return d->n_seq;
}

int64_t data_num_bytes(const data_t *d)
{
    return d->n_bytes;
}

static uint64_t s_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t data_sequence_index(data_t *d, int64_t i)
{
    const int64_t epoch = i / d->n_seq, pos = i % d->n_seq;
    if (d->seed == 0)
        return pos;
    if (d->perm_epoch != epoch) {
        for (int64_t n = 0; n < d->n_seq; n++)
            d->perm[n] = n;
        uint64_t st = s_mix(d->seed ^ s_mix((uint64_t)epoch));
        for (int64_t n = d->n_seq - 1; n > 0; n--) { /* Fisher-Yates */
            st = s_mix(st);
            const int64_t r = (int64_t)(st % (uint64_t)(n + 1));
            const int64_t t = d->perm[n];
            d->perm[n] = d->perm[r];
            d->perm[r] = t;
        }
        d->perm_epoch = epoch;
    }
    return d->perm[pos];
}

void data_sequence(const data_t *d, int64_t n, int32_t *tok, int32_t *tgt)
{
    const unsigned char *s = d->bytes + n * (d->T + 1);
    for (int t = 0; t < d->T; t++) {
        tok[t] = s[t];
        tgt[t] = s[t + 1];
    }
}
