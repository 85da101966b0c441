/* idmap.c: see idmap.h. The table stays at most half full, so a probe run is short. */
#include "idmap.h"

#include <stdlib.h>
#include <string.h>

static uint32_t s_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static int s_same(const idmap_slot_t *s, const void *key, size_t len, uint32_t h)
{
    return s->hash == h && s->len == len && memcmp(s->key, key, len) == 0;
}

void idmap_fini(idmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

void idmap_clear(idmap_t *m)
{
    if (m->slots)
        memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = 0;
}

void *idmap_get(const idmap_t *m, const void *key, size_t len)
{
    if (!m->n)
        return NULL;
    const uint32_t h = s_hash(key, len);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const idmap_slot_t *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s_same(s, key, len, h))
            return s->val;
    }
}

/* Puts a slot whose key is known to be absent (growing re-inserts with it). */
static void s_insert(idmap_t *m, const idmap_slot_t *in)
{
    size_t i = in->hash & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    m->slots[i] = *in;
    m->n++;
}

static shoal_err_t s_grow(idmap_t *m)
{
    const size_t cap = m->cap ? 2 * m->cap : 64;
    idmap_slot_t *old = m->slots, *grown = calloc(cap, sizeof *grown);
    if (!grown)
        return shoal_fail(SHOAL_ERR_NOMEM, "hash table of %zu slots", cap);
    const size_t old_cap = m->cap;
    m->slots = grown;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            s_insert(m, &old[i]);
    free(old);
    return SHOAL_OK;
}

shoal_err_t idmap_put(idmap_t *m, const void *key, size_t len, void *val)
{
    const uint32_t h = s_hash(key, len);
    for (size_t i = m->cap ? h & (m->cap - 1) : 0; m->cap && m->slots[i].key;
         i = (i + 1) & (m->cap - 1))
        if (s_same(&m->slots[i], key, len, h)) {
            m->slots[i].key = key; /* the caller's copy of the key from now on */
            m->slots[i].val = val;
            return SHOAL_OK;
        }
    if (2 * (m->n + 1) > m->cap) {
        shoal_err_t rc = s_grow(m);
        if (rc != SHOAL_OK)
            return rc;
    }
    s_insert(m, &(idmap_slot_t){key, len, val, h});
    return SHOAL_OK;
}

int idmap_del(idmap_t *m, const void *key, size_t len)
{
    if (!m->n)
        return 0;
    const uint32_t h = s_hash(key, len);
    const size_t mask = m->cap - 1;
    size_t i = h & mask;
    for (;; i = (i + 1) & mask) {
        if (!m->slots[i].key)
            return 0;
        if (s_same(&m->slots[i], key, len, h))
            break;
    }
    /* backward shift: move later entries of the run into the hole when their home slot allows,
     * so that no tombstone is needed and lookups stop at the first empty slot */
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        if (!m->slots[j].key)
            break;
        const size_t home = m->slots[j].hash & mask;
        /* j's entry may move to i when i lies cyclically in [home, j) */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i] = (idmap_slot_t){0};
    m->n--;
    return 1;
}
