/* coord_worker.c: the worker protocol: a table of the messages accepted on the worker socket,
 * each with its handler (register, heartbeat, step report, leave, assignment, comm id), and the
 * plan-failure streaks that quarantine a worker. */
#include "coord_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "name.h"

void coord_worker_heard(coord_t *c, coord_worker_t *w, const wire_route_t *route)
{
    w->last_seen_ms = clock_mono_ms();
    /* behind a host relay many workers share a connection: the slot frame tells a relayed
     * worker's old connection to the relay from its new one */
    const int same_conn = route->fd >= 0 && route->fd == w->conn_fd &&
                          (route->n < 2 || !w->has_route || wire_route_same(route, &w->route));
    w->route = *route;
    w->has_route = 1;
    if (w->conn_lost_ms && same_conn)
        return; /* sent before its connection closed: the worker is still gone */
    coord_worker_set_conn(c, w, route->fd);
    w->conn_lost_ms = 0;
}

static void s_reply_register(coord_t *c, const wire_route_t *route, const char *id, int ok,
                             const char *reason)
{
    Shoal__RegisterReply rep = SHOAL__REGISTER_REPLY__INIT;
    rep.accepted = ok;
    rep.worker_id = (char *)id;
    rep.reason = (char *)reason;
    rep.heartbeat_interval_ms = (uint32_t)c->cfg.heartbeat_interval_ms;
    rep.dead_after_ms = (uint32_t)c->cfg.dead_after_ms;
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_REGISTER_REPLY, "", COORD_SENDER, 0, 0);
    env.body_case = SHOAL__ENVELOPE__BODY_REG_REPLY;
    env.reg_reply = &rep;
    coord_send(c, c->wsock, route, &env);
}

