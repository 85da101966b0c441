/* daemon_plan.c: the worker daemon applies a plan at a step boundary: a trainer for the run,
 * the comm of the new generation, and the state to start from. Where that state comes from is
 * decided in s_load_state: kept, rolled back to the snapshot before the last apply, fresh
 * (source INIT), a local checkpoint (source CHECKPOINT, or ours of that step), then agreed with
 * the peers, one of which broadcasts it (source PEER names which). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon_int.h"
#include "log.h"
#include "name.h"

/* A plan that starts right after a checkpoint step: the checkpoint commits only once every
 * cell of the current plan reported its shard, so write it if this worker lacks it (state
 * received from a peer) and report it under the new generation. */
static void s_checkpoint_boundary(daemon_t *d)
{
    const int64_t step = trainer_next_step(d->tr);
    if (step == 0 || !trainer_checkpoint_due(d->tr))
        return;
    char dir[PATH_MAX];
    struct stat st;
    if (trainer_checkpoint_path(d->tr, step, dir, sizeof dir) == SHOAL_OK && stat(dir, &st) == 0) {
        d->ckpt_pending = step; /* already durable: daemon_ckpt_finish just reports it */
        daemon_ckpt_finish(d, 1);
        return;
    }
    if (trainer_checkpoint_async(d->tr) == SHOAL_OK)
        d->ckpt_pending = step;
    else
        log_error("checkpoint of step %lld not started: %s", (long long)step, shoal_errmsg());
}

void daemon_plan_drop_trainer(daemon_t *d)
{
    if (d->tr) {
        daemon_ckpt_finish(d, 1);
        trainer_destroy(&d->tr);
    }
    free(d->tr_spec_yaml);
    d->tr_spec_yaml = NULL;
    d->tr_run[0] = 0;
    d->have_state = 0;
    d->snap_step = -1;
}

/* A trainer for the plan's run (kept across plans of the same run and spec). */
static shoal_err_t s_ensure_trainer(daemon_t *d, const sess_plan_t *p)
{
    if (d->tr && strcmp(d->tr_run, p->run_id) == 0 && d->tr_spec_yaml &&
        strcmp(d->tr_spec_yaml, p->spec_yaml) == 0)
        return SHOAL_OK;
    daemon_plan_drop_trainer(d);
    if (!name_ok(p->run_id))
        return shoal_fail(SHOAL_ERR_INVALID, "run id '%s' is not a safe directory name",
                          p->run_id);
    char origin[128];
    snprintf(origin, sizeof origin, "run %s spec", p->run_id);
    shoal_err_t rc = runspec_load_string(p->spec_yaml, origin, d->spec);
    if (rc != SHOAL_OK)
        return rc;
    rc = statedir_ckpt_root(&d->state, p->run_id, d->spec->checkpoint_dir, d->ckpt_root,
                            sizeof d->ckpt_root);
    if (rc != SHOAL_OK)
        return rc;
    openblas_set_num_threads(d->cfg.threads > 0 ? d->cfg.threads : d->spec->threads);
    if ((rc = trainer_new(d->spec, d->ckpt_root, &d->tr)) != SHOAL_OK)
        return rc;
    d->tr_spec_yaml = strdup(p->spec_yaml);
    if (!d->tr_spec_yaml) {
        trainer_destroy(&d->tr);
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    }
    snprintf(d->tr_run, sizeof d->tr_run, "%s", p->run_id);
    d->have_state = 0;
    d->snap_step = -1;
    log_info("run %s (%s): %d steps of %d x %d tokens, checkpoints in %s", p->run_id,
             p->run_name, d->spec->steps, d->spec->global_batch, d->spec->seq_len, d->ckpt_root);
    return SHOAL_OK;
}

/* Makes the trainer hold the state after start_step - 1 steps: kept, rolled back to the
 * snapshot, fresh (step 0), or loaded from a local checkpoint; then the ranks agree and one
 * holder broadcasts it to the ranks that lack it. */
