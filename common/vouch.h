/* vouch.h: the keys a third party (the coordinator) vouches for, as a bounded, expiring cache
 * that a ZAP handler consults (zsec_zap_vouch) and a session thread fills.
 *
 * A key the cache does not know (or whose answer expired) is "wanted": vouch_lookup says
 * UNKNOWN and the session takes it with vouch_take_wanted, asks, and files the answer with
 * vouch_answer. An answer, admit or refuse, stands for ttl_ms; a refusal is final for that time
 * unless the coordinator pushes an admission over it (a quarantined worker undrained).
 * A question left unanswered is asked again after VOUCH_ASK_AGAIN_MS. At most VOUCH_MAX keys
 * are kept: a new key evicts the one whose answer expires first (a stranger that dials with many
 * keys can evict answers, never forge one). Thread-safe. */
#ifndef SHOAL_VOUCH_H
#define SHOAL_VOUCH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "zsec.h"

#define VOUCH_MAX 256
#define VOUCH_TTL_MS 60000
#define VOUCH_ASK_AGAIN_MS 5000
#define VOUCH_USER_MAX 64 /* the User-Id an admitted key gets (the vouched worker's id) */

typedef struct vouch vouch_t;

/* A cache whose answers stand for ttl_ms (> 0). SHOAL_ERR_NOMEM. */
shoal_err_t vouch_new(int64_t ttl_ms, vouch_t **out);
/* Frees; idempotent, nulls *v. No handler may still consult it. */
void vouch_destroy(vouch_t **v);

/* The cache's answer for key (Z85): ADMIT (its User-Id, "worker:<id>", to user), DENY, or
 * UNKNOWN (the key is then wanted). A zsec_vouch_fn (arg: the vouch_t). */
zsec_vouch_t vouch_lookup(void *v, const char *key, char *user, size_t cap);

/* Up to max keys to ask about now, each marked asked; returns how many. */
int vouch_take_wanted(vouch_t *v, char (*keys)[ZSEC_KEY_LEN + 1], int max);

/* The answer for key: admitted (as worker `worker_id`) or refused. An admission is filed for a
 * key asked about or cached as refused (the coordinator's push after an undrain) and ignored
 * otherwise; a refusal of a known key is filed whenever it comes (a revocation the coordinator
 * pushes ends a cached admission). Returns 1 when filed, 0 when ignored. */
int vouch_answer(vouch_t *v, const char *key, int admitted, const char *worker_id);

/* Refusals filed so far. */
uint64_t vouch_refusals(vouch_t *v);

#endif