static void s_on_register(coord_t *c, const wire_route_t *route, coord_worker_t *unused_w,
                          coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_w;
    (void)unused_r;
    const Shoal__Register *rg = env->reg;
    if (!name_ok(rg->name)) {
        log_warn("register refused: worker name '%.64s' is not " NAME_RULE, rg->name);
        s_reply_register(c, route, "", 0, "worker name must be " NAME_RULE ", 1-64 bytes");
        return;
    }
    if (name_has_id_form(rg->name)) {
        log_warn("register refused: worker name '%s' has the form of a worker id", rg->name);
        s_reply_register(c, route, "", 0, NAME_ID_FORM_RULE ": choose another --name");
        return;
    }
    coord_worker_t *w = NULL;
    if (rg->prev_id_case_case == SHOAL__REGISTER__PREV_ID_CASE_PREV_ID) {
        w = coord_worker_by_id(c, rg->prev_id);
        if (w && strcmp(w->name, rg->name) != 0)
            w = NULL;
    }
    if (!w)
        w = coord_worker_by_name(c, rg->name); /* O(1): a scan of every worker before */
    int is_new = !w;
    if (is_new) {
        w = calloc(1, sizeof *w);
        if (w) {
            snprintf(w->id, sizeof w->id, "w%" PRIu64, c->next_worker);
            snprintf(w->name, sizeof w->name, "%s", rg->name); /* the index's key */
            w->conn_fd = -1; /* in no c->by_fd list yet */
        }
        if (!w || coord_worker_insert(c, w) != SHOAL_OK) {
            free(w);
            log_error("register %s: %s", rg->name, shoal_errmsg());
            s_reply_register(c, route, "", 0, "coordinator out of memory");
            return;
        }
        c->next_worker++;
        w->state = WORKER_JOINING;
        w->registered_ms = clock_wall_ms();
        coord_put_meta(c, "next_worker", c->next_worker);
    }
    snprintf(w->host, sizeof w->host, "%s", rg->host);
    snprintf(w->institution, sizeof w->institution, "%s", rg->institution);
    /* with CURVE the connection's key says who this is: its institution is the allow-list's */
    const zsec_entry_t *listed = zsec_allow_find(&c->allow, route->user);
    if (listed) {
        if (rg->institution[0] && strcmp(rg->institution, listed->name) != 0)
            log_warn("worker %s: claims institution '%s', its key is listed under '%s'", rg->name,
                     rg->institution, listed->name);
        snprintf(w->institution, sizeof w->institution, "%s", listed->name);
    }
    snprintf(w->public_key, sizeof w->public_key, "%s", listed ? listed->key : "");
    snprintf(w->version, sizeof w->version, "%s", rg->version);
    snprintf(w->endpoint, sizeof w->endpoint, "%s", rg->data_endpoint);
    snprintf(w->shard_endpoint, sizeof w->shard_endpoint, "%s", rg->shard_endpoint);
    size_t at = 0;
    w->devices[0] = 0;
    for (size_t i = 0; i < rg->n_devices && at < sizeof w->devices; i++)
        at += (size_t)snprintf(w->devices + at, sizeof w->devices - at, "%s%s", i ? "," : "",
                               rg->devices[i]);
    w->memory_bytes = rg->memory_bytes;
    coord_worker_heard(c, w, route);
    if (is_new) {
        log_info("worker %s: registered as joining (name %s, host %s, %s, device %s)", w->id,
                 w->name, w->host, w->institution[0] ? w->institution : "no institution",
                 w->devices[0] ? w->devices : "none declared");
        coord_ledger(c, "", "worker_register",
                     json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "worker", w->id, "name", w->name,
                               "host", w->host, "institution", w->institution, "version",
                               w->version, "devices", w->devices));
        coord_put_worker(c, w);
    } else {
        /* a worker registers again only when its process restarted (or the coordinator forgot
         * it): dead, departed or live, whatever cell it held lost its state, so it is no
         * survivor of its run any more and the run re-plans (the cron sees a lost member) */
        if (w->run[0]) {
            log_info("worker %s: registered again while in %s: its cell is lost", w->id, w->run);
            coord_ledger(c, w->run, "worker_restart",
                         json_pack("{s:s, s:s}", "worker", w->id, "name", w->name));
            w->run[0] = 0;
        } else {
            log_info("worker %s: registered again (%s, state %s)", w->id, w->name,
                     coord_worker_state_name(w->state));
        }
        /* nor does it hold what was sent to it before: a restarted process has no peer table,
         * so a plan delta on that generation would be refused and pulled again in full */
        w->sent_gen = 0;
        w->sent_ms = 0;
        w->pull_delta_gen = 0;
        if (w->state == WORKER_DEAD || w->state == WORKER_LEFT)
            (void)coord_worker_transition(c, w, WORKER_JOINING, "registered again from %s",
                                          w->host);
        else
            coord_put_worker(c, w);
    }
    coord_txn_commit(c);
    s_reply_register(c, route, w->id, 1, "");
}

/* Run and generation check of a worker message: the message's run must be the worker's run
 * and its generation the run's current one; otherwise it is dropped, logged and answered with
 * an Error. Returns the run, or NULL when dropped. */
coord_run_t *coord_check_run(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                             const Shoal__Envelope *env)
{
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    const char *what = wire_type_name((int)env->type);
    if (!r || strcmp(env->run_id, r->id) != 0) {
        c->dropped++;
        /* a worker taken out of a plan sends under it until the news reaches it: like stale
         * generations, a line per 1,000 (a 10,000-worker re-plan made 5,700 lines) */
        if (c->wrong_run_dropped++ % 1000 == 0)
            log_warn("dropped %s from %s: run '%.64s' is not its run '%s' (%llu such drops so far)",
                     what, w->id, env->run_id, r ? r->id : "", c->wrong_run_dropped);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_WRONG_RUN, env, r,
                          "run '%.64s' is not your run '%s'", env->run_id, r ? r->id : "");
        return NULL;
    }
    if (env->generation != r->generation) {
        c->dropped++;
        /* messages in flight across a re-plan: normal, and at 2,048 members ~2,000-4,000 a
         * second while a plan is new; a line per 1,000 (bench_coord_load wrote 240,000) */
        if (c->stale_dropped++ % 1000 == 0)
            log_warn("dropped %s from %s: generation %" PRIu64
                     " of run %s is not the current %" PRIu64 " (%llu such drops so far)",
                     what, w->id, env->generation, r->id, r->generation, c->stale_dropped);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_STALE_GENERATION, env, r,
                          "generation %" PRIu64 " is not run %s's current generation %" PRIu64,
                          env->generation, r->id, r->generation);
        return NULL;
    }
    return r;
}

