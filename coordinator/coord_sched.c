/* coord_sched.c: runs over time: the step barrier, the workers eligible for a plan, building and
 * applying plans, the failure back-off, the cron's re-plan checks and the run scheduler. */
#include "coord_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "log.h"
#include "runspec.h"

int64_t coord_run_lease_for(const coord_t *c, const coord_run_t *r)
{
    int64_t l = r->committed_step + c->cfg.step_window;
    return l < r->total_steps ? l : r->total_steps;
}

shoal_err_t coord_run_reset_ranks(coord_run_t *r)
{
    free(r->reported);
    free(r->rank_loss);
    free(r->rank_step);
    r->reported = NULL;
    r->rank_loss = NULL;
    uint32_t n = r->plan.n_peers;
    r->reported = calloc(n + 1, sizeof *r->reported);
    r->rank_loss = calloc(n + 1, sizeof *r->rank_loss);
    r->rank_step = calloc(n + 1, sizeof *r->rank_step);
    if (!r->reported || !r->rank_loss || !r->rank_step)
        return shoal_fail(SHOAL_ERR_NOMEM, "run %s ranks", r->id);
    for (uint32_t i = 0; i < n; i++)
        r->reported[i] = r->committed_step;
    return SHOAL_OK;
}

void coord_run_release_workers(coord_t *c, coord_run_t *r, const char *reason)
{
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (strcmp(w->run, r->id) != 0)
            continue;
        w->run[0] = 0;
        coord_put_worker(c, w);
        if (w->state == WORKER_DRAINING)
            (void)coord_worker_transition(c, w, WORKER_DRAINED, "run %s ended", r->id);
    }
    /* durable first, then announced */
    coord_txn_commit(c);
    coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_STOP, reason);
}

void coord_run_check_done(coord_t *c, coord_run_t *r)
{
    if (r->state != RUN_RUNNING || r->committed_step < r->total_steps ||
        r->checkpoint_step < r->total_steps)
        return;
    (void)coord_run_transition(c, r, RUN_DONE, "step %" PRId64 " and its checkpoint committed",
                               r->committed_step);
    coord_run_release_workers(c, r, "run done");
}

/* The step barrier: the committed step is the smallest step every rank has reported. */
void coord_run_advance(coord_t *c, coord_run_t *r)
{
    if (r->plan.n_peers == 0)
        return;
    int64_t low = INT64_MAX;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (r->reported[i] < low)
            low = r->reported[i];
    if (low <= r->committed_step)
        return;
    r->committed_step = low;
    coord_metrics_on_step_commit(r);
    r->fail_backoff_ms = 0; /* the plan works: the next failure re-plans at once again */
    r->fail_replan_at_ms = 0;
    r->distrust_peers = 0; /* a step committed: the ranks hold what they report again */
    double sum = 0;
    int n = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++)
        if (r->reported[i] == low) {
            sum += r->rank_loss[i];
            n++;
        }
    if (n)
        r->loss = sum / n;
    if (r->state == RUN_RUNNING && !r->replan_pending)
        r->lease = coord_run_lease_for(c, r);
    log_debug("run %s: step %" PRId64 " committed (loss %.4f, lease %" PRId64 ")", r->id,
              r->committed_step, r->loss, r->lease);
    coord_history_put(c, r); /* its row, in the run record's transaction */
    coord_put_run(c, r);
    if (coord_txn_commit(c) != SHOAL_OK)
        return;
    coord_push_step_commit(c, r);
    coord_run_check_done(c, r);
}

typedef struct {
    coord_worker_t **list;
    uint32_t n, cap;
} s_wlist_t;

/* Whether s_eligible lists w among the run's current members (its first part): an active
 * member that still holds the run. O(1) (the plan index); was a scan of the list, O(workers x
 * members) a call at every cron (~60 M compares at 10,000 workers). */
static int s_eligible_member(const coord_run_t *r, const coord_worker_t *w)
{
    return w->state == WORKER_ACTIVE && strcmp(w->run, r->id) == 0 &&
           coord_plan_member(r, w->id) != NULL;
}

/* Workers the run's next plan would hold: current members still active first (rank order,
 * so that ranks stay put), then other active free workers by registration order. */
