/* ledger.h: the append-only, hash-chained ledger of every coordinator decision, one chain per
 * run (plus the chain "cluster" for decisions outside any run), in the store's ledger family.
 *
 * Entry (canonical form: compact JSON, sorted keys, ASCII):
 *   {"detail":{...},"kind":"plan","prev_hash":"<64 hex>","run":"r1","seq":7,"time_ms":...}
 * hash = SHA-256(prev_hash as 64 hex chars || canonical form); the first entry's prev_hash is
 * 64 zeros. The stored value is the canonical object plus "hash" and, once the coordinator has a
 * signing key, "sig": the Ed25519 signature of the hash (common/ledger_chain.h). */
#ifndef SHOAL_LEDGER_H
#define SHOAL_LEDGER_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "ledger_chain.h"
#include "store.h"

#define LEDGER_CLUSTER "cluster"

typedef struct ledger ledger_t;

/* A ledger over `st` (borrowed; must outlive the ledger). NULL on OOM. */
ledger_t *ledger_new(store_t *st);
void ledger_destroy(ledger_t **self_p);

/* Entries appended from now on carry "sig", made with sk (copied; libsodium's 64-byte form). */
void ledger_set_signing_key(ledger_t *l, const uint8_t sk[LEDGER_SECKEY_LEN]);
/* The public half of the signing key; NULL when entries are not signed. */
const uint8_t *ledger_public_key(const ledger_t *l);

/* Adds the next entry of `run`'s chain to batch `b` (detail borrowed, may be NULL = {}).
 * The entry is staged: a later append to the same run in the same batch chains onto it.
 * After store_commit(b) call ledger_staged_commit() on success or ledger_staged_discard() on
 * failure. *seq_out (may be NULL) receives the entry's seq (1-based). */
shoal_err_t ledger_append(ledger_t *l, store_batch_t *b, const char *run, const char *kind,
                          json_t *detail, int64_t time_ms, uint64_t *seq_out);
void ledger_staged_commit(ledger_t *l);
void ledger_staged_discard(ledger_t *l);

/* Appends to `out` (a JSON array) the entries of `run` with seq > since, at most `limit`
 * (0 = 1000), each as its stored object (with "hash"). */
shoal_err_t ledger_list(store_t *st, const char *run, uint64_t since, unsigned limit, json_t *out);

/* Verifies `run`'s chain from seq 1: contiguous seqs, each prev_hash equal to the previous
 * entry's hash, each hash recomputed from the canonical form. Returns SHOAL_OK and sets
 * *n_entries; *first_bad = 0 when the chain verifies, else the seq (or position) of the first
 * broken entry with `reason` filled. SHOAL_ERR_DB only when the store itself fails. */
shoal_err_t ledger_verify(store_t *st, const char *run, uint64_t *n_entries, uint64_t *first_bad,
                          char *reason, size_t reason_cap);

/* ledger_verify that also checks, with public key pk, the signature of every entry that carries
 * one; with require_sig an unsigned entry breaks the chain too. */
shoal_err_t ledger_verify_signed(store_t *st, const char *run, const uint8_t *pk, bool require_sig,
                                 uint64_t *n_entries, uint64_t *first_bad, char *reason,
                                 size_t reason_cap);

#endif