/* Numbers from workers enter the state (and its JSON) only when finite: JSON has no NaN. */
static double s_finite(double x, const coord_worker_t *w, const char *what)
{
    if (isfinite(x))
        return x;
    log_warn("worker %s reports a non-finite %s: stored as 0", w->id, what);
    return 0.0;
}

int coord_rank_of(const coord_run_t *r, const coord_worker_t *w)
{
    const plan_peer_t *p = coord_plan_member(r, w->id);
    return p ? (int)p->rank : -1;
}

void coord_worker_clear_failures(coord_worker_t *w)
{
    w->fail_count = 0;
    w->fail_gen = 0;
    w->fail_run[0] = 0;
}

/* A member of r's plan other than w that has been silent for a while (or is gone): a collective
 * failing then is most likely that peer's doing, not the reporter's. */
const coord_worker_t *s_silent_peer(coord_t *c, const coord_run_t *r, const coord_worker_t *w)
{
    int64_t quiet = 3 * (int64_t)c->cfg.heartbeat_interval_ms;
    if (quiet < 1000)
        quiet = 1000;
    int64_t now = clock_mono_ms();
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        const coord_worker_t *p = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (!p || p == w) /* !p: ids are never removed; nothing to blame */
            continue;
        if (!coord_worker_is_live(p->state) || now - p->last_seen_ms > quiet)
            return p;
    }
    return NULL;
}

void coord_worker_quarantine(coord_t *c, coord_worker_t *w, const char *cause,
                             const char *detail)
{
    if (w->state == WORKER_QUARANTINED || !coord_worker_is_live(w->state))
        return;
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    char why[160]; /* "quarantined: " + why fits w->quarantine */
    snprintf(why, sizeof why, "%s", detail[0] ? detail : "no detail");
    int failures = w->fail_count;
    if (coord_worker_transition(c, w, WORKER_QUARANTINED, "quarantined: %s", why) != SHOAL_OK) {
        log_error("%s", shoal_errmsg());
        return;
    }
    snprintf(w->quarantine, sizeof w->quarantine, "quarantined: %s", why);
    c->quarantines++;
    log_warn("worker %s quarantined (%s: %s); `shoalctl undrain %s` places it again", w->id, cause,
             why, w->id);
    coord_ledger(c, r ? r->id : "", "quarantine",
                 json_pack("{s:s, s:s, s:I, s:i, s:s, s:s}", "worker", w->id, "name", w->name,
                           "generation", (json_int_t)(r ? r->generation : 0), "failures", failures,
                           "cause", cause, "detail", why));
    w->run[0] = 0;
    w->strikes = 0;
    coord_worker_clear_failures(w);
    coord_put_worker(c, w);
    if (coord_txn_commit(c) == SHOAL_OK && r)
        coord_push_run_control_to(c, r, w, SHOAL__RUN_COMMAND__RUN_CMD_STOP, w->quarantine);
}

/* A member reports (in a heartbeat of the current generation) that its plan failed: the run
 * re-plans, and the failure counts against the worker once per generation unless a peer of
 * the plan is silent (then the peer is the likely cause). quarantine_after_failures in a row
 * without a step in between quarantine it. */