static shoal_err_t s_eligible(coord_t *c, coord_run_t *r, s_wlist_t *out)
{
    out->cap = (uint32_t)c->n_workers + 1;
    out->n = 0;
    out->list = calloc(out->cap, sizeof *out->list);
    if (!out->list)
        return shoal_fail(SHOAL_ERR_NOMEM, "eligible workers");
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (w && s_eligible_member(r, w))
            out->list[out->n++] = w;
    }
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        if (w->state == WORKER_ACTIVE && (!w->run[0] || strcmp(w->run, r->id) == 0) &&
            !s_eligible_member(r, w))
            out->list[out->n++] = w;
    }
    return SHOAL_OK;
}

/* Generations are unique across runs (each new plan of any run takes the next number), so
 * that a data endpoint, a collective tag or an NCCL id never sees the same generation twice;
 * within a run every new plan is its previous generation + 1 while it holds the cluster. */
static uint64_t s_next_generation(const coord_t *c, const coord_run_t *r)
{
    return (c->last_generation > r->generation ? c->last_generation : r->generation) + 1;
}

/* The committed manifest of `step` of run `r`: every shard's path and cell, into p->ckpt_shards
 * (a plan of another shape reshards from them). A manifest that cannot be read leaves the list
 * empty (logged): the workers then load what ckpt_path holds, as before shards were listed. */
static void s_ckpt_shards(coord_t *c, const coord_run_t *r, int64_t step, plan_t *p)
{
    char key[160], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, step);
    if (store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len) != SHOAL_OK) {
        log_warn("run %s: manifest of checkpoint %" PRId64 " unreadable: %s", r->id, step,
                 shoal_errmsg());
        return;
    }
    json_t *m = json_loadb(val, len, 0, NULL), *shards = json_object_get(m, CTL_F_SHARDS);
    size_t n = json_array_size(shards);
    p->ckpt_shards = n ? calloc(n, sizeof *p->ckpt_shards) : NULL;
    for (size_t i = 0; i < n && p->ckpt_shards; i++) {
        const json_t *sh = json_array_get(shards, i), *cell = json_object_get(sh, CTL_F_CELL);
        const char *path = json_string_value(json_object_get(sh, CTL_F_PATH));
        plan_ckpt_shard_t *k = &p->ckpt_shards[p->n_ckpt_shards];
        if (!path || strlen(path) >= sizeof k->path)
            continue;
        snprintf(k->path, sizeof k->path, "%s", path);
        k->cell = (plan_cell_t){(uint32_t)json_integer_value(json_object_get(cell, CTL_F_REPLICA)),
                                (uint32_t)json_integer_value(json_object_get(cell, CTL_F_STAGE)),
                                (uint32_t)json_integer_value(json_object_get(cell, CTL_F_EP_RANK))};
        p->n_ckpt_shards++;
    }
    json_decref(m);
    free(val);
}

/* A new plan's members by worker id, for the loops that install it: O(1) a lookup where
 * plan_find_worker scans the plan (2 x ~45 ms a re-plan at 2,048 cells, 22 us a scan). When
 * the index cannot be built (out of memory, logged) the lookups scan. */
typedef struct {
    const plan_t *p;
    idmap_t m;
    int ok;
} s_plan_ix_t;

/* Indexes p as it is now: p's peers must not change while the index is used. */
static void s_plan_ix_init(s_plan_ix_t *x, const plan_t *p)
{
    memset(x, 0, sizeof *x);
    x->p = p;
    x->ok = 1;
    for (uint32_t i = 0; i < p->n_peers && x->ok; i++)
        x->ok = idmap_put(&x->m, p->peers[i].worker_id, strlen(p->peers[i].worker_id),
                          &p->peers[i]) == SHOAL_OK;
}

static int s_plan_ix_has(const s_plan_ix_t *x, const char *worker_id)
{
    return x->ok ? idmap_get(&x->m, worker_id, strlen(worker_id)) != NULL
                 : plan_find_worker(x->p, worker_id) != NULL;
}

static void s_plan_ix_fini(s_plan_ix_t *x)
{
    idmap_fini(&x->m);
}

