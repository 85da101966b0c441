/* coord_records.c: persistence: worker and run records (one field table per record type drives
 * both save and load), plans, counters (meta), ledger entries, the transaction commit, loading. */
#include "coord_int.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "numparse.h"

store_batch_t *coord_txn(coord_t *c)
{
    if (!c->txn)
        c->txn = store_batch_new(c->st);
    return c->txn;
}

/* ---- records: one field table per record type drives both save and load ------------------ */

typedef enum {
    S_STR,    /* char[size] */
    S_STRP,   /* char * owned by the record (strdup on load) */
    S_I64,    /* int64_t */
    S_U64,    /* uint64_t (stored as a JSON integer) */
    S_U32,    /* uint32_t */
    S_F64,    /* double (stored as a JSON real) */
    S_WSTATE, /* worker_state_t, by name; a record with an unknown name is malformed */
    S_RSTATE, /* run_state_t, by name; likewise */
} s_kind_t;

typedef struct {
    const char *key;
    s_kind_t kind;
    size_t off, size;
} s_field_t;

#define S_FIELD(type, key, kind, member)                                                           \
    {                                                                                              \
        key, kind, offsetof(type, member), sizeof(((type *)0)->member)                             \
    }

/* Key order is the order in the stored JSON. Missing keys load as "" / 0. */
static const s_field_t s_worker_fields[] = {
    S_FIELD(coord_worker_t, "id", S_STR, id),
    S_FIELD(coord_worker_t, "name", S_STR, name),
    S_FIELD(coord_worker_t, "host", S_STR, host),
    S_FIELD(coord_worker_t, "devices", S_STR, devices),
    S_FIELD(coord_worker_t, "memory_bytes", S_U64, memory_bytes),
    S_FIELD(coord_worker_t, "institution", S_STR, institution),
    S_FIELD(coord_worker_t, "version", S_STR, version),
    S_FIELD(coord_worker_t, "data_endpoint", S_STR, endpoint),
    S_FIELD(coord_worker_t, "public_key", S_STR, public_key),
    S_FIELD(coord_worker_t, "shard_endpoint", S_STR, shard_endpoint),
    S_FIELD(coord_worker_t, "state", S_WSTATE, state),
    S_FIELD(coord_worker_t, "run", S_STR, run),
    S_FIELD(coord_worker_t, "registered_ms", S_I64, registered_ms),
    S_FIELD(coord_worker_t, "quarantine", S_STR, quarantine),
    S_FIELD(coord_worker_t, "drain", S_STR, drain),
    {NULL, S_STR, 0, 0},
};

static const s_field_t s_run_fields[] = {
    S_FIELD(coord_run_t, "id", S_STR, id),
    S_FIELD(coord_run_t, "name", S_STR, name),
    S_FIELD(coord_run_t, "spec_yaml", S_STRP, spec_yaml),
    S_FIELD(coord_run_t, "state", S_RSTATE, state),
    S_FIELD(coord_run_t, "total_steps", S_I64, total_steps),
    S_FIELD(coord_run_t, "n_layers", S_U32, n_layers),
    S_FIELD(coord_run_t, "n_experts", S_U32, n_experts),
    S_FIELD(coord_run_t, "generation", S_U64, generation),
    S_FIELD(coord_run_t, "committed_step", S_I64, committed_step),
    S_FIELD(coord_run_t, "lease", S_I64, lease),
    S_FIELD(coord_run_t, "checkpoint_step", S_I64, checkpoint_step),
    S_FIELD(coord_run_t, "checkpoint_path", S_STR, checkpoint_path),
    S_FIELD(coord_run_t, "loss", S_F64, loss),
    S_FIELD(coord_run_t, "submitted_ms", S_I64, submitted_ms),
    S_FIELD(coord_run_t, "reason", S_STR, reason),
    S_FIELD(coord_run_t, "unplaced", S_U32, unplaced),
    {NULL, S_STR, 0, 0},
};

static json_t *s_field_json(const s_field_t *f, const char *p)
{
    switch (f->kind) {
    case S_STR:
        return json_string(p);
    case S_STRP: {
        const char *v = *(char *const *)p;
        return json_string(v ? v : "");
    }
    case S_I64:
        return json_integer((json_int_t) * (const int64_t *)p);
    case S_U64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case S_U32:
        return json_integer((json_int_t) * (const uint32_t *)p);
    case S_F64:
        return json_real(*(const double *)p);
    case S_WSTATE:
        return json_string(coord_worker_state_name(*(const worker_state_t *)p));
    case S_RSTATE:
        return json_string(coord_run_state_name(*(const run_state_t *)p));
    }
    return NULL;
}

/* The JSON of a record (NULL when out of memory). */
static json_t *s_record_json(const s_field_t *fields, const void *rec)
{
    json_t *j = json_object();
    for (const s_field_t *f = fields; j && f->key; f++)
        if (json_object_set_new(j, f->key, s_field_json(f, (const char *)rec + f->off)) != 0) {
            json_decref(j);
            j = NULL;
        }
    return j;
}