static shoal_err_t s_load_state(daemon_t *d)
{
    const sess_plan_t *p = d->plan;
    const int64_t want = p->start_step - 1;
    shoal_err_t rc = SHOAL_OK;
    if (want > trainer_total_steps(d->tr))
        return shoal_fail(SHOAL_ERR_INVALID, "plan starts at step %lld of a %lld-step run",
                          (long long)p->start_step, (long long)trainer_total_steps(d->tr));
    if (p->source == SESS_SOURCE_INIT && want != 0)
        return shoal_fail(SHOAL_ERR_INVALID, "fresh initialisation but start_step %lld",
                          (long long)p->start_step);
    int have = d->have_state && trainer_next_step(d->tr) == want;
    if (!have && d->snap_step == want && trainer_state_unpack(d->tr, d->snap, d->snap_len) == SHOAL_OK) {
        log_info("rolled back to the state after step %lld", (long long)want);
        d->have_state = have = 1;
    }
    if (!have && (want == 0 || p->source == SESS_SOURCE_INIT)) {
        trainer_init_fresh(d->tr);
        d->have_state = have = 1;
    }
    if (!have) {
        /* A checkpoint on this worker: the plan's path, else ours of that step. */
        char dir[SESS_TEXT_MAX];
        struct stat st;
        if (p->source == SESS_SOURCE_CHECKPOINT && p->ckpt_path[0] == '/' &&
            stat(p->ckpt_path, &st) == 0)
            snprintf(dir, sizeof dir, "%s", p->ckpt_path);
        else if (trainer_checkpoint_path(d->tr, want, dir, sizeof dir) != SHOAL_OK)
            dir[0] = 0;
        if (dir[0] && stat(dir, &st) == 0) {
            d->have_state = 0;
            if (trainer_load_checkpoint(d->tr, dir) == SHOAL_OK && trainer_next_step(d->tr) == want) {
                log_info("loaded checkpoint %s", dir);
                d->have_state = have = 1;
            } else {
                log_warn("checkpoint %s unusable: %s", dir, shoal_errmsg());
            }
        }
    }
    d->snap_step = -1;
    if (p->nranks == 1) {
        if (!have)
            return shoal_fail(SHOAL_ERR_NOTFOUND, "no state after step %lld here (source %d)",
                              (long long)want, p->source);
        return SHOAL_OK;
    }
    /* Who holds it? One small all-reduce, then at most one broadcast. */
    float *holds = calloc(p->nranks, sizeof(float));
    void *buf = NULL;
    if (!holds)
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    holds[p->rank] = have ? 1.0f : 0.0f;
    session_track_comm(d->sess, d->comm, p->generation, p->start_step);
    rc = comm_allreduce_sum_f32(d->comm, holds, p->nranks, (uint64_t)want);
    if (rc != SHOAL_OK) {
        rc = shoal_fail_context(rc, "agreeing on the state after step %lld", (long long)want);
        goto out;
    }
    int root = -1, missing = 0;
    if (p->source == SESS_SOURCE_PEER && holds[p->source_rank] > 0.5f)
        root = (int)p->source_rank;
    for (uint32_t r = 0; r < p->nranks; r++) {
        if (holds[r] > 0.5f && root < 0)
            root = (int)r;
        missing += holds[r] < 0.5f;
    }
    if (root < 0) {
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no rank holds the state after step %lld",
                        (long long)want);
        goto out;
    }
    if (missing) {
        const size_t n = trainer_state_bytes(d->tr);
        if (!(buf = malloc(n))) {
            rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory for a %zu-byte state", n);
            goto out;
        }
        if (have)
            trainer_state_pack(d->tr, buf);
        log_info("state after step %lld: rank %d sends it to %d rank(s) (%.1f MiB)",
                 (long long)want, root, missing, (double)n / (1 << 20));
        rc = comm_broadcast(d->comm, buf, n, root, (uint64_t)want);
        if (rc != SHOAL_OK) {
            rc = shoal_fail_context(rc, "receiving the state after step %lld", (long long)want);
            goto out;
        }
        if (!have) {
            if ((rc = trainer_state_unpack(d->tr, buf, n)) != SHOAL_OK)
                goto out;
            if (trainer_next_step(d->tr) != want) {
                rc = shoal_fail(SHOAL_ERR_FORMAT, "rank %d sent the state after step %lld, not "
                                "%lld", root, (long long)trainer_next_step(d->tr), (long long)want);
                goto out;
            }
            d->have_state = 1;
        }
    }
out:
    session_track_comm(d->sess, d->comm, p->generation, 0);
    free(buf);
    free(holds);
    return rc;
}

void daemon_plan_switch(daemon_t *d, sess_plan_t *p)
{
    daemon_drop_comm(d);
    /* Not reported under the old generation (the coordinator moved on): the new plan reports
     * the checkpoint of its boundary (s_checkpoint_boundary). */
    daemon_ckpt_finish(d, 0);
    const int same_run = d->plan && strcmp(d->plan->run_id, p->run_id) == 0;
    sess_plan_destroy(&d->plan);
    d->plan = p;
    d->failed = d->draining = 0;
    d->loading = 1;
    d->lease = p->lease;
    d->committed = p->start_step - 1;
    if (!same_run)
        d->paused = 0;
    log_info("plan: run %s generation %llu, rank %u of %u, start step %lld, source %s",
             p->run_id, (unsigned long long)p->generation, p->rank, p->nranks,
             (long long)p->start_step,
             p->source == SESS_SOURCE_INIT ? "init"
             : p->source == SESS_SOURCE_CHECKPOINT ? "checkpoint" : "peer");
    daemon_status(d, SESS_ACT_LOADING, NULL);
    shoal_err_t rc;
    if (p->pp != 1 || p->ep != 1 || p->dp != p->nranks) {
        daemon_fail(d, "this worker trains data-parallel cells only (plan pp %u ep %u)", p->pp, p->ep);
        return;
    }
    if ((rc = s_ensure_trainer(d, p)) != SHOAL_OK) {
        daemon_fail(d, "%s", shoal_errmsg());
        return;
    }
    const comm_config_t cc = {.rank = (int)p->rank,
                              .nranks = (int)p->nranks,
                              .endpoints = (const char *const *)p->endpoints,
                              .generation = p->generation,
                              .timeout_ms = d->cfg.comm_timeout_ms,
                              .chunk_bytes = 0};
    if ((rc = comm_new(d->listener, &cc, &d->comm)) != SHOAL_OK) {
        daemon_fail(d, "comm: %s", shoal_errmsg());
        return;
    }
    rc = s_load_state(d);
    d->loading = 0;
    if (rc == SHOAL_ERR_ABORTED) {
        /* An even newer plan (or a stop) overtook this one while it loaded. */
        daemon_drop_comm(d);
        daemon_pump(d, 0);
        if (d->pending || !d->plan || daemon_stopping(d))
            return;
    }
    if (rc != SHOAL_OK) {
        daemon_fail_as(d, rc == SHOAL_ERR_NOTFOUND ? SESS_ACT_STATE_MISSING : SESS_ACT_FAILED, "%s",
                       shoal_errmsg());
        return;
    }
    s_checkpoint_boundary(d);
    daemon_status(d, SESS_ACT_TRAINING, NULL);
}
