/* plan_delta.c: peer tables, their digest, the coordinator's diff and a member's rebuild. */
#include "plan_delta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static void s_hash_u32(crypto_generichash_state *h, uint32_t v)
{
    const uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    crypto_generichash_update(h, b, sizeof b);
}

static void s_hash_str(crypto_generichash_state *h, const char *s)
{
    const size_t len = s ? strlen(s) : 0;
    s_hash_u32(h, (uint32_t)len);
    if (len)
        crypto_generichash_update(h, (const uint8_t *)s, len);
}

void plan_peers_digest(Shoal__Peer *const *peers, size_t n, uint8_t out[PLAN_DIGEST_LEN])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, PLAN_DIGEST_LEN);
    s_hash_u32(&h, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const Shoal__Peer *p = peers[i];
        s_hash_u32(&h, p->rank);
        s_hash_u32(&h, p->cell ? 1 : 0);
        if (p->cell) {
            s_hash_u32(&h, p->cell->replica);
            s_hash_u32(&h, p->cell->stage);
            s_hash_u32(&h, p->cell->ep_rank);
        }
        s_hash_str(&h, p->worker_id);
        s_hash_str(&h, p->data_endpoint);
        s_hash_str(&h, p->public_key);
    }
    crypto_generichash_final(&h, out, PLAN_DIGEST_LEN);
}

void plan_peers_clear(plan_peers_t *t)
{
    for (uint32_t i = 0; t->peers && i < t->n; i++) {
        free(t->peers[i].worker_id);
        free(t->peers[i].data_endpoint);
        free(t->peers[i].public_key);
    }
    free(t->peers);
    free(t->cells);
    free(t->ptrs);
    memset(t, 0, sizeof *t);
}

static char *s_dup(const char *s)
{
    return strdup(s ? s : "");
}

shoal_err_t plan_peers_copy(plan_peers_t *t, const char *run_id, uint64_t generation,
                            Shoal__Peer *const *peers, size_t n)
{
    plan_peers_clear(t);
    if (n > WIRE_MAX_REPEATED)
        return shoal_fail(SHOAL_ERR_INVALID, "peer table of %zu peers", n);
    t->peers = calloc(n + 1, sizeof *t->peers);
    t->cells = calloc(n + 1, sizeof *t->cells);
    t->ptrs = calloc(n + 1, sizeof *t->ptrs);
    if (!t->peers || !t->cells || !t->ptrs)
        goto nomem;
    for (size_t i = 0; i < n; i++, t->n++) {
        const Shoal__Peer *p = peers[i];
        Shoal__Peer q = SHOAL__PEER__INIT;
        Shoal__Cell c = SHOAL__CELL__INIT;
        q.rank = p->rank;
        q.worker_id = s_dup(p->worker_id);
        q.data_endpoint = s_dup(p->data_endpoint);
        q.public_key = s_dup(p->public_key);
        t->peers[i] = q;
        if (!q.worker_id || !q.data_endpoint || !q.public_key) {
            t->n++; /* freed with the others */
            goto nomem;
        }
        if (p->cell) {
            c.replica = p->cell->replica;
            c.stage = p->cell->stage;
            c.ep_rank = p->cell->ep_rank;
            t->cells[i] = c;
            t->peers[i].cell = &t->cells[i];
        }
        t->ptrs[i] = &t->peers[i];
    }
    snprintf(t->run_id, sizeof t->run_id, "%s", run_id ? run_id : "");
    t->generation = generation;
    plan_peers_digest(t->ptrs, t->n, t->digest);
    return SHOAL_OK;
nomem:
    plan_peers_clear(t);
    return shoal_fail(SHOAL_ERR_NOMEM, "copying a peer table of %zu peers", n);
}

static int s_str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int plan_peer_equal(const Shoal__Peer *a, const Shoal__Peer *b)
{
    if (a->rank != b->rank || !a->cell != !b->cell)
        return 0;
    if (a->cell && (a->cell->replica != b->cell->replica || a->cell->stage != b->cell->stage ||
                    a->cell->ep_rank != b->cell->ep_rank))
        return 0;
    return s_str_eq(a->worker_id, b->worker_id) && s_str_eq(a->data_endpoint, b->data_endpoint) &&
           s_str_eq(a->public_key, b->public_key);
}

size_t plan_peers_diff(const plan_peers_t *base, Shoal__Peer *const *peers, size_t n,
                       Shoal__Peer **changed)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (i >= base->n || !plan_peer_equal(base->ptrs[i], peers[i]))
            changed[k++] = peers[i];
    return k;
}