/* Places the run's spec (its parallel.* keys, model and batch) on the eligible workers. */
static shoal_err_t s_place(const coord_run_t *r, uint64_t generation, const s_wlist_t *e,
                           plan_t *p)
{
    runspec_t *spec = malloc(sizeof *spec);
    plan_worker_t *pw = calloc(e->n + 1, sizeof *pw);
    shoal_err_t rc;
    if (!spec || !pw) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "plan");
        goto out;
    }
    if (runspec_load_string(r->spec_yaml, r->name, spec) != SHOAL_OK) {
        rc = shoal_fail_context(SHOAL_ERR_INVALID, "run %s: spec", r->id);
        goto out;
    }
    for (uint32_t i = 0; i < e->n; i++) {
        const coord_worker_t *w = e->list[i];
        pw[i] = (plan_worker_t){.worker_id = w->id,
                                .endpoint = w->endpoint,
                                .host = w->host,
                                .institution = w->institution,
                                .device = w->devices,
                                .memory_bytes = w->memory_bytes};
    }
    const plan_request_t req = {.pp = (uint32_t)spec->pp,
                                .ep = (uint32_t)spec->ep,
                                .dp = (uint32_t)spec->dp,
                                .model = &spec->model,
                                .seq_len = (uint32_t)spec->seq_len,
                                .micro_batch = (uint32_t)spec->micro_batch,
                                .global_batch = (uint32_t)spec->global_batch,
                                .precision = plan_precision_from_name(spec->precision)};
    rc = plan_build(p, r->id, generation, &req, pw, e->n);
out:
    free(pw);
    free(spec);
    return rc;
}

static shoal_err_t s_build_plan(coord_t *c, coord_run_t *r, uint64_t generation,
                                const s_wlist_t *e, plan_t *p, int64_t *committed_out)
{
    shoal_err_t rc = s_place(r, generation, e, p);
    if (rc != SHOAL_OK)
        return rc;
    /* Where the state comes from: survivors (members of the old plan, placed again, still
     * holding their run) go back to their cells; when every part of the model sits on a survivor
     * at the furthest step any survivor reached, peers hand it over; else the checkpoint. */
    plan_survivor_t *sv = calloc(e->n + 1, sizeof *sv);
    uint32_t n_sv = 0;
    int64_t best = -1;
    for (uint32_t i = 0; sv && i < e->n && !r->distrust_peers; i++) {
        const plan_peer_t *old = coord_plan_member(r, e->list[i]->id); /* indexed: O(1) */
        if (!old || !r->reported || strcmp(e->list[i]->run, r->id) != 0)
            continue; /* not a survivor (new, or restarted without its state) */
        sv[n_sv++] = (plan_survivor_t){e->list[i]->id, r->reported[old->rank]};
    }
    /* survivors back on their cells (from the spares too: a joiner the planner sorted first
     * must not take a cell that a survivor holds); one still a spare keeps no cell */
    if (sv)
        plan_keep_holders(p, &r->plan, sv, n_sv);
    s_plan_ix_t ix; /* p's members from here on (its cells do not change below) */
    s_plan_ix_init(&ix, p);
    uint32_t n_placed = 0;
    for (uint32_t i = 0; i < n_sv; i++)
        if (s_plan_ix_has(&ix, sv[i].worker_id)) {
            sv[n_placed++] = sv[i];
            if (sv[i].step > best)
                best = sv[i].step;
        }
    n_sv = n_placed;
    /* Members leaving at this boundary (draining) that still hold their cell hand it over to
     * the worker taking it, so that nothing rolls back (a drain, a preemption's grace). */
    plan_donor_t *dn = calloc(r->plan.n_peers + 1, sizeof *dn);
    uint32_t n_dn = 0;
    for (uint32_t i = 0; dn && i < r->plan.n_peers && r->reported && !r->distrust_peers; i++) {
        const coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!w || w->state != WORKER_DRAINING || strcmp(w->run, r->id) != 0 ||
            s_plan_ix_has(&ix, w->id))
            continue;
        dn[n_dn++] = (plan_donor_t){w->id, w->endpoint, r->reported[i]};
        if (r->reported[i] > best)
            best = r->reported[i];
    }
    uint32_t best_rank = 0;
    shoal_err_t hrc = plan_add_handovers(p, &r->plan, sv, n_sv, dn, n_dn, best);
    const int held = hrc == SHOAL_OK && best > 0 &&
                     plan_parts_held(p, &r->plan, sv, n_sv, best, &best_rank);
    s_plan_ix_fini(&ix);
    free(sv);
    free(dn);
    if (!held || r->generation == 0) {
        free(p->handovers); /* the checkpoint (or init) serves every cell: nothing to hand over */
        p->handovers = NULL;
        p->n_handovers = 0;
    }
    if (held && r->generation > 0) { /* best == 0: nobody trained yet, nothing to copy */
        p->source = PLAN_SOURCE_PEER;
        p->source_rank = best_rank;
        p->start_step = best + 1;
        *committed_out = best;
    } else if (r->checkpoint_step > 0) {
        /* the newest checkpoint whose every shard a live worker holds (checkpoint.replicas) */
        const int64_t ck = coord_replicas_restorable(c, r, p->ckpt_path, sizeof p->ckpt_path);
        p->source = PLAN_SOURCE_CHECKPOINT;
        p->ckpt_step = ck;
        s_ckpt_shards(c, r, ck, p);
        p->start_step = ck + 1;
        *committed_out = ck;
    } else {
        p->source = PLAN_SOURCE_INIT;
        p->start_step = 1;
        *committed_out = 0;
    }
    return SHOAL_OK;
}