static void s_on_plan_failed(coord_t *c, coord_run_t *r, coord_worker_t *w, const char *detail,
                             int state_missing)
{
    if (!r->replan_now) {
        log_warn("run %s: worker %s reports its plan failed (%.200s): re-planning", r->id, w->id,
                 detail[0] ? detail : "no detail");
        r->replan_now = 1;
    }
    if (state_missing) {
        /* the coordinator's own plan named a state no rank holds: its belief about the
         * survivors was wrong, not the worker; the next plan loads the newest checkpoint */
        if (!r->distrust_peers)
            log_warn("run %s: no rank holds the state plan generation %" PRIu64
                     " named: not counted against %s; the next plan loads the newest checkpoint",
                     r->id, r->generation, w->id);
        r->distrust_peers = 1;
        return;
    }
    if (strcmp(w->fail_run, r->id) != 0) {
        coord_worker_clear_failures(w);
        snprintf(w->fail_run, sizeof w->fail_run, "%s", r->id);
    }
    if (w->fail_gen == r->generation)
        return; /* this plan's failure is already counted */
    w->fail_gen = r->generation;
    const coord_worker_t *silent = s_silent_peer(c, r, w);
    if (silent) {
        log_info("run %s: failure of %s in generation %" PRIu64 " not counted against it: "
                 "peer %s is silent",
                 r->id, w->id, r->generation, silent->id);
        return;
    }
    w->fail_count++;
    int limit = c->cfg.quarantine_after_failures;
    log_warn("run %s: worker %s: plan failure %d%s in a row (generation %" PRIu64 ")", r->id, w->id,
             w->fail_count, limit > 0 ? "" : " (quarantine off)", r->generation);
    if (limit > 0 && w->fail_count >= limit)
        coord_worker_quarantine(c, w, "plan failures", detail);
}

/* A heartbeat proves the worker alive whatever run and generation it names: liveness and the
 * joining -> active transition apply first, always. Its step, loss and activity concern its
 * plan and are applied only when run and generation are current; a stale one is dropped and
 * answered with an Error (the worker then fetches its assignment). */
static void s_on_heartbeat(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                           coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_r;
    const Shoal__Heartbeat *hb = env->heartbeat;
    w->last_hb_ms = clock_wall_ms();
    w->tokens_per_s = s_finite(hb->tokens_per_s, w, "tokens/s");
    w->activity = hb->activity;
    if (w->state == WORKER_JOINING) {
        if (coord_worker_held(w))
            (void)coord_worker_transition(c, w, w->quarantine[0] ? WORKER_QUARANTINED
                                                                 : WORKER_DRAINED,
                                          "first heartbeat; %s still holds",
                                          w->quarantine[0] ? w->quarantine : w->drain);
        else
            (void)coord_worker_transition(c, w, WORKER_ACTIVE, "first heartbeat");
        coord_txn_commit(c);
    }
    coord_run_t *mine = w->run[0] ? coord_find_run(c, w->run) : NULL;
    if (mine && strcmp(env->run_id, mine->id) == 0 && env->generation < mine->generation &&
        coord_assignment_in_flight(c, mine, w)) {
        /* sent before the worker got its new assignment, which is on its way: its liveness
         * counts, its step (of the old plan) does not, and no pull is asked for */
        coord_reply_ack(c, route, env, w, mine);
        return;
    }
    if (env->run_id[0]) {
        coord_run_t *ok = coord_check_run(c, route, w, env);
        if (!ok)
            return;
        int rank = coord_rank_of(ok, w);
        const int state_missing = hb->activity == SHOAL__WORKER_ACTIVITY__ACTIVITY_STATE_MISSING;
        const int failed = hb->activity == SHOAL__WORKER_ACTIVITY__ACTIVITY_FAILED || state_missing;
        if (rank >= 0 && hb->step > ok->reported[rank] && hb->step <= ok->lease) {
            ok->reported[rank] = hb->step;
            ok->rank_loss[rank] = s_finite(hb->loss, w, "loss");
            if (!failed)
                coord_worker_clear_failures(w); /* it completed a step under this plan */
            coord_run_advance(c, ok);
        }
        if (rank >= 0 && failed)
            s_on_plan_failed(c, ok, w, hb->detail, state_missing);
        for (size_t i = 0; rank >= 0 && i < hb->n_bad_frames; i++)
            coord_guard_peer_frames(c, ok, w, hb->bad_frames[i]->public_key,
                                    hb->bad_frames[i]->frames, hb->bad_frames[i]->why);
    }
    w->step = hb->step;
    w->loss = s_finite(hb->loss, w, "loss");
    /* after a quarantine the worker holds no run any more: the Ack says DRAIN */
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    coord_reply_ack(c, route, env, w, r);
}