/* The checks of delta `a` on `base` that need no rebuild; NULL when they pass. */
static const char *s_delta_refusal(const plan_peers_t *base, const char *run_id,
                                   const Shoal__Assignment *a)
{
    const Shoal__Plan *p = a->plan;
    if (!p || a->base_generation == 0)
        return "not a delta";
    if (!base->generation || a->base_generation != base->generation ||
        strcmp(base->run_id, run_id ? run_id : "") != 0)
        return "the delta's base is not the plan held";
    if (a->n_peers == 0 || a->n_peers > WIRE_MAX_REPEATED || p->n_peers > a->n_peers)
        return "delta peer count out of bounds";
    if (a->peers_digest.len != PLAN_DIGEST_LEN)
        return "delta without a peer table digest";
    return NULL;
}

/* The full table of delta `a` on `base` as pointers into both, into full[a->n_peers]; NULL
 * when it has one, else why not. */
static const char *s_delta_rows(const plan_peers_t *base, const Shoal__Assignment *a,
                                Shoal__Peer **full)
{
    const Shoal__Plan *p = a->plan;
    size_t k = 0; /* next listed peer */
    for (size_t i = 0; i < a->n_peers; i++) {
        if (k < p->n_peers && p->peers[k]->rank < i)
            return "delta peers not in increasing rank order";
        if (k < p->n_peers && p->peers[k]->rank == i)
            full[i] = p->peers[k++];
        else if (i < base->n)
            full[i] = base->ptrs[i];
        else
            return "a rank neither in the delta nor in the plan held";
    }
    return k == p->n_peers ? NULL : "delta peers beyond n_peers";
}

shoal_err_t plan_peers_apply(const plan_peers_t *base, const char *run_id,
                             const Shoal__Assignment *a, plan_peers_t *out, const char **why)
{
    plan_peers_clear(out);
    /* the plan held already is the delta's result: a push and the answer to a pull crossed (at
     * 10,000 workers ~2,000 such re-deliveries a re-plan were refused, each a full fetch) */
    if (base->generation && base->generation == a->plan->generation && base->n == a->n_peers &&
        strcmp(base->run_id, run_id) == 0 && a->peers_digest.len == PLAN_DIGEST_LEN &&
        sodium_memcmp(base->digest, a->peers_digest.data, PLAN_DIGEST_LEN) == 0) {
        *why = NULL;
        shoal_err_t rc = plan_peers_copy(out, run_id, base->generation, base->ptrs, base->n);
        if (rc != SHOAL_OK)
            *why = "out of memory";
        return rc;
    }
    if ((*why = s_delta_refusal(base, run_id, a)))
        return shoal_fail(SHOAL_ERR_INVALID, "plan delta refused: %s", *why);
    Shoal__Peer **full = calloc(a->n_peers, sizeof *full);
    if (!full) {
        *why = "out of memory";
        return shoal_fail(SHOAL_ERR_NOMEM, "plan delta of %u peers", a->n_peers);
    }
    shoal_err_t rc = SHOAL_OK;
    if (!(*why = s_delta_rows(base, a, full))) {
        rc = plan_peers_copy(out, run_id, a->plan->generation, full, a->n_peers);
        if (rc != SHOAL_OK)
            *why = "out of memory";
        else if (sodium_memcmp(out->digest, a->peers_digest.data, PLAN_DIGEST_LEN) != 0)
            *why = "rebuilt peer table does not match the delta's digest";
    }
    free(full);
    if (rc == SHOAL_OK && *why) {
        plan_peers_clear(out);
        rc = shoal_fail(SHOAL_ERR_INVALID, "plan delta refused: %s", *why);
    }
    return rc;
}

int plan_peers_delta_is(const plan_peers_t *base, const char *run_id, const Shoal__Assignment *a,
                        const plan_peers_t *known)
{
    if (s_delta_refusal(base, run_id, a) || known->n != a->n_peers ||
        known->generation != a->plan->generation || strcmp(known->run_id, base->run_id) != 0 ||
        sodium_memcmp(known->digest, a->peers_digest.data, PLAN_DIGEST_LEN) != 0)
        return 0;
    Shoal__Peer **full = calloc(a->n_peers, sizeof *full);
    int same = full && !s_delta_rows(base, a, full);
    for (uint32_t i = 0; same && i < known->n; i++)
        same = plan_peer_equal(full[i], known->ptrs[i]);
    free(full);
    return same;
}
