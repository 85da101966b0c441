/* store.c: RocksDB (C API) behind the store_* interface: column families, synced batches,
 * prefix scans. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <rocksdb/c.h>

#include "numparse.h"

static const char *s_cf_names[STORE_CF__COUNT] = {
    "default", "runs", "workers", "plans", "manifests", "ledger", "history",
};

struct store {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wsync;
    rocksdb_readoptions_t *ropts;
    rocksdb_column_family_handle_t *cf[STORE_CF__COUNT];
    char path[1024];
};

struct store_batch {
    store_t *st; /* for the family handles */
    rocksdb_writebatch_t *wb;
};

const char *store_cf_name(store_cf_t cf)
{
    return cf == STORE_CF_META ? "meta" : s_cf_names[cf];
}

static shoal_err_t s_mkdir_p(const char *dir)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return shoal_fail(SHOAL_ERR_INVALID, "state dir path too long: %s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return shoal_fail(SHOAL_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0750) != 0 && errno != EEXIST)
        return shoal_fail(SHOAL_ERR_IO, "mkdir %s: %s", buf, strerror(errno));
    return SHOAL_OK;
}

shoal_err_t store_open(const char *dir, store_t **out)
{
    shoal_err_t rc = SHOAL_OK;
    char *err = NULL;
    *out = NULL;
    store_t *st = calloc(1, sizeof *st);
    if (!st)
        return shoal_fail(SHOAL_ERR_NOMEM, "store_open");
    if (snprintf(st->path, sizeof st->path, "%s/db", dir) >= (int)sizeof st->path) {
        rc = shoal_fail(SHOAL_ERR_INVALID, "state dir path too long: %s", dir);
        goto out_free_st;
    }
    SHOAL_CHECK_GOTO(s_mkdir_p(dir), rc, out_free_st);
    st->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(st->opts, 1);
    rocksdb_options_set_create_missing_column_families(st->opts, 1);
    /* the state is small; keep the footprint small too */
    rocksdb_options_set_max_open_files(st->opts, 64);
    rocksdb_options_set_keep_log_file_num(st->opts, 3);
    const rocksdb_options_t *cf_opts[STORE_CF__COUNT];
    for (int i = 0; i < STORE_CF__COUNT; i++)
        cf_opts[i] = st->opts;
    st->db = rocksdb_open_column_families(st->opts, st->path, STORE_CF__COUNT, s_cf_names, cf_opts,
                                          st->cf, &err);
    if (err) {
        rc = shoal_fail(SHOAL_ERR_DB, "opening RocksDB %s: %s", st->path, err);
        rocksdb_free(err);
        goto out_free_opts;
    }
    st->wsync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(st->wsync, 1);
    st->ropts = rocksdb_readoptions_create();
    *out = st;
    return SHOAL_OK;
out_free_opts:
    rocksdb_options_destroy(st->opts);
out_free_st:
    free(st);
    return rc;
}

void store_destroy(store_t **self_p)
{
    store_t *st = *self_p;
    if (!st)
        return;
    for (int i = 0; i < STORE_CF__COUNT; i++)
        if (st->cf[i])
            rocksdb_column_family_handle_destroy(st->cf[i]);
    rocksdb_close(st->db);
    rocksdb_writeoptions_destroy(st->wsync);
    rocksdb_readoptions_destroy(st->ropts);
    rocksdb_options_destroy(st->opts);
    free(st);
    *self_p = NULL;
}

shoal_err_t store_get(store_t *st, store_cf_t cf, const char *key, char **val, size_t *len)
{
    char *err = NULL;
    size_t n = 0;
    *val = NULL;
    char *v = rocksdb_get_cf(st->db, st->ropts, st->cf[cf], key, strlen(key), &n, &err);
    if (err) {
        shoal_err_t rc = shoal_fail(SHOAL_ERR_DB, "reading %s/%s: %s", store_cf_name(cf), key, err);
        rocksdb_free(err);
        return rc;
    }
    if (!v)
        return shoal_fail(SHOAL_ERR_NOTFOUND, "%s/%s not found", store_cf_name(cf), key);
    char *copy = malloc(n + 1);
    if (!copy) {
        rocksdb_free(v);
        return shoal_fail(SHOAL_ERR_NOMEM, "reading %s/%s", store_cf_name(cf), key);
    }
    memcpy(copy, v, n);
    copy[n] = 0;
    rocksdb_free(v);
    *val = copy;
    if (len)
        *len = n;
    return SHOAL_OK;
}

static shoal_err_t s_iter_status(rocksdb_iterator_t *it, store_cf_t cf)
{
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (!err)
        return SHOAL_OK;
    shoal_err_t rc = shoal_fail(SHOAL_ERR_DB, "scanning %s: %s", store_cf_name(cf), err);
    rocksdb_free(err);
    return rc;
}