static void s_on_step_report(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                             coord_run_t *r, const Shoal__Envelope *env)
{
    const Shoal__StepReport *sr = env->step_report;
    int rank = coord_rank_of(r, w);
    if (rank < 0 || sr->step < 1 || sr->step > r->lease) {
        c->dropped++;
        log_warn("dropped step_report from %s: step %" PRId64 " outside run %s's lease %" PRId64,
                 w->id, sr->step, r->id, r->lease);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, r,
                          "step %" PRId64 " is outside the lease %" PRId64, sr->step, r->lease);
        coord_guard_strike(c, w, rank < 0 ? "step_report from outside the plan"
                                          : "step_report outside the lease");
        return;
    }
    if (sr->step > r->reported[rank]) {
        r->reported[rank] = sr->step;
        r->rank_loss[rank] = s_finite(sr->loss, w, "loss");
        coord_history_note(r, rank, sr); /* its figures for the step's history row */
        coord_worker_clear_failures(w); /* it completed a step under this plan */
    }
    w->step = sr->step;
    w->loss = s_finite(sr->loss, w, "loss");
    w->step_seconds = s_finite(sr->duration_s, w, "step time");
    double comm = s_finite(sr->comm_seconds, w, "comm time");
    w->comm_wait_ratio = w->step_seconds > 0 && comm > 0 ? fmin(comm / w->step_seconds, 1) : 0;
    coord_run_advance(c, r);
    if (sr->rejected_replicas)
        coord_guard_grad_report(c, r, w, sr->rejected_replicas, sr->reject_detail);
    coord_experts_note(c, r, w, rank, sr);
    coord_reply_ack(c, route, env, w, r);
}

/* An NCCL unique id from rank 0 of a group: forwarded to the plan's other workers (the
 * coordinator does not know the groups; a worker keeps only what its comms wait for). The wire
 * layer checked the group's form and the id's size; here: the sender is in the plan, and the
 * group's generation is the plan's. */
static void s_on_comm_id(coord_t *c, const wire_route_t *route, coord_worker_t *w, coord_run_t *r,
                         const Shoal__Envelope *env)
{
    uint64_t gen = 0;
    uint32_t tag = 0;
    (void)wire_comm_group_parse(env->comm_id->group, &gen, &tag);
    if (coord_rank_of(r, w) < 0 || gen != r->generation) {
        c->dropped++;
        log_warn("dropped comm_id of group %s from %s: %s", env->comm_id->group, w->id,
                 coord_rank_of(r, w) < 0 ? "not a member of the plan" : "another generation");
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, r,
                          "comm_id of group %s: %s (run %s generation %" PRIu64 ")",
                          env->comm_id->group,
                          coord_rank_of(r, w) < 0 ? "the sender is not in the plan"
                                                  : "the group is of another generation",
                          r->id, r->generation);
        coord_guard_strike(c, w, "comm_id outside the plan");
        return;
    }
    Shoal__CommId cid = *env->comm_id;
    Shoal__Envelope fwd;
    wire_envelope_init(&fwd, SHOAL__MSG_TYPE__MSG_COMM_ID, r->id, w->id, r->generation, 0);
    fwd.body_case = SHOAL__ENVELOPE__BODY_COMM_ID;
    fwd.comm_id = &cid;
    for (uint32_t i = 0; i < r->plan.n_peers; i++) {
        coord_worker_t *p = coord_worker_by_id(c, r->plan.peers[i].worker_id);
        if (p && p != w)
            coord_send_worker(c, p, &fwd);
    }
    coord_reply_ack(c, route, env, w, r);
}

/* Whether the run has a plan without `w` (someone to hand its cell to): when not (it is the
 * last worker, or the rest cannot hold the model), a preempted worker leaves at once instead of
 * waiting out its grace for a boundary that brings no plan (the death path then applies). */