shoal_err_t coord_plan_preview(coord_t *c, coord_run_t *r, plan_t *out)
{
    s_wlist_t e;
    memset(out, 0, sizeof *out);
    shoal_err_t rc = s_eligible(c, r, &e);
    if (rc != SHOAL_OK)
        return rc;
    int64_t committed;
    if (e.n == 0)
        rc = shoal_fail(SHOAL_ERR_STATE, "run %s: no active worker to place", r->id);
    else
        rc = s_build_plan(c, r, s_next_generation(c, r), &e, out, &committed);
    free(e.list);
    return rc;
}

/* No plan fits the live workers: a running run is paused, waiting for workers (run_state entry
 * with the note as its reason; workers told PAUSE), and its status `reason` says why (logged
 * once per change). The cron keeps trying; s_resume_placed ends the wait. */
static void s_set_unplaced(coord_t *c, coord_run_t *r, const char *note)
{
    if (r->state == RUN_RUNNING) {
        snprintf(r->reason, sizeof r->reason, "%s", note);
        r->unplaced = 1;
        if (coord_run_transition(c, r, RUN_PAUSED, "%s", note) == SHOAL_OK &&
            coord_txn_commit(c) == SHOAL_OK)
            coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_PAUSE, note);
        return;
    }
    if (strcmp(note, r->reason) == 0)
        return;
    snprintf(r->reason, sizeof r->reason, "%s", note);
    log_warn("run %s: %s", r->id, note);
    coord_put_run(c, r);
    coord_txn_commit(c);
}

/* A run paused for want of workers has a plan (generation gen) again: running, its reason
 * cleared. Returns whether it was waiting (the caller tells its workers RESUME once the plan is
 * durable). */
static int s_resume_placed(coord_t *c, coord_run_t *r, uint64_t gen)
{
    if (!r->unplaced)
        return 0;
    r->unplaced = 0;
    r->reason[0] = 0;
    if (r->state == RUN_PAUSED)
        (void)coord_run_transition(c, r, RUN_RUNNING, "placed: plan generation %" PRIu64, gen);
    return 1;
}

/* Only the spares changed (a worker joined or a spare left, every cell as it was): the plan keeps
 * its generation and nobody restarts; the new spare list is stored. */
static void s_update_spares(coord_t *c, coord_run_t *r, plan_t *p, const char *why)
{
    free(r->plan.spares);
    r->plan.spares = p->spares;
    r->plan.n_spares = p->n_spares;
    coord_run_index_plan(r);
    p->spares = NULL;
    p->n_spares = 0;
    plan_fini(p);
    log_info("run %s: plan generation %" PRIu64 " unchanged, %u spare(s) (%s)", r->id,
             r->generation, r->plan.n_spares, why);
    r->replan_pending = 0;
    const int resumed = s_resume_placed(c, r, r->generation);
    if (r->state == RUN_RUNNING)
        r->lease = coord_run_lease_for(c, r);
    coord_put_plan(c, &r->plan);
    coord_put_run(c, r);
    if (coord_txn_commit(c) != SHOAL_OK)
        return;
    if (resumed)
        coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_RESUME, "placed again");
    coord_push_step_commit(c, r);
}

/* Installs a new plan (generation + 1) for `r` with the eligible workers `e`; those it leaves
 * out are its spares (standby). `members_kept`: no member lost its cell or its state (only joins
 * or drains), so a plan with the same cells only updates the spares. */