/* Fills a zeroed record from its JSON. SHOAL_ERR_INVALID (nothing said: the caller logs) for
 * text that is not a JSON object or a state name that is not one; SHOAL_ERR_NOMEM. */
static shoal_err_t s_record_load(const s_field_t *fields, const char *text, size_t len, void *rec)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    shoal_err_t rc = json_is_object(j) ? SHOAL_OK : SHOAL_ERR_INVALID;
    for (const s_field_t *f = fields; rc == SHOAL_OK && f->key; f++) {
        const json_t *v = json_object_get(j, f->key);
        const char *str = json_string_value(v);
        json_int_t n = json_integer_value(v);
        char *p = (char *)rec + f->off;
        int st;
        switch (f->kind) {
        case S_STR:
            snprintf(p, f->size, "%s", str ? str : "");
            break;
        case S_STRP:
            if (!(*(char **)p = strdup(str ? str : "")))
                rc = SHOAL_ERR_NOMEM;
            break;
        case S_I64:
            *(int64_t *)p = n;
            break;
        case S_U64:
            *(uint64_t *)p = (uint64_t)n;
            break;
        case S_U32:
            *(uint32_t *)p = (uint32_t)n;
            break;
        case S_F64:
            *(double *)p = json_number_value(v);
            break;
        case S_WSTATE:
            if ((st = coord_worker_state_parse(str)) < 0)
                rc = SHOAL_ERR_INVALID;
            else
                *(worker_state_t *)p = (worker_state_t)st;
            break;
        case S_RSTATE:
            if ((st = coord_run_state_parse(str)) < 0)
                rc = SHOAL_ERR_INVALID;
            else
                *(run_state_t *)p = (run_state_t)st;
            break;
        }
    }
    json_decref(j);
    return rc;
}

void coord_put_json(coord_t *c, store_cf_t cf, const char *key, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        store_batch_put(coord_txn(c), cf, key, text, strlen(text));
    else
        log_error("cannot serialise %s/%s: out of memory", store_cf_name(cf), key);
    free(text);
    json_decref(j);
}

void coord_put_worker(coord_t *c, const coord_worker_t *w)
{
    coord_put_json(c, STORE_CF_WORKERS, w->id, s_record_json(s_worker_fields, w));
}

void coord_put_run(coord_t *c, const coord_run_t *r)
{
    coord_put_json(c, STORE_CF_RUNS, r->id, s_record_json(s_run_fields, r));
}

void coord_put_meta(coord_t *c, const char *key, uint64_t value)
{
    char v[32];
    int n = snprintf(v, sizeof v, "%" PRIu64, value);
    store_batch_put(coord_txn(c), STORE_CF_META, key, v, (size_t)n);
}

void coord_put_plan(coord_t *c, const plan_t *p)
{
    char key[PLAN_ID_MAX + 24];
    snprintf(key, sizeof key, "%s/%020" PRIu64, p->run_id, p->generation);
    coord_put_json(c, STORE_CF_PLANS, key, plan_to_json(p));
}

void coord_ledger(coord_t *c, const char *run, const char *kind, json_t *detail)
{
    shoal_err_t rc = ledger_append(c->ledger, coord_txn(c), run && run[0] ? run : LEDGER_CLUSTER,
                                   kind, detail, clock_wall_ms(), NULL);
    if (rc != SHOAL_OK)
        log_error("ledger: %s", shoal_errmsg());
    json_decref(detail);
}

shoal_err_t coord_txn_commit(coord_t *c)
{
    if (c->defer_commit && !c->fail_stopped)
        return SHOAL_OK; /* the burst commits it, answers after (s_drain_socket) */
    shoal_err_t rc = SHOAL_OK;
    if (c->fail_stopped)
        rc = shoal_fail(SHOAL_ERR_DB, "stopping after a failed state write: %s", c->fail_why);
    else if (c->txn && store_batch_count(c->txn) > 0 && (rc = store_commit(c->txn)) == SHOAL_OK)
        c->state_writes++;
    if (rc == SHOAL_OK) {
        if (c->txn)
            ledger_staged_commit(c->ledger);
        store_batch_destroy(&c->txn);
        coord_outbox_flush(c);
        return SHOAL_OK;
    }
    if (!c->fail_stopped) {
        c->fail_stopped = 1;
        snprintf(c->fail_why, sizeof c->fail_why, "%s", shoal_errmsg());
        log_error("state not persisted: %s: stopping now (fail-stop), nothing of it announced; "
                  "a restart resumes from what is on disk",
                  c->fail_why);
    }
    if (c->txn)
        ledger_staged_discard(c->ledger);
    store_batch_destroy(&c->txn);
    coord_outbox_discard(c);
    return shoal_fail(SHOAL_ERR_DB, "state not persisted: %s", c->fail_why);
}

/* ---- loading state ----------------------------------------------------------------------- */

typedef struct {
    coord_t *c;
    shoal_err_t rc;
} s_load_ctx_t;

static void s_free_worker(void *w)
{
    free(w);
}