shoal_err_t store_scan(store_t *st, store_cf_t cf, const char *prefix, const char *start,
                       store_scan_fn fn, void *ctx)
{
    size_t plen = strlen(prefix);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ropts, st->cf[cf]);
    const char *from = start ? start : prefix;
    rocksdb_iter_seek(it, from, strlen(from));
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < plen || memcmp(k, prefix, plen) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        if (fn(k, klen, v, vlen, ctx))
            break;
    }
    shoal_err_t rc = s_iter_status(it, cf);
    rocksdb_iter_destroy(it);
    return rc;
}

shoal_err_t store_last(store_t *st, store_cf_t cf, const char *prefix, char **key, char **val)
{
    shoal_err_t rc = SHOAL_OK;
    *key = *val = NULL;
    size_t plen = strlen(prefix);
    /* the first key past every key with this prefix: prefix + 0xff (keys here are ASCII) */
    char *upper = malloc(plen + 2);
    if (!upper)
        return shoal_fail(SHOAL_ERR_NOMEM, "store_last");
    memcpy(upper, prefix, plen);
    upper[plen] = (char)0xff;
    upper[plen + 1] = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ropts, st->cf[cf]);
    rocksdb_iter_seek_for_prev(it, upper, plen + 1);
    if (!rocksdb_iter_valid(it)) {
        rc = s_iter_status(it, cf);
        if (rc == SHOAL_OK)
            rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no %s key under %s", store_cf_name(cf), prefix);
        goto out;
    }
    size_t klen, vlen;
    const char *k = rocksdb_iter_key(it, &klen);
    if (klen < plen || memcmp(k, prefix, plen) != 0) {
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no %s key under %s", store_cf_name(cf), prefix);
        goto out;
    }
    const char *v = rocksdb_iter_value(it, &vlen);
    *key = strndup(k, klen);
    *val = strndup(v, vlen);
    if (!*key || !*val) {
        free(*key);
        free(*val);
        *key = *val = NULL;
        rc = shoal_fail(SHOAL_ERR_NOMEM, "store_last");
    }
out:
    rocksdb_iter_destroy(it);
    free(upper);
    return rc;
}

store_batch_t *store_batch_new(store_t *st)
{
    store_batch_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->st = st;
    b->wb = rocksdb_writebatch_create();
    return b;
}

void store_batch_destroy(store_batch_t **self_p)
{
    store_batch_t *b = *self_p;
    if (!b)
        return;
    rocksdb_writebatch_destroy(b->wb);
    free(b);
    *self_p = NULL;
}

void store_batch_put(store_batch_t *b, store_cf_t cf, const char *key, const char *val, size_t vlen)
{
    rocksdb_writebatch_put_cf(b->wb, b->st->cf[cf], key, strlen(key), val, vlen);
}

void store_batch_delete(store_batch_t *b, store_cf_t cf, const char *key)
{
    rocksdb_writebatch_delete_cf(b->wb, b->st->cf[cf], key, strlen(key));
}

int store_batch_count(const store_batch_t *b)
{
    return rocksdb_writebatch_count(b->wb);
}

#ifdef SHOAL_STORE_FAULTS
/* Test builds only (tests/coordinator builds a coordinator with this defined): with
 * SHOAL_STORE_FAIL_AFTER=N in the environment, the first N commits succeed and every later
 * one fails as a full or dead disk would. The shipped binaries have no such hook. */
static int s_injected_failure(store_t *st)
{
    static long long commits, fail_after = -2;
    if (fail_after == -2) {
        const char *v = getenv("SHOAL_STORE_FAIL_AFTER");
        int64_t n = -1;
        if (v && numparse_i64(v, 0, INT64_MAX, &n) != SHOAL_OK)
            n = -1; /* a test's typo must not inject anything */
        fail_after = n;
    }
    if (fail_after < 0 || ++commits <= fail_after)
        return 0;
    shoal_fail(SHOAL_ERR_DB, "writing %s: injected failure (commit %lld, after %lld)", st->path,
               commits, fail_after);
    return 1;
}
#endif

shoal_err_t store_commit(store_batch_t *b)
{
    store_t *st = b->st;
    char *err = NULL;
#ifdef SHOAL_STORE_FAULTS
    if (s_injected_failure(st))
        return SHOAL_ERR_DB;
#endif
    rocksdb_write(st->db, st->wsync, b->wb, &err);
    if (err) {
        shoal_err_t rc = shoal_fail(SHOAL_ERR_DB, "writing %s: %s", st->path, err);
        rocksdb_free(err);
        return rc;
    }
    return SHOAL_OK;
}
