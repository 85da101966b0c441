/* plan_delta.h: plan deltas (issue 13). After a re-plan the coordinator sends a member that
 * holds the previous generation only the peers that changed; the member rebuilds the full peer
 * table from the one it holds and checks it against the digest of the coordinator's table.
 * Shared by the coordinator (diff), the worker session and the simulator (apply). */
#ifndef SHOAL_COMMON_PLAN_DELTA_H
#define SHOAL_COMMON_PLAN_DELTA_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "shoal.pb-c.h"
#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PLAN_DIGEST_LEN 32 /* BLAKE2b-256 (crypto_generichash) */

/* A full peer table, owned (strings included), usable as a Plan's peers (ptrs, n). */
typedef struct {
    char run_id[WIRE_MAX_ID_LEN + 1];
    uint64_t generation; /* 0: empty */
    uint32_t n;
    Shoal__Peer *peers;
    Shoal__Cell *cells;
    Shoal__Peer **ptrs;
    uint8_t digest[PLAN_DIGEST_LEN];
} plan_peers_t;

/* The digest of a peer table: every peer's rank, cell, worker id, endpoint and key, in order,
 * each string length-prefixed (no two tables share an encoding). */
void plan_peers_digest(Shoal__Peer *const *peers, size_t n, uint8_t out[PLAN_DIGEST_LEN]);

/* Replaces *t with a deep copy of `peers` (run_id, generation) and its digest. On error *t is
 * left empty. */
shoal_err_t plan_peers_copy(plan_peers_t *t, const char *run_id, uint64_t generation,
                            Shoal__Peer *const *peers, size_t n);

/* Frees what *t owns; *t is empty after (idempotent). */
void plan_peers_clear(plan_peers_t *t);

/* Whether two peers carry the same rank, cell, worker, endpoint and key. */
int plan_peer_equal(const Shoal__Peer *a, const Shoal__Peer *b);

/* The peers of `peers` (n, ordered by rank) that differ from base's same rank or lie beyond
 * base: their pointers, in rank order, into changed[] (room for n); returns how many. */
size_t plan_peers_diff(const plan_peers_t *base, Shoal__Peer *const *peers, size_t n,
                       Shoal__Peer **changed);

/* Rebuilds into *out the full peer table of delta assignment `a` (base_generation != 0, a
 * wire-checked envelope's) for run `run_id` on `base`. Refused (SHOAL_ERR_INVALID, *why says
 * why, *out empty) when base is not the delta's base (run or generation), when n_peers or the
 * listed ranks are out of bounds or not increasing, when a rank is neither listed nor in base,
 * or when the rebuilt table's digest differs from peers_digest. A delta whose result base already
 * is (same run, generation, size and digest: delivered twice) gives a copy of base.
 * SHOAL_ERR_NOMEM: out of memory. */
shoal_err_t plan_peers_apply(const plan_peers_t *base, const char *run_id,
                             const Shoal__Assignment *a, plan_peers_t *out, const char **why);

/* Whether delta `a` on `base` rebuilds exactly `known` (a table already rebuilt and checked,
 * e.g. by another simulated worker of the same process): same rows, and known's digest is the
 * delta's. Saves the copy and the hash; 0 on any doubt (then apply it). */
int plan_peers_delta_is(const plan_peers_t *base, const char *run_id, const Shoal__Assignment *a,
                        const plan_peers_t *known);

#ifdef __cplusplus
}
#endif
#endif