static void s_free_run(void *r)
{
    coord_run_free(r);
}

/* A new record of `size` bytes decoded from a stored value, or NULL: malformed (logged, skipped)
 * or out of memory (ctx->rc set, the scan stops). */
static void *s_load_record(s_load_ctx_t *ctx, const s_field_t *fields, size_t size,
                           void (*free_fn)(void *), store_cf_t cf, const char *k, size_t kl,
                           const char *v, size_t vl)
{
    void *rec = calloc(1, size);
    shoal_err_t rc = rec ? s_record_load(fields, v, vl, rec) : SHOAL_ERR_NOMEM;
    if (rc == SHOAL_OK)
        return rec;
    if (rc == SHOAL_ERR_INVALID)
        log_error("%s/%.*s: malformed record skipped", store_cf_name(cf), (int)kl, k);
    else
        ctx->rc = shoal_fail(rc, "loading %s", store_cf_name(cf));
    if (rec)
        free_fn(rec);
    return NULL;
}

static int s_load_worker(const char *k, size_t kl, const char *v, size_t vl, void *ctxp)
{
    s_load_ctx_t *ctx = ctxp;
    coord_worker_t *w = s_load_record(ctx, s_worker_fields, sizeof *w, s_free_worker,
                                      STORE_CF_WORKERS, k, kl, v, vl);
    if (!w)
        return ctx->rc != SHOAL_OK;
    /* live workers get a full dead_after period to reconnect to the restarted coordinator */
    w->last_seen_ms = clock_mono_ms();
    w->conn_fd = -1; /* no connection to this process yet */
    if (coord_worker_insert(ctx->c, w) != SHOAL_OK) {
        log_error("workers/%.*s: %s: record skipped", (int)kl, k, shoal_errmsg());
        free(w);
    }
    return 0;
}

static int s_load_run(const char *k, size_t kl, const char *v, size_t vl, void *ctxp)
{
    s_load_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    coord_run_t *r =
        s_load_record(ctx, s_run_fields, sizeof *r, s_free_run, STORE_CF_RUNS, k, kl, v, vl);
    if (!r)
        return ctx->rc != SHOAL_OK;
    if (coord_run_insert(c, r) != SHOAL_OK) {
        ctx->rc = SHOAL_ERR_NOMEM;
        coord_run_free(r);
        return 1;
    }
    if (r->generation > 0) {
        char key[PLAN_ID_MAX + 24], *pv = NULL;
        snprintf(key, sizeof key, "%s/%020" PRIu64, r->id, r->generation);
        json_t *pj = NULL;
        if (store_get(c->st, STORE_CF_PLANS, key, &pv, NULL) != SHOAL_OK ||
            !(pj = json_loads(pv, 0, NULL)) || plan_from_json(pj, &r->plan) != SHOAL_OK)
            log_error("run %s: plan generation %" PRIu64 " unreadable (%s): re-planning", r->id,
                      r->generation, shoal_errmsg());
        coord_run_index_plan(r);
        json_decref(pj);
        free(pv);
    }
    if (coord_run_reset_ranks(r) != SHOAL_OK) {
        ctx->rc = SHOAL_ERR_NOMEM;
        return 1;
    }
    return 0;
}

/* A counter of the meta family (dflt when absent). A malformed one stops the load: guessing
 * could hand out a worker id or a generation twice. */
static shoal_err_t s_meta(coord_t *c, const char *key, uint64_t dflt, uint64_t *out)
{
    char *v = NULL;
    uint64_t n = dflt;
    shoal_err_t rc = SHOAL_OK;
    if (store_get(c->st, STORE_CF_META, key, &v, NULL) == SHOAL_OK &&
        numparse_u64(v, UINT64_MAX, &n) != SHOAL_OK)
        rc = shoal_fail(SHOAL_ERR_FORMAT, "state store: counter %s is not a number ('%.32s')",
                        key, v);
    free(v);
    *out = n > dflt ? n : dflt;
    return rc;
}

shoal_err_t coord_load(coord_t *c)
{
    s_load_ctx_t ctx = {c, SHOAL_OK};
    shoal_err_t rc = store_scan(c->st, STORE_CF_WORKERS, "", NULL, s_load_worker, &ctx);
    if (rc == SHOAL_OK)
        rc = ctx.rc;
    if (rc == SHOAL_OK)
        rc = store_scan(c->st, STORE_CF_RUNS, "", NULL, s_load_run, &ctx);
    if (rc == SHOAL_OK)
        rc = ctx.rc;
    if (rc == SHOAL_OK)
        rc = s_meta(c, "next_run", 1, &c->next_run);
    if (rc == SHOAL_OK)
        rc = s_meta(c, "next_worker", 1, &c->next_worker);
    if (rc == SHOAL_OK)
        rc = s_meta(c, "last_generation", 0, &c->last_generation);
    for (int i = 0; i < c->n_runs; i++)
        if (c->runs[i]->generation > c->last_generation)
            c->last_generation = c->runs[i]->generation;
    return rc;
}
