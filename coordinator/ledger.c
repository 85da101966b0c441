/* ledger.c: hash-chained ledger entries in the store (see ledger.h for the entry format). */
#include "ledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ctl_reply.h"
#include "numparse.h"

#define LEDGER_DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)
#define LEDGER_RUN_MAX 80

static const char s_zero_hash[LEDGER_HASH_HEX] =
    "0000000000000000000000000000000000000000000000000000000000000000";

typedef struct {
    char run[LEDGER_RUN_MAX];
    uint64_t seq;
    char hash[LEDGER_HASH_HEX];
    int staged;
    uint64_t staged_seq;
    char staged_hash[LEDGER_HASH_HEX];
} ledger_tail_t;

struct ledger {
    store_t *st;
    uint8_t sk[LEDGER_SECKEY_LEN];
    int have_sk;
    ledger_tail_t *tails;
    int n_tails, cap_tails;
};

ledger_t *ledger_new(store_t *st)
{
    ledger_t *l = calloc(1, sizeof *l);
    if (l)
        l->st = st;
    return l;
}

void ledger_destroy(ledger_t **self_p)
{
    ledger_t *l = *self_p;
    if (!l)
        return;
    free(l->tails);
    sodium_memzero(l->sk, sizeof l->sk);
    free(l);
    *self_p = NULL;
}

void ledger_set_signing_key(ledger_t *l, const uint8_t sk[LEDGER_SECKEY_LEN])
{
    memcpy(l->sk, sk, LEDGER_SECKEY_LEN);
    l->have_sk = 1;
}

const uint8_t *ledger_public_key(const ledger_t *l)
{
    /* libsodium's secret key is seed || public key */
    return l->have_sk ? l->sk + LEDGER_SECKEY_LEN - LEDGER_PUBKEY_LEN : NULL;
}

static void s_key(char *buf, size_t cap, const char *run, uint64_t seq)
{
    snprintf(buf, cap, "%s/%020" PRIu64, run, seq);
}

/* The committed tail of `run`, loaded from the store the first time. */
static shoal_err_t s_tail(ledger_t *l, const char *run, ledger_tail_t **out)
{
    for (int i = 0; i < l->n_tails; i++)
        if (strcmp(l->tails[i].run, run) == 0) {
            *out = &l->tails[i];
            return SHOAL_OK;
        }
    if (l->n_tails == l->cap_tails) {
        int cap = l->cap_tails ? 2 * l->cap_tails : 8;
        ledger_tail_t *t = realloc(l->tails, (size_t)cap * sizeof *t);
        if (!t)
            return shoal_fail(SHOAL_ERR_NOMEM, "ledger tails");
        l->tails = t;
        l->cap_tails = cap;
    }
    ledger_tail_t *t = &l->tails[l->n_tails];
    memset(t, 0, sizeof *t);
    snprintf(t->run, sizeof t->run, "%s", run);
    memcpy(t->hash, s_zero_hash, LEDGER_HASH_HEX);
    char prefix[LEDGER_RUN_MAX + 2], *key = NULL, *val = NULL;
    snprintf(prefix, sizeof prefix, "%s/", run);
    shoal_err_t rc = store_last(l->st, STORE_CF_LEDGER, prefix, &key, &val);
    if (rc == SHOAL_ERR_NOTFOUND) {
        rc = SHOAL_OK;
    } else if (rc == SHOAL_OK) {
        json_error_t jerr;
        json_t *e = json_loads(val, 0, &jerr);
        const char *h = e ? json_string_value(json_object_get(e, CTL_F_HASH)) : NULL;
        json_int_t seq = e ? json_integer_value(json_object_get(e, CTL_F_SEQ)) : 0;
        if (!h || strlen(h) != 64 || seq <= 0)
            rc = shoal_fail(SHOAL_ERR_FORMAT, "ledger entry %s is malformed", key);
        else {
            t->seq = (uint64_t)seq;
            memcpy(t->hash, h, LEDGER_HASH_HEX);
        }
        json_decref(e);
    }
    free(key);
    free(val);
    if (rc != SHOAL_OK)
        return rc;
    l->n_tails++;
    *out = t;
    return SHOAL_OK;
}

shoal_err_t ledger_append(ledger_t *l, store_batch_t *b, const char *run, const char *kind,
                          json_t *detail, int64_t time_ms, uint64_t *seq_out)
{
    shoal_err_t rc = SHOAL_OK;
    char *stored = NULL;
    if (strlen(run) >= LEDGER_RUN_MAX - 1 || strchr(run, '/'))
        return shoal_fail(SHOAL_ERR_INVALID, "ledger run id '%s' invalid", run);
    ledger_tail_t *t = NULL;
    rc = s_tail(l, run, &t);
    if (rc != SHOAL_OK)
        return rc;
    uint64_t seq = (t->staged ? t->staged_seq : t->seq) + 1;
    const char *prev = t->staged ? t->staged_hash : t->hash;
    json_t *d = detail ? json_incref(detail) : json_object();
    /* "o" steals the reference to d, also when packing fails */
    json_t *e = json_pack("{s:I, s:I, s:s, s:s, s:o, s:s}", CTL_F_SEQ, (json_int_t)seq,
                          CTL_F_TIME_MS, (json_int_t)time_ms, CTL_F_RUN, run, CTL_F_KIND, kind,
                          CTL_F_DETAIL, d, CTL_F_PREV_HASH, prev);
    if (!e)
        return shoal_fail(SHOAL_ERR_NOMEM, "ledger entry");
    char hash[LEDGER_HASH_HEX];
    SHOAL_CHECK_GOTO(ledger_entry_seal(e, prev, l->have_sk ? l->sk : NULL, hash), rc, out_decref);
    stored = json_dumps(e, LEDGER_DUMP_FLAGS);
    if (!stored) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "ledger entry");
        goto out_decref;
    }
    char key[LEDGER_RUN_MAX + 24];
    s_key(key, sizeof key, run, seq);
    store_batch_put(b, STORE_CF_LEDGER, key, stored, strlen(stored));
    t->staged = 1;
    t->staged_seq = seq;
    memcpy(t->staged_hash, hash, LEDGER_HASH_HEX);
    if (seq_out)
        *seq_out = seq;