static void s_apply_plan(coord_t *c, coord_run_t *r, const s_wlist_t *e, const char *why,
                         int members_kept)
{
    plan_t p = {0};
    int64_t committed = 0;
    shoal_err_t rc = s_build_plan(c, r, s_next_generation(c, r), e, &p, &committed);
    if (rc == SHOAL_ERR_INVALID) {
        /* the spec cannot be placed (a layout the model does not allow): retrying cannot help */
        char why_failed[512];
        snprintf(why_failed, sizeof why_failed, "planning failed: %s", shoal_errmsg());
        log_error("run %s: %s", r->id, why_failed);
        if (coord_run_transition(c, r, RUN_FAILED, "%s", why_failed) == SHOAL_OK)
            coord_run_release_workers(c, r, why_failed);
        coord_txn_commit(c);
        return;
    }
    if (rc == SHOAL_ERR_STATE) {
        /* these workers cannot hold it (too few, too small): wait, saying why */
        char note[sizeof r->reason];
        snprintf(note, sizeof note, "unplaced: %s", shoal_errmsg());
        r->replan_pending = r->generation > 0;
        s_set_unplaced(c, r, note);
        return;
    }
    if (rc != SHOAL_OK) {
        log_error("run %s: planning failed: %s", r->id, shoal_errmsg());
        return;
    }
    if (members_kept && r->generation > 0 && plan_same_cells(&r->plan, &p)) {
        s_update_spares(c, r, &p, why);
        return;
    }
    if (committed < r->committed_step) {
        log_warn("run %s: rolling back from step %" PRId64 " to %s %" PRId64
                 ": no live worker holds a later state (%" PRId64 " steps lost)",
                 r->id, r->committed_step, committed ? "checkpoint" : "the start", committed,
                 r->committed_step - committed);
        coord_ledger(c, r->id, "rollback",
                     json_pack("{s:I, s:I, s:I, s:I, s:s}", "from_step",
                               (json_int_t)r->committed_step, "to_step", (json_int_t)committed,
                               "steps_lost", (json_int_t)(r->committed_step - committed),
                               "generation", (json_int_t)p.generation, "source",
                               plan_source_name(p.source)));
    }
    /* workers leaving the plan (told once the plan is durable) */
    coord_worker_t **leaving = calloc(r->plan.n_peers + 1, sizeof *leaving);
    uint32_t n_leaving = 0;
    s_plan_ix_t ix;
    s_plan_ix_init(&ix, &p);
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!w || s_plan_ix_has(&ix, w->id))
            continue;
        if (strcmp(w->run, r->id) == 0)
            w->run[0] = 0;
        if (coord_worker_is_live(w->state) && leaving)
            leaving[n_leaving++] = w;
        if (w->state == WORKER_DRAINING)
            (void)coord_worker_transition(c, w, WORKER_DRAINED, "left plan of %s at step %" PRId64,
                                          r->id, committed);
        else
            coord_put_worker(c, w);
    }
    s_plan_ix_fini(&ix);
    plan_fini(&r->plan);
    r->plan = p;
    coord_run_index_plan(r);
    r->generation = p.generation;
    c->last_generation = p.generation;
    coord_put_meta(c, "last_generation", c->last_generation);
    r->committed_step = committed;
    r->replan_pending = 0;
    r->replan_now = 0;
    r->reason[0] = 0; /* placed: no "unplaced" note any more (terminal runs never get here) */
    const int resumed = s_resume_placed(c, r, p.generation);
    r->lease = r->state == RUN_RUNNING ? coord_run_lease_for(c, r) : committed;
    if (coord_run_reset_ranks(r) != SHOAL_OK)
        log_error("%s", shoal_errmsg());
    json_t *ids = json_array(), *spares = json_array();
    for (uint32_t i = 0; i < e->n; i++) {
        coord_worker_t *w = e->list[i];
        int placed = coord_plan_member(r, w->id) != NULL; /* r->plan is p, indexed */
        json_array_append_new(placed ? ids : spares, json_string(w->id));
        const char *run = placed ? r->id : ""; /* a spare holds no run: it idles, unassigned */
        if (strcmp(w->run, run) != 0) {
            snprintf(w->run, sizeof w->run, "%s", run);
            coord_put_worker(c, w);
        }
    }
    log_info("run %s: plan generation %" PRIu64 ": dp=%u pp=%u ep=%u, %u spare(s), from step %" PRId64
             " (state from %s) (%s)%s%s",
             r->id, p.generation, p.dp, p.pp, p.ep, p.n_spares, p.start_step,
             plan_source_name(p.source), why, p.note[0] ? ": " : "", p.note);
    coord_put_plan(c, &r->plan);
    coord_put_run(c, r);
    coord_ledger(c, r->id, "plan",
                 json_pack("{s:I, s:i, s:i, s:i, s:I, s:s, s:i, s:o, s:o, s:s, s:s}",
                           "generation", (json_int_t)p.generation, "dp", (int)p.dp, "pp",
                           (int)p.pp, "ep", (int)p.ep, "start_step", (json_int_t)p.start_step,
                           "source", plan_source_name(p.source), "source_rank",
                           (int)p.source_rank, "workers", ids, "spares", spares, "reason", why,
                           "note", p.note));
    if (coord_txn_commit(c) == SHOAL_OK) {
        for (uint32_t i = 0; i < n_leaving; i++)
            coord_push_leave_plan(c, r, leaving[i]); /* with its hand-over, if it gives one */
        coord_push_assignments(c, r, e->list, e->n); /* none to a spare: it has no cell */
        if (resumed) /* a worker's pause outlives plans of its run: end it */
            coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_RESUME, "placed again");
    }
    free(leaving);
}

