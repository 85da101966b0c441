/* daemon_plan.c: the worker daemon applies a plan at a step boundary: a trainer for the run,
 * the comm of the new generation, and the state to start from. Where that state comes from is
 * decided in s_load_state: kept, rolled back to the snapshot before the last apply, fresh
 * (source INIT), a local checkpoint (source CHECKPOINT, or ours of that step), then agreed with
 * the peers, one of which broadcasts it (source PEER names which). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas_select.h"
#include "ckpt.h"
#include "clock.h"
#include "daemon_int.h"
#include "log.h"
#include "name.h"

/* A plan that starts right after a checkpoint step: the checkpoint commits only once every
 * cell of the current plan reported its shard, so write it if this worker lacks it (state
 * received from a peer) and report it under the new generation. */
/* The plan's CURVE keys on this worker's listener, and the key of the worker handing this cell
 * its state when there is one (it left the plan, so the plan does not list it). */
static shoal_err_t s_admit_plan_keys(daemon_t *d, const sess_plan_t *p)
{
    if (!p->handover_from[0] || !p->handover_from_key[0])
        return comm_listener_peer_keys(d->listener, (const char *const *)p->endpoints,
                                       (const char *const *)p->public_keys, (int)p->nranks);
    const char **eps = calloc(p->nranks + 1, sizeof *eps);
    const char **keys = calloc(p->nranks + 1, sizeof *keys);
    shoal_err_t rc = SHOAL_ERR_NOMEM;
    if (eps && keys) {
        for (uint32_t i = 0; i < p->nranks; i++) {
            eps[i] = p->endpoints[i];
            keys[i] = p->public_keys[i];
        }
        eps[p->nranks] = p->handover_from;
        keys[p->nranks] = p->handover_from_key;
        rc = comm_listener_peer_keys(d->listener, eps, keys, (int)p->nranks + 1);
    } else {
        shoal_fail(rc, "out of memory for the plan's keys");
    }
    free(eps);
    free(keys);
    return rc;
}

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

/* The plan's cell of this worker as the trainer sees it. */
static void s_plan_cell(const sess_plan_t *p, const runspec_t *spec, trainer_cell_t *c)
{
    const int N = spec->model.n_routed_experts;
    *c = (trainer_cell_t){.dp = (int)p->dp,
                          .pp = (int)p->pp,
                          .ep = (int)p->ep,
                          .replica = (int)p->replica,
                          .stage = (int)p->stage,
                          .ep_rank = (int)p->ep_rank};
    c->part = (model_part_t){.first_layer = (int)p->first_layer,
                             .n_layers = (int)p->n_layers,
                             .has_embedding = p->has_embedding,
                             .has_head = p->has_head,
                             .expert_first = (int)p->expert_first,
                             .expert_count = (int)p->expert_count};
    if (p->expert_count == 0 && p->ep > 0) { /* the default split */
        c->part.expert_first = (int)p->ep_rank * (N / (int)p->ep);
        c->part.expert_count = N / (int)p->ep;
    }
}

static int s_same_part(const model_part_t *a, const model_part_t *b)
{
    return a->first_layer == b->first_layer && a->n_layers == b->n_layers &&
           a->has_embedding == b->has_embedding && a->has_head == b->has_head &&
           a->expert_first == b->expert_first && a->expert_count == b->expert_count;
}

/* A trainer for the plan's run and cell. Kept across plans of the same run, spec and cell; a
 * cell that holds the same part under another topology keeps its state (moved into a new
 * trainer); a different part starts without state (loaded next from the checkpoint shards). */