static int s_placeable_without(coord_t *c, coord_run_t *r, coord_worker_t *w)
{
    const worker_state_t was = w->state;
    plan_t p;
    w->state = WORKER_DRAINING; /* in memory only, for the preview */
    const int ok = coord_plan_preview(c, r, &p) == SHOAL_OK;
    w->state = was;
    plan_fini(&p);
    return ok;
}

static void s_on_leave(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                       coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_r;
    const char *why = env->leave->reason[0] ? env->leave->reason : "no reason";
    if (env->leave->drain_first) {
        /* preemption with a grace period: hand the cell over at the next boundary (a drain
         * that leaves no hold behind: a later registration is an ordinary join), then the
         * worker sends a plain Leave; one holding no cell just leaves */
        coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
        if (w->state == WORKER_DRAINING || w->state == WORKER_DRAINED ||
            w->state == WORKER_QUARANTINED) {
            coord_reply_ack(c, route, env, w, NULL);
            return;
        }
        if (r && r->state == RUN_RUNNING && coord_plan_member(r, w->id) &&
            s_placeable_without(c, r, w) &&
            coord_worker_transition(c, w, WORKER_DRAINING, "leaving after a hand-over: %s",
                                    why) == SHOAL_OK) {
            if (coord_txn_commit(c) == SHOAL_OK)
                coord_push_drain(c, w, why);
            coord_reply_ack(c, route, env, w, NULL);
            return;
        }
        /* nobody could take the cell: the Ack (no run for this message) says STOP, and the
         * worker's plain Leave follows at once (the worker stays live until then: a state
         * change now would answer its heartbeats with "register again") */
        coord_reply_ack(c, route, env, w, NULL);
        return;
    }
    (void)coord_worker_transition(c, w, WORKER_LEFT, "left: %s", why);
    coord_txn_commit(c);
    coord_reply_ack(c, route, env, w, NULL);
}

static void s_on_get_assignment(coord_t *c, const wire_route_t *route, coord_worker_t *w,
                                coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_r;
    coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
    if (r && !coord_run_is_terminal(r->state) && coord_plan_member(r, w->id))
        coord_push_assignment(c, r, w, strcmp(env->run_id, r->id) == 0 ? env->generation : 0);
    else
        coord_reply_ack(c, route, env, w, NULL);
}

/* Ack and Error from a worker: answers are not answered (an Error is logged). */
static void s_on_answer(coord_t *c, const wire_route_t *route, coord_worker_t *unused_w,
                        coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)c;
    (void)route;
    (void)unused_w;
    (void)unused_r;
    if (env->type == SHOAL__MSG_TYPE__MSG_ERROR)
        log_warn("worker %.64s reports error %d: %s", env->sender, env->error->code,
                 env->error->message);
}

void coord_worker_msg_bad(coord_t *c, const wire_route_t *route, shoal_err_t rc,
                          const char *where)
{
    char why[256];
    snprintf(why, sizeof why, "%s", shoal_errmsg());
    c->dropped++;
    log_warn("dropped a bad message %s: %s", where, why);
    coord_reply_error(c, route,
                      rc == SHOAL_ERR_INVALID ? SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE
                                              : SHOAL__ERROR_CODE__ERR_BAD_MESSAGE,
                      NULL, NULL, "%s", why);
    coord_guard_strike_route(c, route, why); /* the sender's strike */
}

/* A host relay's notice that the worker it relays on this route closed its connection to the
 * relay: what the socket monitor says of a direct worker's connection (no answer: the slot is
 * gone). A route that names no live worker is ignored. */
static void s_on_relay_closed(coord_t *c, const wire_route_t *route, coord_worker_t *unused_w,
                              coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_w;
    (void)unused_r;
    (void)env;
    if (route->n < 2 || route->fd < 0 || route->fd >= c->cap_by_fd)
        return;
    for (coord_worker_t *w = c->by_fd[route->fd]; w; w = w->fd_next)
        if (coord_worker_is_live(w->state) && !w->conn_lost_ms && w->has_route &&
            wire_route_same(&w->route, route)) {
            w->conn_lost_ms = clock_mono_ms();
            log_debug("worker %s: its connection to its host relay closed", w->id);
            return;
        }
}

