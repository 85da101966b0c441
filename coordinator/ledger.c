/* ledger.c: hash-chained ledger entries in the store (see ledger.h for the entry format). */
#include "ledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

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
    free(l);
    *self_p = NULL;
}

shoal_err_t ledger_hash(const char *prev_hash, const char *text, char out[LEDGER_HASH_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return shoal_fail(SHOAL_ERR_NOMEM, "EVP_MD_CTX_new");
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, prev_hash, strlen(prev_hash)) &&
             EVP_DigestUpdate(ctx, text, strlen(text)) && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok || mdlen != 32)
        return shoal_fail(SHOAL_ERR_INVALID, "SHA-256 failed");
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return SHOAL_OK;
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
    char *canon = NULL, *stored = NULL;
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
    canon = json_dumps(e, LEDGER_DUMP_FLAGS);
    char hash[LEDGER_HASH_HEX];
    if (!canon) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "ledger entry");
        goto out_decref;
    }
    SHOAL_CHECK_GOTO(ledger_hash(prev, canon, hash), rc, out_decref);
    json_object_set_new(e, CTL_F_HASH, json_string(hash));
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
    free(canon);
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
    uint64_t n, first_bad;
    char prev[LEDGER_HASH_HEX];
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
    uint64_t expect = c->n + 1;
    int stop = 0;
    json_error_t jerr;
    json_t *e = json_loadb(val, vlen, 0, &jerr);
    if (!e || !json_is_object(e))
        return s_verify_bad(c, expect, "not a JSON object");
    char keyseq[32];
    size_t sl = klen - c->prefix_len;
    snprintf(keyseq, sizeof keyseq, "%.*s", (int)(sl < 31 ? sl : 31), key + c->prefix_len);
    json_int_t seq = json_integer_value(json_object_get(e, CTL_F_SEQ));
    const char *h = json_string_value(json_object_get(e, CTL_F_HASH));
    const char *prev = json_string_value(json_object_get(e, CTL_F_PREV_HASH));
    char *hash = h ? strdup(h) : NULL;
    char recomputed[LEDGER_HASH_HEX];
    char *canon = NULL;
    uint64_t key_n = 0;
    if ((uint64_t)seq != expect || numparse_u64(keyseq, UINT64_MAX, &key_n) != SHOAL_OK ||
        key_n != expect) {
        stop = s_verify_bad(c, expect, "sequence gap or mismatch");
        goto out;
    }
    if (!hash || strlen(hash) != 64 || !prev) {
        stop = s_verify_bad(c, expect, "missing hash or prev_hash");
        goto out;
    }
    if (strcmp(prev, c->prev) != 0) {
        stop = s_verify_bad(c, expect, "prev_hash does not match the previous entry's hash");
        goto out;
    }
    json_object_del(e, CTL_F_HASH);
    canon = json_dumps(e, LEDGER_DUMP_FLAGS);
    if (!canon || ledger_hash(c->prev, canon, recomputed) != SHOAL_OK ||
        strcmp(recomputed, hash) != 0) {
        stop = s_verify_bad(c, expect, "hash does not match the entry's content");
        goto out;
    }
    memcpy(c->prev, hash, LEDGER_HASH_HEX);
    c->n++;
out:
    free(canon);
    free(hash);
    json_decref(e);
    return stop;
}

shoal_err_t ledger_verify(store_t *st, const char *run, uint64_t *n_entries, uint64_t *first_bad,
                          char *reason, size_t reason_cap)
{
    char prefix[LEDGER_RUN_MAX + 2];
    snprintf(prefix, sizeof prefix, "%s/", run);
    s_verify_ctx_t c = {0};
    memcpy(c.prev, s_zero_hash, LEDGER_HASH_HEX);
    c.reason = reason;
    c.cap = reason_cap;
    c.prefix_len = strlen(prefix);
    if (reason_cap)
        reason[0] = 0;
    shoal_err_t rc = store_scan(st, STORE_CF_LEDGER, prefix, NULL, s_verify_one, &c);
    *n_entries = c.n;
    *first_bad = c.first_bad;
    return rc;
}
