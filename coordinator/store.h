/* store.h: the coordinator's RocksDB state under its state dir: one column family per kind of
 * record, and every state change written as one atomic, synced WriteBatch across families. */
#ifndef SHOAL_STORE_H
#define SHOAL_STORE_H

#include <stddef.h>

#include "err.h"

typedef enum {
    STORE_CF_META = 0,  /* counters (next run/worker id), schema version */
    STORE_CF_RUNS,      /* run id -> run record (JSON) */
    STORE_CF_WORKERS,   /* worker id -> worker record (JSON) */
    STORE_CF_PLANS,     /* "<run>/<generation %020>" -> plan (JSON) */
    STORE_CF_MANIFESTS, /* "c/<run>/<step %020>" manifest, "p/<run>/<step>/<worker>" pending */
    STORE_CF_LEDGER,    /* "<run>/<seq %020>" -> ledger entry (canonical JSON + hash) */
    STORE_CF_HISTORY,   /* "<run>/<step %020>" -> the committed step's metrics row (JSON) */
    STORE_CF__COUNT
} store_cf_t;

typedef struct store store_t;
typedef struct store_batch store_batch_t;

/* Opens (creating if missing, parent directories included) the database in `dir`/db.
 * *out is NULL on failure; the message names the directory and RocksDB's reason. */
shoal_err_t store_open(const char *dir, store_t **out);

/* Closes the database; idempotent, nulls *self_p. */
void store_destroy(store_t **self_p);

/* Reads one value: *val (NUL-terminated, caller frees with free()) and *len.
 * SHOAL_ERR_NOTFOUND when absent, SHOAL_ERR_DB on a RocksDB error. */
shoal_err_t store_get(store_t *st, store_cf_t cf, const char *key, char **val, size_t *len);

/* Calls fn for every key starting with `prefix` in key order, from `start` on (start may be
 * NULL = the prefix itself). fn returns nonzero to stop. Key and value are valid during the call
 * only (not NUL-terminated: use the lengths). */
typedef int (*store_scan_fn)(const char *key, size_t klen, const char *val, size_t vlen, void *ctx);
shoal_err_t store_scan(store_t *st, store_cf_t cf, const char *prefix, const char *start,
                       store_scan_fn fn, void *ctx);

/* Reads the last key (and value) under `prefix`: SHOAL_ERR_NOTFOUND when none. Caller frees
 * *key and *val. */
shoal_err_t store_last(store_t *st, store_cf_t cf, const char *prefix, char **key, char **val);

/* A batch of puts and deletes on `st`; applied all together by store_commit(). NULL on OOM. */
store_batch_t *store_batch_new(store_t *st);
void store_batch_destroy(store_batch_t **self_p);
void store_batch_put(store_batch_t *b, store_cf_t cf, const char *key, const char *val,
                     size_t vlen);
void store_batch_delete(store_batch_t *b, store_cf_t cf, const char *key);
int store_batch_count(const store_batch_t *b);

/* Writes the batch atomically with sync=1 (durable when this returns SHOAL_OK). The batch is
 * left intact (the caller destroys it). SHOAL_ERR_DB with RocksDB's message on failure. */
shoal_err_t store_commit(store_batch_t *b);

/* Name of a column family ("runs", ...). */
const char *store_cf_name(store_cf_t cf);

#endif