/* A host relay's batch: each item is handled as a message of the route [relay][slot], as if it
 * had come alone (its answers are batched again per relay by coord_outbox_flush). */
static void s_on_relay_batch(coord_t *c, const wire_route_t *route, coord_worker_t *unused_w,
                             coord_run_t *unused_r, const Shoal__Envelope *env)
{
    (void)unused_w;
    (void)unused_r;
    if (route->n != 1) {
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, NULL,
                          "a relay batch comes on a connection of its own, not relayed");
        coord_guard_strike_route(c, route, "a relay batch inside a relayed message");
        return;
    }
    const Shoal__RelayBatch *b = env->relay_batch;
    c->relay_batches++;
    char where[96];
    snprintf(where, sizeof where, "relayed by '%.64s'", env->sender);
    wire_route_t vr = *route; /* [relay][slot]: the slot frame is rewritten per item */
    vr.len[1] = WIRE_RELAY_SLOT_LEN;
    vr.n = 2;
    for (size_t i = 0; i < b->n_items; i++) {
        wire_relay_slot_put(vr.data[1], b->items[i]->slot);
        coord_msg_ctx_t ctx = {c, &vr};
        const shoal_err_t rc = wire_decode(b->items[i]->envelope.data, b->items[i]->envelope.len,
                                           coord_on_worker_msg, &ctx);
        if (rc != SHOAL_OK)
            coord_worker_msg_bad(c, &vr, rc, where);
    }
}

/* One handler per message type accepted on the worker socket. needs_worker: the sender must be
 * a live registered worker (its liveness and route are refreshed before the handler runs);
 * needs_run: the message's run and generation must be current (coord_check_run), the handler
 * gets the run; ack_gone: a sender that is not live gets an Ack, not an Error (leaving twice is
 * fine). Any other type is dropped and answered with ERR_UNKNOWN_TYPE. */
typedef void s_handler_fn(coord_t *c, const wire_route_t *route, coord_worker_t *w, coord_run_t *r,
                          const Shoal__Envelope *env);
typedef struct {
    Shoal__MsgType type;
    s_handler_fn *handler;
    int needs_worker, needs_run, ack_gone;
} s_worker_msg_t;

static const s_worker_msg_t s_worker_msgs[] = {
    {SHOAL__MSG_TYPE__MSG_REGISTER, s_on_register, 0, 0, 0},
    {SHOAL__MSG_TYPE__MSG_HEARTBEAT, s_on_heartbeat, 1, 0, 0}, /* checks the run itself */
    {SHOAL__MSG_TYPE__MSG_STEP_REPORT, s_on_step_report, 1, 1, 0},
    {SHOAL__MSG_TYPE__MSG_CKPT_SHARD, coord_on_ckpt_shard, 1, 1, 0},
    {SHOAL__MSG_TYPE__MSG_SHARD_HELD, coord_on_shard_held, 1, 0, 0}, /* any generation */
    {SHOAL__MSG_TYPE__MSG_SHARD_CORRUPT, coord_on_shard_corrupt, 1, 0, 0}, /* any generation */
    {SHOAL__MSG_TYPE__MSG_LEAVE, s_on_leave, 1, 0, 1},
    {SHOAL__MSG_TYPE__MSG_GET_ASSIGNMENT, s_on_get_assignment, 1, 0, 0},
    {SHOAL__MSG_TYPE__MSG_KEY_QUERY, coord_on_key_query, 1, 0, 0},
    {SHOAL__MSG_TYPE__MSG_COMM_ID, s_on_comm_id, 1, 1, 0},
    {SHOAL__MSG_TYPE__MSG_ACK, s_on_answer, 0, 0, 0},
    {SHOAL__MSG_TYPE__MSG_ERROR, s_on_answer, 0, 0, 0},
    {SHOAL__MSG_TYPE__MSG_RELAY_CLOSED, s_on_relay_closed, 0, 0, 0},
    {SHOAL__MSG_TYPE__MSG_RELAY_BATCH, s_on_relay_batch, 0, 0, 0},
};

