/* coord_history.c: the per-step history of a run. Every committed step gets one small row in the
 * store's "history" family, key "<run>/<step %020>", staged in the same transaction as the run
 * record that commits the step: a row is on disk exactly when its step is, and a restarted
 * coordinator keeps them. Rows are read back page by page (MSG_CTL_HISTORY, shoalctl history,
 * plot, release).
 *
 * A row: step, time_ms (wall clock of the commit), loss (the mean over the ranks that reported
 * exactly that step, as the run record's), tokens (the step's tokens for the whole run),
 * step_seconds (the slowest rank's), tokens_per_s (tokens / step_seconds), grad_norm (the
 * largest a rank reported), generation (of the plan that trained it) and ranks (how many ranks
 * had reported exactly that step).
 *
 * Tokens: every rank reports the whole step's tokens (global_batch x seq_len: worker/trainer.c),
 * not its replica's share, so the run's figure is that value once, never a sum over replicas
 * (a sum would count the batch dp times). A rank's figures are those of its newest StepReport;
 * a rank already ahead of the committed step contributes its newest (the step window lets it
 * run ahead by a few steps, whose figures differ little).
 *
 * When committed_step jumps several steps at once (reports that came only as heartbeats, or a
 * burst), one row is written, for the committed step: steps in between have no row. A rollback
 * re-commits its steps: their rows are replaced by the newer ones. */
#include "coord_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define S_PAGE_DEFAULT 1000u
#define S_PAGE_MAX 5000u

static void s_key(char *buf, size_t cap, const char *run, int64_t step)
{
    snprintf(buf, cap, "%s/%020" PRId64, run, step);
}

void coord_history_note(coord_run_t *r, int rank, const Shoal__StepReport *sr)
{
    if (!r->rank_step || rank < 0 || (uint32_t)rank >= r->plan.n_peers)
        return;
    coord_rank_step_t *k = &r->rank_step[rank];
    k->step = sr->step;
    /* the wire floats were checked finite by the caller's s_finite for loss and time only */
    k->tokens = (double)sr->tokens;
    k->seconds = isfinite(sr->duration_s) && sr->duration_s > 0 ? sr->duration_s : 0;
    k->grad_norm = isfinite(sr->grad_norm) ? sr->grad_norm : 0;
}

void coord_history_put(coord_t *c, coord_run_t *r)
{
    const int64_t step = r->committed_step;
    double tokens = 0, seconds = 0, gnorm = 0;
    int at_step = 0;
    for (uint32_t i = 0; r->rank_step && i < r->plan.n_peers; i++) {
        const coord_rank_step_t *k = &r->rank_step[i];
        if (k->step < 1)
            continue; /* no StepReport under this plan yet (heartbeats only) */
        at_step += k->step == step;
        tokens = k->tokens > tokens ? k->tokens : tokens;
        seconds = k->seconds > seconds ? k->seconds : seconds;
        gnorm = k->grad_norm > gnorm ? k->grad_norm : gnorm;
    }
    r->tokens_per_s = seconds > 0 ? tokens / seconds : 0;
    r->tokens_per_s_known = 1;
    char key[COORD_ID_MAX + 24];
    s_key(key, sizeof key, r->id, step);
    coord_put_json(c, STORE_CF_HISTORY, key,
                   json_pack("{s:I, s:I, s:f, s:I, s:f, s:f, s:f, s:I, s:i}", "step",
                             (json_int_t)step, "time_ms", (json_int_t)clock_wall_ms(), "loss",
                             isfinite(r->loss) ? r->loss : 0.0, "tokens", (json_int_t)tokens,
                             "step_seconds", seconds, "tokens_per_s", r->tokens_per_s,
                             "grad_norm", gnorm, "generation", (json_int_t)r->generation,
                             "ranks", at_step));
}

typedef struct {
    json_t *out;
    unsigned left;
    int64_t last;
    shoal_err_t rc;
} s_list_ctx_t;

static int s_list_one(const char *key, size_t klen, const char *val, size_t vlen, void *ctxp)
{
    s_list_ctx_t *ctx = ctxp;
    json_t *row = json_loadb(val, vlen, 0, NULL);
    if (!json_is_object(row)) {
        /* a row this process wrote is never malformed: say so, skip it */
        log_error("history/%.*s: malformed row skipped", (int)klen, key);
        json_decref(row);
        return 0;
    }
    ctx->last = (int64_t)json_integer_value(json_object_get(row, "step"));
    if (json_array_append_new(ctx->out, row) != 0) {
        ctx->rc = shoal_fail(SHOAL_ERR_NOMEM, "history: out of memory");
        return 1;
    }
    return --ctx->left == 0;
}

shoal_err_t coord_history_list(store_t *st, const char *run, int64_t after, unsigned limit,
                               json_t *out, int64_t *next)
{
    char prefix[COORD_ID_MAX + 2], start[COORD_ID_MAX + 24];
    snprintf(prefix, sizeof prefix, "%s/", run);
    s_key(start, sizeof start, run, after < 0 ? 0 : after + 1);
    const unsigned page = limit == 0 ? S_PAGE_DEFAULT : limit > S_PAGE_MAX ? S_PAGE_MAX : limit;
    s_list_ctx_t ctx = {out, page, after, SHOAL_OK};
    *next = 0;
    shoal_err_t rc = store_scan(st, STORE_CF_HISTORY, prefix, start, s_list_one, &ctx);
    if (rc == SHOAL_OK)
        rc = ctx.rc;
    if (rc == SHOAL_OK && ctx.left == 0)
        *next = ctx.last; /* a full page: there may be more */
    return rc;
}

double coord_history_tokens_per_s(coord_t *c, coord_run_t *r)
{
    if (r->tokens_per_s_known)
        return r->tokens_per_s;
    /* after a load: the newest row's figure, read once */
    r->tokens_per_s_known = 1;
    char prefix[COORD_ID_MAX + 2], *key = NULL, *val = NULL;
    snprintf(prefix, sizeof prefix, "%s/", r->id);
    if (store_last(c->st, STORE_CF_HISTORY, prefix, &key, &val) == SHOAL_OK) {
        json_t *row = json_loads(val, 0, NULL);
        r->tokens_per_s = json_number_value(json_object_get(row, "tokens_per_s"));
        json_decref(row);
    }
    free(key);
    free(val);
    return r->tokens_per_s;
}