/* After a re-plan caused by a failure: the next one waits replan_backoff_ms, doubling up to
 * replan_backoff_max_ms (reset when a step commits). */
static void s_failure_backoff(coord_t *c, coord_run_t *r)
{
    int64_t b = r->fail_backoff_ms ? 2 * r->fail_backoff_ms : c->cfg.replan_backoff_ms;
    if (b > c->cfg.replan_backoff_max_ms)
        b = c->cfg.replan_backoff_max_ms;
    r->fail_backoff_ms = b;
    r->fail_replan_at_ms = clock_mono_ms() + b;
    r->fail_backoff_logged = 0;
}

/* A running run that lost its cells and has no active worker to place is paused, unplaced; its
 * status `reason` says why (quarantined workers with their failure) until a plan is made. */
static void s_note_unplaced(coord_t *c, coord_run_t *r)
{
    char note[sizeof r->reason];
    size_t at = (size_t)snprintf(note, sizeof note, "unplaced: no active worker to place");
    int n_q = 0;
    for (int i = 0; i < c->n_workers; i++) {
        const coord_worker_t *w = c->workers[i];
        if (w->state != WORKER_QUARANTINED)
            continue;
        at += (size_t)snprintf(note + at, at < sizeof note ? sizeof note - at : 0, "%s%s %s",
                               n_q++ ? "; " : " (", w->id, w->quarantine);
    }
    if (n_q)
        (void)snprintf(note + at, at < sizeof note ? sizeof note - at : 0,
                       "; shoalctl undrain places a worker again)");
    s_set_unplaced(c, r, note);
}

/* Membership check of a running run: a lost member re-plans now (the collectives of the old
 * plan cannot complete); joins and drains re-plan at the boundary (the frozen lease). */