void coord_on_worker_msg(const Shoal__Envelope *env, void *ctxp)
{
    coord_msg_ctx_t *ctx = ctxp;
    coord_t *c = ctx->c;
    const wire_route_t *route = ctx->route;
    c->handled++;
    /* registrations, heartbeats, step and shard reports only write (no handler of theirs
     * reads the store back; coord_on_ckpt_shard commits first when it scans): they may share
     * the burst's commit, and what they announce (answers, a step's StepCommit to every
     * member) waits in the outbox until it is on disk; anything else first sees what came
     * before it on disk */
    const int write_only = env->type == SHOAL__MSG_TYPE__MSG_REGISTER ||
                           env->type == SHOAL__MSG_TYPE__MSG_HEARTBEAT ||
                           env->type == SHOAL__MSG_TYPE__MSG_STEP_REPORT ||
                           env->type == SHOAL__MSG_TYPE__MSG_CKPT_SHARD;
    if (!write_only && c->defer_commit) {
        c->defer_commit = 0;
        (void)coord_txn_commit(c);
    }
    c->defer_commit = write_only && c->in_burst;
    if (!coord_guard_admit(c, route))
        return; /* over its connection's rate: dropped unanswered (counted) */
    const s_worker_msg_t *m = NULL;
    for (size_t i = 0; i < sizeof s_worker_msgs / sizeof s_worker_msgs[0] && !m; i++)
        if (s_worker_msgs[i].type == env->type)
            m = &s_worker_msgs[i];
    if (!m) {
        c->dropped++;
        log_warn("dropped %s from '%.64s': not a worker message", wire_type_name((int)env->type),
                 env->sender);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE, env, NULL,
                          "%s is not accepted on the worker socket",
                          wire_type_name((int)env->type));
        coord_guard_strike_route(c, route, "a message type not accepted on the worker socket");
        return;
    }
    if (c->zap && (route->n > 1 || env->type == SHOAL__MSG_TYPE__MSG_RELAY_BATCH)) {
        /* with CURVE a worker's key is its connection's, and a relay's connection is the
         * relay's: its workers' own keys (data-plane admission, institution) would be lost */
        c->dropped++;
        if (c->relay_refused++ % 1000 == 0)
            log_warn("refused %s relayed from '%.64s': host relays are plaintext only "
                     "(--insecure) (%llu refused so far)",
                     wire_type_name((int)env->type), env->sender, c->relay_refused);
        if (env->type != SHOAL__MSG_TYPE__MSG_RELAY_CLOSED && route->n == 1)
            coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, env, NULL,
                              "host relays are plaintext only: connect directly to a CURVE "
                              "coordinator");
        return;
    }
    if (!m->needs_worker) {
        m->handler(c, route, NULL, NULL, env);
        return;
    }
    coord_worker_t *w = coord_worker_by_id(c, env->sender);
    if (!w || !coord_worker_is_live(w->state)) {
        if (m->ack_gone) {
            coord_reply_ack(c, route, env, NULL, NULL);
            return;
        }
        c->dropped++;
        /* a worker declared dead sends until the Error reaches it: a line per 1,000 such drops,
         * not per message (a write each, under the backlog that made the deaths) */
        if (c->gone_dropped++ % 1000 == 0)
            log_warn("dropped %s from '%.64s': %s (%llu such drops so far)",
                     wire_type_name((int)env->type), env->sender,
                     w ? "worker must register again" : "unknown worker", c->gone_dropped);
        coord_reply_error(c, route, SHOAL__ERROR_CODE__ERR_UNKNOWN_WORKER, env, NULL,
                          "worker '%.64s' is %s: register again", env->sender,
                          w ? coord_worker_state_name(w->state) : "unknown");
        return;
    }
    coord_worker_heard(c, w, route);
    coord_run_t *r = NULL;
    if (m->needs_run && !(r = coord_check_run(c, route, w, env)))
        return;
    m->handler(c, route, w, r, env);
}
