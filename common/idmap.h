/* idmap.h: a hash table from byte-string keys to pointers (open addressing, linear probing,
 * backward-shift deletion, FNV-1a): the coordinator's per-message lookups (a connection's rate
 * bucket, a worker's cell in a plan) in O(1) at 10,000 workers instead of a scan of them all.
 * Keys are borrowed: each must stay valid and unchanged while it is in the table (the value
 * object holds its own key). Debian's uthash-dev would do as well; this is ~100 lines and needs
 * no package on the build machines. */
#ifndef SHOAL_IDMAP_H
#define SHOAL_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    const void *key; /* NULL: empty slot */
    size_t len;
    void *val;
    uint32_t hash;
} idmap_slot_t;

typedef struct {
    idmap_slot_t *slots;
    size_t cap; /* a power of two (0 until the first put) */
    size_t n;
} idmap_t; /* zero-initialised is an empty table */

/* Frees the slots; the table is empty and usable again. */
void idmap_fini(idmap_t *m);
/* Empties the table, keeping its slots. */
void idmap_clear(idmap_t *m);
/* The value stored under key[0..len), or NULL. */
void *idmap_get(const idmap_t *m, const void *key, size_t len);
/* Stores val under key (replacing any value there). SHOAL_ERR_NOMEM when growing fails. */
shoal_err_t idmap_put(idmap_t *m, const void *key, size_t len, void *val);
/* Removes key; returns whether it was there. */
int idmap_del(idmap_t *m, const void *key, size_t len);

#endif