out_decref:
    json_decref(e);
    free(stored);
    return rc;
}

void ledger_staged_commit(ledger_t *l)
{
    for (int i = 0; i < l->n_tails; i++) {
        ledger_tail_t *t = &l->tails[i];
        if (!t->staged)
            continue;
        t->seq = t->staged_seq;
        memcpy(t->hash, t->staged_hash, LEDGER_HASH_HEX);
        t->staged = 0;
    }
}

void ledger_staged_discard(ledger_t *l)
{
    for (int i = 0; i < l->n_tails; i++)
        l->tails[i].staged = 0;
}

typedef struct {
    json_t *out;
    unsigned left;
} s_list_ctx_t;

static int s_list_one(const char *key, size_t klen, const char *val, size_t vlen, void *ctx)
{
    (void)key;
    (void)klen;
    s_list_ctx_t *c = ctx;
    json_error_t jerr;
    json_t *e = json_loadb(val, vlen, 0, &jerr);
    if (!e) /* keep the position visible: verify names it */
        e = json_pack("{s:s}", "malformed", "unparseable entry");
    json_array_append_new(c->out, e);
    return --c->left == 0;
}

shoal_err_t ledger_list(store_t *st, const char *run, uint64_t since, unsigned limit, json_t *out)
{
    char prefix[LEDGER_RUN_MAX + 2], start[LEDGER_RUN_MAX + 24];
    snprintf(prefix, sizeof prefix, "%s/", run);
    s_key(start, sizeof start, run, since + 1);
    s_list_ctx_t c = {out, limit ? limit : 1000};
    return store_scan(st, STORE_CF_LEDGER, prefix, start, s_list_one, &c);
}

typedef struct {
    ledger_chain_t chain;
    uint64_t first_bad;
    char *reason;
    size_t cap;
    size_t prefix_len;
} s_verify_ctx_t;

static int s_verify_bad(s_verify_ctx_t *c, uint64_t seq, const char *why)
{
    c->first_bad = seq;
    snprintf(c->reason, c->cap, "entry %" PRIu64 ": %s", seq, why);
    return 1;
}

static int s_verify_one(const char *key, size_t klen, const char *val, size_t vlen, void *ctx)
{
    s_verify_ctx_t *c = ctx;
    uint64_t expect = c->chain.n + 1;
    json_error_t jerr;
    char keyseq[32], why[256];
    uint64_t key_n = 0;
    size_t sl = klen - c->prefix_len;
    snprintf(keyseq, sizeof keyseq, "%.*s", (int)(sl < 31 ? sl : 31), key + c->prefix_len);
    /* the store key must name the entry's seq too: an entry moved to another key is a gap */
    if (numparse_u64(keyseq, UINT64_MAX, &key_n) != SHOAL_OK || key_n != expect)
        return s_verify_bad(c, expect, "sequence gap or mismatch");
    json_t *e = json_loadb(val, vlen, 0, &jerr);
    int stop = 0;
    if (!ledger_chain_next(&c->chain, e, why, sizeof why))
        stop = s_verify_bad(c, expect, e ? why : "not a JSON object");
    json_decref(e);
    return stop;
}

shoal_err_t ledger_verify(store_t *st, const char *run, uint64_t *n_entries, uint64_t *first_bad,
                          char *reason, size_t reason_cap)
{
    return ledger_verify_signed(st, run, NULL, false, n_entries, first_bad, reason, reason_cap);
}

shoal_err_t ledger_verify_signed(store_t *st, const char *run, const uint8_t *pk, bool require_sig,
                                 uint64_t *n_entries, uint64_t *first_bad, char *reason,
                                 size_t reason_cap)
{
    char prefix[LEDGER_RUN_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", run);
    s_verify_ctx_t c = {0};
    ledger_chain_init(&c.chain, pk, require_sig);
    c.reason = reason;
    c.cap = reason_cap;
    c.prefix_len = strlen(prefix);
    if (reason_cap)
        reason[0] = 0;
    shoal_err_t rc = store_scan(st, STORE_CF_LEDGER, prefix, NULL, s_verify_one, &c);
    *n_entries = c.chain.n;
    *first_bad = c.first_bad;
    return rc;
}