static shoal_err_t s_ensure_trainer(daemon_t *d, const sess_plan_t *p)
{
    trainer_cell_t cell;
    const int same_run = d->tr && strcmp(d->tr_run, p->run_id) == 0 && d->tr_spec_yaml &&
                         strcmp(d->tr_spec_yaml, p->spec_yaml) == 0;
    if (same_run) {
        s_plan_cell(p, d->spec, &cell);
        const trainer_cell_t *old = trainer_cell(d->tr);
        if (memcmp(old, &cell, sizeof cell) == 0)
            return SHOAL_OK;
        void *keep = NULL;
        size_t keep_len = 0;
        if (d->have_state && s_same_part(&old->part, &cell.part) &&
            (keep = malloc(keep_len = trainer_state_bytes(d->tr))))
            trainer_state_pack(d->tr, keep);
        daemon_ckpt_finish(d, 1);
        trainer_destroy(&d->tr);
        d->have_state = 0;
        d->snap_step = -1;
        shoal_err_t rc = trainer_new_cell(d->spec, d->ckpt_root, &cell, &d->tr);
        if (rc == SHOAL_OK && keep && trainer_state_unpack(d->tr, keep, keep_len) == SHOAL_OK)
            d->have_state = 1;
        free(keep);
        if (rc != SHOAL_OK) {
            daemon_plan_drop_trainer(d);
            return rc;
        }
        log_info("cell (replica %d, stage %d, ep rank %d) of dp %d x pp %d x ep %d: layers "
                 "%d-%d, experts %d-%d%s", cell.replica, cell.stage, cell.ep_rank, cell.dp,
                 cell.pp, cell.ep, cell.part.first_layer,
                 cell.part.first_layer + cell.part.n_layers - 1, cell.part.expert_first,
                 cell.part.expert_first + cell.part.expert_count - 1,
                 d->have_state ? " (state kept)" : "");
        return SHOAL_OK;
    }
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
    blas_select_set_threads(d->cfg.threads > 0 ? d->cfg.threads : d->spec->threads);
    s_plan_cell(p, d->spec, &cell);
    if ((rc = trainer_new_cell(d->spec, d->ckpt_root, &cell, &d->tr)) != SHOAL_OK)
        return rc;
    d->tr_spec_yaml = strdup(p->spec_yaml);
    if (!d->tr_spec_yaml) {
        trainer_destroy(&d->tr);
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    }
    snprintf(d->tr_run, sizeof d->tr_run, "%s", p->run_id);
    d->have_state = 0;
    d->snap_step = -1;
    log_info("run %s (%s): %d steps of %d x %d tokens, checkpoints in %s; cell (replica %d, "
             "stage %d, ep rank %d) of dp %d x pp %d x ep %d", p->run_id, p->run_name,
             d->spec->steps, d->spec->global_batch, d->spec->seq_len, d->ckpt_root, cell.replica,
             cell.stage, cell.ep_rank, cell.dp, cell.pp, cell.ep);
    return SHOAL_OK;
}

/* Loads the state after step `want` from checkpoint shards: this worker's own checkpoint of
 * that step, the plan's checkpoint path, and the committed step's shard dirs the plan lists
 * (another plan's cells: resharding), each from this host when there and valid, else copied
 * from a live holder (daemon_replicas_shard_dir). A dir that fails its manifest is skipped. */
static shoal_err_t s_load_checkpoint(daemon_t *d, int64_t want)
{
    const sess_plan_t *p = d->plan;
    const int cap = 2 + (int)p->n_ckpt_shards;
    const char **dirs = calloc((size_t)cap, sizeof *dirs);
    char(*copies)[PATH_MAX] = calloc(p->n_ckpt_shards + 1, sizeof *copies);
    char own[PATH_MAX];
    int n = 0;
    shoal_err_t rc = SHOAL_ERR_NOTFOUND;
    if (!dirs || !copies) {
        free(dirs);
        free(copies);
        return shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
    }
    if (trainer_checkpoint_path(d->tr, want, own, sizeof own) == SHOAL_OK)
        dirs[n++] = own;
    if (p->source == SESS_SOURCE_CHECKPOINT && p->ckpt_path[0] == '/')
        dirs[n++] = p->ckpt_path;
    for (uint32_t i = 0; i < p->n_ckpt_shards; i++)
        dirs[n++] = daemon_replicas_shard_dir(d, i, copies[i], sizeof copies[i]);
    int usable = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        int dup = 0;
        for (int j = 0; j < usable; j++)
            dup |= strcmp(dirs[j], dirs[i]) == 0;
        if (dup || stat(dirs[i], &st) != 0)
            continue;
        if (ckpt_manifest_verify(dirs[i]) != SHOAL_OK) {
            log_warn("checkpoint shard %s unusable: %s", dirs[i], shoal_errmsg());
            continue;
        }
        dirs[usable++] = dirs[i];
    }
    if (usable > 0) {
        rc = trainer_load_checkpoint_dirs(d->tr, dirs, usable);
        if (rc == SHOAL_OK && trainer_next_step(d->tr) != want)
            rc = shoal_fail(SHOAL_ERR_FORMAT, "%s holds the state after step %lld, not %lld",
                            dirs[0], (long long)trainer_next_step(d->tr), (long long)want);
        if (rc == SHOAL_OK)
            log_info("loaded checkpoint %s (the state after step %lld; %d shard dir(s))",
                     dirs[0], (long long)want, usable);
        else
            log_warn("checkpoint of step %lld unusable: %s", (long long)want, shoal_errmsg());
    }
    free(dirs);
    free(copies);
    return rc;
}