void coord_run_replan_check(coord_t *c, coord_run_t *r)
{
    if (r->state != RUN_RUNNING && !(r->state == RUN_PAUSED && r->unplaced))
        return; /* an operator's pause holds until resume */
    s_wlist_t e;
    if (s_eligible(c, r, &e) != SHOAL_OK)
        return;
    char why[256] = "";
    size_t at = 0;
    int lost = 0, changed = 0;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *w = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!w || w->state == WORKER_DEAD || w->state == WORKER_LEFT ||
            strcmp(w->run, r->id) != 0) {
            lost = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s %s",
                                   at ? ", " : "", r->plan.peers[i].worker_id,
                                   w ? coord_worker_state_name(w->state) : "gone");
        } else if (!s_eligible_member(r, w)) { /* in e's first part iff so */
            changed = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s %s",
                                   at ? ", " : "", w->id, coord_worker_state_name(w->state));
        }
    }
    /* a hand-over giver (out of the plan, so not a member) dead while its taker still loads:
     * the state will never come, and the taker would wait out its comm timeout; the new plan
     * aborts its wait (worker/daemon_handover.c) */
    for (uint32_t i = 0; i < r->plan.n_handovers && r->committed_step < r->plan.start_step; i++) {
        const plan_handover_t *h = &r->plan.handovers[i];
        coord_worker_t *g = coord_worker_by_id(c, h->from_worker);
        coord_worker_t *t = h->to_rank < r->plan.n_peers
                                ? coord_worker_by_id(c, r->plan.peers[h->to_rank].worker_id)
                                : NULL;
        if ((!g || g->state == WORKER_DEAD) && t &&
            t->activity == SHOAL__WORKER_ACTIVITY__ACTIVITY_LOADING) {
            lost = 1;
            r->distrust_peers = 1; /* the taker reports the boundary step but never got it */
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0,
                                   "%s%s dead while handing its cell to %s", at ? ", " : "",
                                   h->from_worker, t->id);
        }
    }
    for (uint32_t i = 0; i < e.n; i++)
        if (!coord_plan_member(r, e.list[i]->id) && !coord_plan_is_spare(r, e.list[i]->id)) {
            changed = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0, "%s%s joins",
                                   at ? ", " : "", e.list[i]->id);
        }
    /* a reported failure re-plans at once the first time, then after a back-off that doubles
     * with every further failure re-plan until a step commits: a worker that fails every plan
     * cannot flood the ledger with generations (a lost member still re-plans at once) */
    const int by_failure = r->replan_now && r->generation > 0;
    if (by_failure) {
        int64_t now = clock_mono_ms();
        if (lost || now >= r->fail_replan_at_ms) {
            lost = 1;
            at += (size_t)snprintf(why + at, at < sizeof why ? sizeof why - at : 0,
                                   "%sworker failure", at ? ", " : "");
        } else if (!r->fail_backoff_logged) {
            r->fail_backoff_logged = 1;
            log_info("run %s: plan failed again: next plan in %.1f s (back-off %.1f s)", r->id,
                     (double)(r->fail_replan_at_ms - now) / 1000.0,
                     (double)r->fail_backoff_ms / 1000.0);
        }
    }
    if (r->generation > 0 && !lost && !changed && r->replan_pending) {
        /* the change undid itself (a joiner died before the boundary): unfreeze the lease */
        r->replan_pending = 0;
        r->lease = coord_run_lease_for(c, r);
        coord_put_run(c, r);
        coord_txn_commit(c);
        coord_push_step_commit(c, r);
    }
    if (r->generation == 0) {
        if (e.n >= (uint32_t)c->cfg.min_workers)
            s_apply_plan(c, r, &e, why[0] ? why : "first plan", 0);
    } else if (lost || changed) {
        int at_end = r->committed_step >= r->total_steps;
        if (e.n == 0) {
            /* nobody to place: wait for workers; the lease stays frozen */
            r->replan_pending = 1;
            if (lost)
                s_note_unplaced(c, r);
        } else if (lost) {
            const uint64_t gen = r->generation;
            s_apply_plan(c, r, &e, why, 0);
            if (by_failure && r->generation != gen)
                s_failure_backoff(c, r);
        } else if (!at_end) {
            if (!r->replan_pending)
                log_info("run %s: membership changed (%s): new plan after step %" PRId64, r->id,
                         why, r->lease);
            r->replan_pending = 1;
            if (r->committed_step >= r->lease)
                s_apply_plan(c, r, &e, why, 1);
        }
    }
    free(e.list);
}

int coord_worker_is_standby(const coord_t *c, const coord_worker_t *w)
{
    if (w->state != WORKER_ACTIVE || w->run[0])
        return 0;
    for (int i = 0; i < c->n_runs; i++) {
        const coord_run_t *r = c->runs[i];
        if ((r->state == RUN_RUNNING || r->state == RUN_PAUSED) && coord_plan_is_spare(r, w->id))
            return 1;
    }
    return 0;
}

/* Starts the oldest pending run when no run holds the cluster. */
void coord_schedule(coord_t *c)
{
    for (int i = 0; i < c->n_runs; i++)
        if (c->runs[i]->state == RUN_RUNNING || c->runs[i]->state == RUN_PAUSED)
            return;
    for (int i = 0; i < c->n_runs; i++) {
        coord_run_t *r = c->runs[i];
        if (r->state != RUN_PENDING)
            continue;
        int n = 0;
        for (int k = 0; k < c->n_workers; k++)
            n += c->workers[k]->state == WORKER_ACTIVE && !c->workers[k]->run[0];
        if (n < c->cfg.min_workers)
            return;
        if (coord_run_transition(c, r, RUN_RUNNING, "%d active workers", n) == SHOAL_OK)
            coord_txn_commit(c);
        return;
    }
}
