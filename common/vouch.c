/* vouch.c: the cache of vouched-for keys (vouch.h). A fixed table under one mutex: lookups come
 * from a ZAP handler thread, questions and answers from a session thread, a few a minute. */
#include "vouch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

typedef enum { S_FREE = 0, S_WANTED, S_ASKED, S_ADMITTED, S_REFUSED } s_state_t;

typedef struct {
    s_state_t state;
    char key[ZSEC_KEY_LEN + 1];
    char user[VOUCH_USER_MAX];
    int64_t at_ms; /* WANTED/ASKED: when asked (0: not yet); ADMITTED/REFUSED: when answered */
} s_entry_t;

struct vouch {
    pthread_mutex_t mu;
    int64_t ttl_ms;
    uint64_t refusals;
    s_entry_t e[VOUCH_MAX];
};

shoal_err_t vouch_new(int64_t ttl_ms, vouch_t **out)
{
    *out = NULL;
    vouch_t *v = calloc(1, sizeof *v);
    if (!v)
        return shoal_fail(SHOAL_ERR_NOMEM, "vouch cache: out of memory");
    pthread_mutex_init(&v->mu, NULL);
    v->ttl_ms = ttl_ms > 0 ? ttl_ms : VOUCH_TTL_MS;
    *out = v;
    return SHOAL_OK;
}

void vouch_destroy(vouch_t **vp)
{
    vouch_t *v = vp ? *vp : NULL;
    if (!v)
        return;
    pthread_mutex_destroy(&v->mu);
    free(v);
    *vp = NULL;
}

/* When e's answer or question stops counting. */
static int64_t s_expiry(const vouch_t *v, const s_entry_t *e)
{
    if (e->state == S_FREE)
        return INT64_MIN;
    if (e->state == S_WANTED)
        return INT64_MAX; /* not asked yet: kept until asked */
    return e->at_ms + (e->state == S_ASKED ? VOUCH_ASK_AGAIN_MS : v->ttl_ms);
}

/* The entry of key, or NULL. Under the lock. */
static s_entry_t *s_find(vouch_t *v, const char *key)
{
    for (int i = 0; i < VOUCH_MAX; i++)
        if (v->e[i].state != S_FREE && strcmp(v->e[i].key, key) == 0)
            return &v->e[i];
    return NULL;
}

/* A slot for a new key: a free one, else the one that expires first. Under the lock. */
static s_entry_t *s_slot(vouch_t *v)
{
    s_entry_t *best = &v->e[0];
    for (int i = 0; i < VOUCH_MAX; i++) {
        if (v->e[i].state == S_FREE)
            return &v->e[i];
        if (s_expiry(v, &v->e[i]) < s_expiry(v, best))
            best = &v->e[i];
    }
    return best;
}

zsec_vouch_t vouch_lookup(void *arg, const char *key, char *user, size_t cap)
{
    vouch_t *v = arg;
    const int64_t now = clock_mono_ms();
    zsec_vouch_t verdict = ZSEC_VOUCH_UNKNOWN;
    pthread_mutex_lock(&v->mu);
    s_entry_t *e = s_find(v, key);
    if (e && now >= s_expiry(v, e)) {
        e->state = S_WANTED; /* expired: ask again */
        e->at_ms = 0;
    }
    if (!e) {
        e = s_slot(v);
        memset(e, 0, sizeof *e);
        e->state = S_WANTED;
        snprintf(e->key, sizeof e->key, "%s", key);
    }
    if (e->state == S_ADMITTED) {
        snprintf(user, cap, "%s", e->user);
        verdict = ZSEC_VOUCH_ADMIT;
    } else if (e->state == S_REFUSED) {
        verdict = ZSEC_VOUCH_DENY;
    }
    pthread_mutex_unlock(&v->mu);
    return verdict;
}

int vouch_take_wanted(vouch_t *v, char (*keys)[ZSEC_KEY_LEN + 1], int max)
{
    const int64_t now = clock_mono_ms();
    int n = 0;
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < VOUCH_MAX && n < max; i++)
        if (v->e[i].state == S_WANTED) {
            v->e[i].state = S_ASKED;
            v->e[i].at_ms = now;
            memcpy(keys[n++], v->e[i].key, ZSEC_KEY_LEN + 1);
        }
    pthread_mutex_unlock(&v->mu);
    return n;
}

int vouch_answer(vouch_t *v, const char *key, int admitted, const char *worker_id)
{
    int filed = 0;
    pthread_mutex_lock(&v->mu);
    s_entry_t *e = s_find(v, key);
    /* an admission is filed when asked, or over a refusal (a quarantined worker undrained,
     * pushed); a refusal always (a revocation, pushed). An admission of a key nobody asked
     * about is not cached: strangers' answers cannot fill the table. */
    if (e && (!admitted || e->state == S_ASKED || e->state == S_WANTED ||
              e->state == S_REFUSED)) {
        e->state = admitted ? S_ADMITTED : S_REFUSED;
        e->at_ms = clock_mono_ms();
        snprintf(e->user, sizeof e->user, "worker:%s", worker_id ? worker_id : "");
        v->refusals += !admitted;
        filed = 1;
    }
    pthread_mutex_unlock(&v->mu);
    return filed;
}

uint64_t vouch_refusals(vouch_t *v)
{
    pthread_mutex_lock(&v->mu);
    const uint64_t n = v->refusals;
    pthread_mutex_unlock(&v->mu);
    return n;
}