/* The ranks agree on who holds the state after `want` (one small all-reduce over the world);
 * within each group of cells holding the same part (all ranks for data parallelism, the dp
 * replicas of a (stage, ep rank) otherwise) one holder broadcasts it to those that lack it. */
static shoal_err_t s_share_state(daemon_t *d, int have, int64_t want)
{
    const sess_plan_t *p = d->plan;
    const trainer_cell_t *c = trainer_cell(d->tr);
    const int split = c->pp > 1 || c->ep > 1;
    comm_t *world = d->comms.g.world, *share = split ? d->comms.g.expert : world;
    if (!world) {
        if (!have)
            return shoal_fail(SHOAL_ERR_NOTFOUND, "no state after step %lld here (source %d)",
                              (long long)want, p->source);
        return SHOAL_OK;
    }
    /* the group's members as plan ranks, in group-rank order */
    const int n_share = split ? c->dp : (int)p->nranks;
    float *holds = calloc(p->nranks, sizeof(float));
    int *member = calloc((size_t)n_share, sizeof(int));
    shoal_err_t rc = SHOAL_OK;
    if (!holds || !member) {
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n_share; i++)
        member[i] = split ? cell_rank(c->pp, c->ep, i, c->stage, c->ep_rank) : i;
    holds[p->rank] = have ? 1.0f : 0.0f;
    session_track_comms(d->sess, &d->comms, p->generation, p->start_step);
    const int64_t t0 = clock_mono_ms();
    rc = comm_allreduce_sum_f32(world, holds, p->nranks, (uint64_t)want);
    if (rc != SHOAL_OK) {
        rc = shoal_fail_context(rc, "agreeing on the state after step %lld", (long long)want);
        goto out;
    }
    int root = -1, missing = 0;
    for (int i = 0; i < n_share; i++) {
        const int r = member[i];
        if (holds[r] > 0.5f && (root < 0 || (p->source == SESS_SOURCE_PEER &&
                                             (uint32_t)r == p->source_rank)))
            root = i;
        missing += holds[r] < 0.5f;
    }
    if (root < 0) {
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "no cell holding layers %d-%d, experts %d-%d has the "
                        "state after step %lld", c->part.first_layer,
                        c->part.first_layer + c->part.n_layers - 1, c->part.expert_first,
                        c->part.expert_first + c->part.expert_count - 1, (long long)want);
        goto out;
    }
    if (missing) {
        const size_t n = trainer_state_bytes(d->tr);
        void *buf = daemon_state_buffer(d);
        if (!buf) {
            rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory for a %zu-byte state", n);
            goto out;
        }
        d->snap_step = -1; /* the buffer carries the shared state now, not a snapshot */
        if (have)
            trainer_state_pack(d->tr, buf);
        const int64_t t1 = clock_mono_ms();
        log_info("state after step %lld: rank %d sends it to %d rank(s) (%.1f MiB; holders "
                 "agreed in %lld ms)", (long long)want, member[root], missing,
                 (double)n / (1 << 20), (long long)(t1 - t0));
        rc = comm_broadcast(share, buf, n, root, (uint64_t)want);
        if (rc != SHOAL_OK) {
            rc = shoal_fail_context(rc, "receiving the state after step %lld", (long long)want);
            goto out;
        }
        if (!have) {
            if ((rc = trainer_state_unpack(d->tr, buf, n)) != SHOAL_OK)
                goto out;
            if (trainer_next_step(d->tr) != want) {
                rc = shoal_fail(SHOAL_ERR_FORMAT, "rank %d sent the state after step %lld, not "
                                "%lld", member[root], (long long)trainer_next_step(d->tr),
                                (long long)want);
                goto out;
            }
            d->have_state = 1;
        }
        log_info("state after step %lld %s in %lld ms", (long long)want,
                 have ? "sent" : "received", (long long)(clock_mono_ms() - t1));
    }
out:
    session_track_comms(d->sess, &d->comms, p->generation, 0);
    free(member);
    free(holds);
    return rc;
}

/* Makes the trainer hold the state after start_step - 1 steps: kept, rolled back to the
 * snapshot, fresh (step 0), or loaded from checkpoint shards on this host; then the ranks agree
 * and, per part, one holder broadcasts it to the cells that lack it. */
static shoal_err_t s_load_state(daemon_t *d)
{
    const sess_plan_t *p = d->plan;
    const int64_t want = p->start_step - 1;
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
        if (trainer_init_fresh(d->tr) != SHOAL_OK)
            return shoal_fail_context(SHOAL_ERR_NOMEM, "initialising the parameters");
        d->have_state = have = 1;
    }
    /* a worker leaving the plan hands this cell its state (nothing recomputed); failing that,
     * the checkpoint of the same step if this host has it, else the share step says missing */
    if (!have && p->handover_from[0]) {
        shoal_err_t rc = daemon_handover_take(d, want);
        if (rc == SHOAL_ERR_ABORTED)
            return rc;
        if (rc == SHOAL_OK)
            d->have_state = have = 1;
        else
            log_warn("hand-over from %s: %s", p->handover_from, shoal_errmsg());
    }
    if (!have && s_load_checkpoint(d, want) == SHOAL_OK)
        d->have_state = have = 1;
    d->snap_step = -1;
    return s_share_state(d, have, want);
}

void daemon_plan_switch(daemon_t *d, sess_plan_t *p)
{
    const int64_t t_start = clock_mono_ms();
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
    /* The plan's keys first: peers that have it dial our listener at once, and their handshakes
     * wait (at most COMM_ADMIT_HOLD_MS) for these keys, not for the trainer's setup below. */
    shoal_err_t rc = s_admit_plan_keys(d, p);
    if (rc != SHOAL_OK) {
        daemon_fail(d, "comm: %s", shoal_errmsg());
        return;
    }
    if ((rc = s_ensure_trainer(d, p)) != SHOAL_OK) {
        daemon_fail(d, "%s", shoal_errmsg());
        return;
    }
    d->comms_gen = p->generation; /* even a failed attempt may have used some of its groups */
    const int64_t t_trainer = clock_mono_ms();
    rc = cell_comms_new(d->listener, trainer_cell(d->tr), (const char *const *)p->endpoints,
                        p->generation, d->cfg.comm_timeout_ms, &d->comms);
    if (rc != SHOAL_OK) {
        daemon_fail(d, "comm: %s", shoal_errmsg());
        return;
    }
    d->have_comms = 1;
    const int64_t t_comms = clock_mono_ms();
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
    /* where a recovery's seconds go (bench_recovery.sh measures the whole) */
    const int64_t t_end = clock_mono_ms();
    log_info("generation %llu ready in %lld ms: keys and trainer %lld ms, comms %lld ms, state "
             "%lld ms", (unsigned long long)p->generation, (long long)(t_end - t_start),
             (long long)(t_trainer - t_start), (long long)(t_comms - t_trainer),
             (long long)(t_end - t_comms));
    s_checkpoint_boundary(d);
    daemon_status(d, SESS_ACT_TRAINING, NULL);
}
