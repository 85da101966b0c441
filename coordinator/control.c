/* control.c: the control API served to shoalctl: one handler per verb, each checks, applies
 * (one synced batch with its ledger entry), and always answers with a CtlReply carrying JSON. */
#include "control.h"

#include "coord_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "ctl_reply.h"
#include "log.h"
#include "numparse.h"
#include "runspec.h"

/* Answers a control request: message and json (stolen, may be NULL) in a CtlReply. */
static void s_reply(coord_t *c, const wire_route_t *route, int ok, Shoal__ErrorCode code,
                    const char *message, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    Shoal__CtlReply rep = SHOAL__CTL_REPLY__INIT;
    rep.ok = ok;
    rep.code = ok ? SHOAL__ERROR_CODE__ERR_NONE : code;
    char msg[WIRE_MAX_TEXT_LEN];
    snprintf(msg, sizeof msg, "%s", message ? message : "");
    rep.message = msg;
    rep.json = text ? text : (char *)"";
    Shoal__Envelope env;
    wire_envelope_init(&env, SHOAL__MSG_TYPE__MSG_CTL_REPLY, "", COORD_SENDER, 0, ++c->seq);
    env.body_case = SHOAL__ENVELOPE__BODY_CTL_REPLY;
    env.ctl_reply = &rep;
    coord_send(c, c->csock, route, &env);
    free(text);
    json_decref(json);
}

static void s_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));
static void s_error(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code, const char *fmt,
                    ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_info("control: refused: %s", msg);
    s_reply(c, route, 0, code, msg, NULL);
}

static json_t *s_run_status(const coord_run_t *r)
{
    const ctl_run_status_t st = {
        .id = r->id,
        .name = r->name,
        .state = coord_run_state_name(r->state),
        .reason = r->reason,
        .step = r->committed_step,
        .total_steps = r->total_steps,
        .generation = (int64_t)r->generation,
        .checkpoint_step = r->checkpoint_step,
        .lease = r->lease,
        .loss = r->loss,
        .workers = (int)r->plan.n_peers,
    };
    return ctl_run_status_encode(&st);
}

static coord_run_t *s_run_arg(coord_t *c, const wire_route_t *route, const char *arg)
{
    coord_run_t *r = arg[0] ? coord_find_run(c, arg) : NULL;
    if (!r)
        s_error(c, route, SHOAL__ERROR_CODE__ERR_NOT_FOUND, "no run with id or name '%s'", arg);
    return r;
}

static void s_submit(coord_t *c, const wire_route_t *route, const Shoal__CtlSubmit *s)
{
    const char *origin = s->origin[0] ? s->origin : "submitted spec";
    runspec_t *spec = malloc(sizeof *spec);
    if (!spec) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "out of memory");
        return;
    }
    if (runspec_load_string(s->spec_yaml, origin, spec) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, "%s", shoal_errmsg());
        goto out;
    }
    for (int i = 0; i < c->n_runs; i++)
        if (strcmp(c->runs[i]->name, spec->name) == 0) {
            s_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID,
                    "run name '%s' is already used by %s (%s)", spec->name, c->runs[i]->id,
                    coord_run_state_name(c->runs[i]->state));
            goto out;
        }
    coord_run_t *r = NULL;
    if (coord_add_run(c, spec->name, s->spec_yaml, spec->steps,
                      (uint32_t)spec->model.num_hidden_layers,
                      (uint32_t)spec->model.n_routed_experts, &r) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        goto out;
    }
    char digest[LEDGER_HASH_HEX];
    (void)ledger_hash("", s->spec_yaml, digest);
    coord_ledger(c, r->id, "submit",
                 json_pack("{s:s, s:s, s:i, s:s, s:s}", "name", r->name, "origin", origin, "steps",
                           spec->steps, "model", spec->model_preset, "spec_sha256", digest));
    if (coord_txn_commit(c) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "run not persisted: %s", shoal_errmsg());
        goto out;
    }
    log_info("run %s: submitted (%s, %d steps)", r->id, r->name, spec->steps);
    char msg[256];
    snprintf(msg, sizeof msg, "submitted %s (%s)", r->id, r->name);
    s_reply(c, route, 1, 0, msg,
            json_pack("{s:s, s:s, s:s}", CTL_F_ID, r->id, CTL_F_NAME, r->name, CTL_F_STATE,
                      coord_run_state_name(r->state)));
out:
    free(spec);
}

static void s_status(coord_t *c, const wire_route_t *route, const char *arg)
{
    json_t *runs = json_array();
    if (arg[0]) {
        coord_run_t *r = s_run_arg(c, route, arg);
        if (!r) {
            json_decref(runs);
            return;
        }
        json_array_append_new(runs, s_run_status(r));
    } else {
        for (int i = 0; i < c->n_runs; i++)
            json_array_append_new(runs, s_run_status(c->runs[i]));
    }
    int live = 0, standby = 0;
    for (int i = 0; i < c->n_workers; i++) {
        live += c->workers[i]->state == WORKER_ACTIVE;
        standby += coord_worker_is_standby(c, c->workers[i]);
    }
    s_reply(c, route, 1, 0, "",
            json_pack("{s:o, s:i, s:i}", CTL_F_RUNS, runs, CTL_F_ACTIVE_WORKERS, live,
                      CTL_F_STANDBY_WORKERS, standby));
}

static void s_workers(coord_t *c, const wire_route_t *route)
{
    json_t *arr = json_array();
    int64_t now = clock_wall_ms();
    for (int i = 0; i < c->n_workers; i++) {
        coord_worker_t *w = c->workers[i];
        coord_run_t *r = w->run[0] ? coord_find_run(c, w->run) : NULL;
        const plan_peer_t *p = r ? coord_plan_member(r, w->id) : NULL;
        const ctl_worker_t cw = {
            .id = w->id,
            .name = w->name,
            .state = coord_worker_is_standby(c, w) ? "standby" : coord_worker_state_name(w->state),
            .run = w->run,
            .host = w->host,
            .institution = w->institution,
            .has_cell = p != NULL,
            .replica = p ? (int)p->cell.replica : 0,
            .stage = p ? (int)p->cell.stage : 0,
            .ep_rank = p ? (int)p->cell.ep_rank : 0,
            .last_heartbeat_ms = w->last_hb_ms ? now - w->last_hb_ms : -1,
            .step = (int64_t)w->step,
            .loss = w->loss,
            .tokens_per_s = w->tokens_per_s,
            .reason = w->quarantine[0] ? w->quarantine : w->drain,
        };
        json_array_append_new(arr, ctl_worker_encode(&cw));
    }
    s_reply(c, route, 1, 0, "", json_pack("{s:o}", CTL_F_WORKERS, arr));
}

static void s_drain(coord_t *c, const wire_route_t *route, const char *arg, int drain)
{
    coord_worker_t *w = arg[0] ? coord_find_worker(c, arg) : NULL;
    if (!w) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_NOT_FOUND, "no worker with id or name '%s'", arg);
        return;
    }
    worker_state_t s = w->state;
    const int gone = s == WORKER_DEAD || s == WORKER_LEFT;
    shoal_err_t rc = SHOAL_OK;
    /* the drain is a persisted hold on the worker, not only its state: it survives the
     * worker's restarts (a dead worker registering again comes back drained) until undrain */
    if (drain) {
        if (s == WORKER_QUARANTINED) {
            s_reply(c, route, 1, 0, "quarantined: out of every plan until undrain", NULL);
            return;
        }
        if (s == WORKER_DRAINING || s == WORKER_DRAINED || (gone && coord_worker_held(w))) {
            s_reply(c, route, 1, 0, "already draining", NULL);
            return;
        }
        snprintf(w->drain, sizeof w->drain, "drained by operator");
        if (gone)
            coord_put_worker(c, w); /* it comes back drained */
        else
            rc = coord_worker_transition(c, w, WORKER_DRAINING, "drain requested by operator");
        if (rc == SHOAL_OK && !gone && !w->run[0])
            rc = coord_worker_transition(c, w, WORKER_DRAINED, "holds no cell");
    } else {
        if (!coord_worker_held(w) && s != WORKER_DRAINING && s != WORKER_DRAINED) {
            s_reply(c, route, 1, 0, "not drained", NULL);
            return;
        }
        w->drain[0] = 0;
        w->quarantine[0] = 0;
        w->strikes = 0;
        coord_worker_clear_failures(w); /* a quarantined worker starts with a clean slate */
        if (gone)
            coord_put_worker(c, w); /* it comes back active */
        else
            rc = coord_worker_transition(c, w, WORKER_ACTIVE, "undrain requested by operator");
    }
    if (rc != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE, "%s", shoal_errmsg());
        return;
    }
    if (coord_txn_commit(c) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    if (drain)
        coord_push_drain(c, w, "drain requested by operator");
    char msg[128];
    snprintf(msg, sizeof msg, "worker %s is %s", w->id, coord_worker_state_name(w->state));
    s_reply(
        c, route, 1, 0, msg,
        json_pack("{s:s, s:s}", CTL_F_ID, w->id, CTL_F_STATE, coord_worker_state_name(w->state)));
}

static void s_run_verb(coord_t *c, const wire_route_t *route, Shoal__MsgType type, const char *arg)
{
    coord_run_t *r = s_run_arg(c, route, arg);
    if (!r)
        return;
    /* pending -> running is the scheduler's transition, not the operator's: resume only
     * continues what pause stopped */
    if (type == SHOAL__MSG_TYPE__MSG_CTL_PAUSE && r->state != RUN_RUNNING) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE,
                "run %s is %s: only a running run can be paused", r->id,
                coord_run_state_name(r->state));
        return;
    }
    if (type == SHOAL__MSG_TYPE__MSG_CTL_RESUME && r->state == RUN_PAUSED && r->unplaced) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE,
                "run %s is paused waiting for workers (%s): it runs again by itself once placed",
                r->id, r->reason);
        return;
    }
    if (type == SHOAL__MSG_TYPE__MSG_CTL_RESUME && r->state != RUN_PAUSED) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE,
                "run %s is %s: only a paused run can be resumed", r->id,
                coord_run_state_name(r->state));
        return;
    }
    shoal_err_t rc;
    if (type == SHOAL__MSG_TYPE__MSG_CTL_PAUSE) {
        rc = coord_run_transition(c, r, RUN_PAUSED, "paused by operator");
    } else if (type == SHOAL__MSG_TYPE__MSG_CTL_RESUME) {
        rc = coord_run_transition(c, r, RUN_RUNNING, "resumed by operator");
        if (rc == SHOAL_OK && r->generation > 0 && !r->replan_pending) {
            r->lease = coord_run_lease_for(c, r);
            coord_put_run(c, r);
        }
    } else {
        rc = coord_run_transition(c, r, RUN_CANCELLED, "cancelled by operator");
        if (rc == SHOAL_OK)
            coord_run_release_workers(c, r, "run cancelled");
    }
    if (rc != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE, "%s", shoal_errmsg());
        return;
    }
    if (coord_txn_commit(c) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    if (type == SHOAL__MSG_TYPE__MSG_CTL_PAUSE) {
        coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_PAUSE, "paused by operator");
    } else if (type == SHOAL__MSG_TYPE__MSG_CTL_RESUME) {
        coord_push_run_control(c, r, SHOAL__RUN_COMMAND__RUN_CMD_RESUME, "resumed by operator");
        coord_push_step_commit(c, r);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "run %s is %s", r->id, coord_run_state_name(r->state));
    s_reply(c, route, 1, 0, msg,
            json_pack("{s:s, s:s}", CTL_F_ID, r->id, CTL_F_STATE, coord_run_state_name(r->state)));
}

static void s_events(coord_t *c, const wire_route_t *route, const Shoal__CtlEvents *ev)
{
    const char *chain = ev->run;
    if (strcmp(chain, LEDGER_CLUSTER) != 0) {
        coord_run_t *r = s_run_arg(c, route, ev->run);
        if (!r)
            return;
        chain = r->id;
    }
    json_t *arr = json_array();
    if (ledger_list(c->st, chain, ev->since, ev->limit, arr) != SHOAL_OK) {
        json_decref(arr);
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    s_reply(c, route, 1, 0, "", json_pack("{s:s, s:o}", CTL_F_RUN, chain, CTL_F_EVENTS, arr));
}

/* One page of a run's per-step history (rows with step > since, at most limit): a long run is
 * read page by page, never as one giant reply. */
static void s_history(coord_t *c, const wire_route_t *route, const Shoal__CtlEvents *ev)
{
    coord_run_t *r = s_run_arg(c, route, ev->run);
    if (!r)
        return;
    json_t *rows = json_array();
    int64_t next = 0;
    const int64_t since = ev->since > INT64_MAX ? INT64_MAX : (int64_t)ev->since;
    if (!rows || coord_history_list(c->st, r->id, since, ev->limit, rows, &next) != SHOAL_OK) {
        json_decref(rows);
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    s_reply(c, route, 1, 0, "",
            json_pack("{s:s, s:o, s:I}", CTL_F_RUN, r->id, CTL_F_ROWS, rows, CTL_F_NEXT,
                      (json_int_t)next));
}

/* shoalctl experts: the run's observed expert loads and the placement they call for. */
static void s_experts(coord_t *c, const wire_route_t *route, const Shoal__CtlExperts *ce)
{
    coord_run_t *r = s_run_arg(c, route, ce->run);
    if (!r)
        return;
    json_t *j = coord_experts_json(c, r, ce->ep, ce->hosts, ce->redundant);
    if (!j)
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, "%s", shoal_errmsg());
    else
        s_reply(c, route, 1, 0, "", j);
}

static void s_verify(coord_t *c, const wire_route_t *route, const char *arg)
{
    const char *chain = arg;
    if (strcmp(chain, LEDGER_CLUSTER) != 0) {
        coord_run_t *r = s_run_arg(c, route, arg);
        if (!r)
            return;
        chain = r->id;
    }
    uint64_t n = 0, bad = 0;
    char reason[512];
    /* the chain, and the signature of every signed entry with this coordinator's own key */
    if (ledger_verify_signed(c->st, chain, ledger_public_key(c->ledger), false, &n, &bad, reason,
                             sizeof reason) != SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    char msg[700];
    if (bad)
        snprintf(msg, sizeof msg, "ledger of %s is broken at %s", chain, reason);
    else
        snprintf(msg, sizeof msg, "ledger of %s verifies: %" PRIu64 " entries", chain, n);
    s_reply(c, route, bad == 0, SHOAL__ERROR_CODE__ERR_INVALID, msg,
            ctl_verify_encode(&(ctl_verify_t){
                .run = chain, .reason = reason, .entries = n, .first_bad = bad, .ok = bad == 0}));
}

static void s_plan(coord_t *c, const wire_route_t *route, const Shoal__CtlPlan *cp)
{
    coord_run_t *r = s_run_arg(c, route, cp->run);
    if (!r)
        return;
    if (cp->dry_run) {
        plan_t p;
        if (coord_plan_preview(c, r, &p) != SHOAL_OK) {
            s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE, "%s", shoal_errmsg());
            return;
        }
        s_reply(c, route, 1, 0, "dry run: not applied",
                json_pack("{s:s, s:b, s:o}", CTL_F_RUN, r->id, CTL_F_DRY_RUN, 1, CTL_F_PLAN,
                          plan_to_json(&p)));
        plan_fini(&p);
        return;
    }
    if (r->generation == 0 || r->plan.n_peers == 0) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_STATE, "run %s has no plan yet (%s)", r->id,
                coord_run_state_name(r->state));
        return;
    }
    s_reply(c, route, 1, 0, "",
            json_pack("{s:s, s:b, s:o}", CTL_F_RUN, r->id, CTL_F_DRY_RUN, 0, CTL_F_PLAN,
                      plan_to_json(&r->plan)));
}

/* Collects the steps of a run's committed manifests ("c/<run>/<20-digit step>" keys). */
typedef struct {
    json_t *steps;
    size_t prefix_len;
} s_steps_ctx_t;

static int s_committed_step(const char *k, size_t kl, const char *v, size_t vl, void *ctx)
{
    (void)v, (void)vl;
    const s_steps_ctx_t *p = ctx;
    char *digits = strndup(k + p->prefix_len, kl - p->prefix_len);
    int64_t step;
    if (digits && numparse_i64(digits, 0, INT64_MAX, &step) == SHOAL_OK)
        json_array_append_new(p->steps, json_integer(step));
    free(digits);
    return 0;
}

/* The committed manifest of a checkpoint step (0: the latest) as the coordinator stored it;
 * a step that is not committed is refused with the committed steps in the message, since the
 * operator picks among them. */
static void s_manifest(coord_t *c, const wire_route_t *route, const Shoal__CtlManifest *cm)
{
    coord_run_t *r = s_run_arg(c, route, cm->run);
    if (!r)
        return;
    int64_t step = cm->step > 0 ? cm->step : r->checkpoint_step;
    char key[160], *val = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "c/%s/%020" PRId64, r->id, step);
    shoal_err_t rc = step > 0 ? store_get(c->st, STORE_CF_MANIFESTS, key, &val, &len)
                              : SHOAL_ERR_NOTFOUND;
    json_t *manifest = rc == SHOAL_OK ? json_loadb(val, len, 0, NULL) : NULL;
    free(val);
    if (manifest) {
        s_reply(c, route, 1, 0, "",
                json_pack("{s:s, s:I, s:o}", CTL_F_RUN, r->id, CTL_F_STEP, (json_int_t)step,
                          CTL_F_MANIFEST, manifest));
        return;
    }
    if (rc != SHOAL_OK && rc != SHOAL_ERR_NOTFOUND) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL, "%s", shoal_errmsg());
        return;
    }
    if (rc == SHOAL_OK) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_INTERNAL,
                "run %s: the stored manifest of step %" PRId64 " is not JSON", r->id, step);
        return;
    }
    char prefix[128], list[512] = "";
    snprintf(prefix, sizeof prefix, "c/%s/", r->id);
    s_steps_ctx_t sc = {json_array(), strlen(prefix)};
    (void)store_scan(c->st, STORE_CF_MANIFESTS, prefix, NULL, s_committed_step, &sc);
    size_t i, at = 0;
    json_t *v;
    json_array_foreach(sc.steps, i, v)
    {
        if (at < sizeof list)
            at += (size_t)snprintf(list + at, sizeof list - at, "%s%" PRId64, i ? ", " : "",
                                   (int64_t)json_integer_value(v));
    }
    json_decref(sc.steps);
    if (cm->step > 0)
        s_error(c, route, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                "run %s has no committed checkpoint of step %" PRId64 " (committed: %s)", r->id,
                step, list[0] ? list : "none");
    else
        s_error(c, route, SHOAL__ERROR_CODE__ERR_NOT_FOUND,
                "run %s has no committed checkpoint yet", r->id);
}

static void s_handle(coord_t *c, const wire_route_t *route, const Shoal__Envelope *env)
{
    log_debug("control: %s", wire_type_name((int)env->type));
    if (!coord_keys_may(route, (int)env->type)) {
        s_error(c, route, SHOAL__ERROR_CODE__ERR_FORBIDDEN,
                "%s is not allowed to the operator key %s (role read: status, workers, events, "
                "history, plan, verify)",
                wire_type_name((int)env->type), route->user);
        return;
    }
    switch (env->type) {
    case SHOAL__MSG_TYPE__MSG_CTL_SUBMIT:
        s_submit(c, route, env->ctl_submit);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_STATUS:
        s_status(c, route, env->ctl_status->run);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_WORKERS:
        s_workers(c, route);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_DRAIN:
    case SHOAL__MSG_TYPE__MSG_CTL_UNDRAIN:
        s_drain(c, route, env->ctl_worker->worker, env->type == SHOAL__MSG_TYPE__MSG_CTL_DRAIN);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_PAUSE:
    case SHOAL__MSG_TYPE__MSG_CTL_RESUME:
    case SHOAL__MSG_TYPE__MSG_CTL_CANCEL:
        s_run_verb(c, route, env->type, env->ctl_run->run);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_EVENTS:
        s_events(c, route, env->ctl_events);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_HISTORY:
        s_history(c, route, env->ctl_events);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_VERIFY:
        s_verify(c, route, env->ctl_run->run);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_PLAN:
        s_plan(c, route, env->ctl_plan);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_MANIFEST:
        s_manifest(c, route, env->ctl_manifest);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_EXPERTS:
        s_experts(c, route, env->ctl_experts);
        break;
    case SHOAL__MSG_TYPE__MSG_CTL_KEYS_RELOAD:
        if (coord_reload_keys(c) != SHOAL_OK)
            s_error(c, route, SHOAL__ERROR_CODE__ERR_INVALID, "%s", shoal_errmsg());
        else
            s_reply(c, route, 1, 0, "allow-list reloaded", json_pack("{s:i}", "keys", c->allow.n));
        break;
    default:
        c->dropped++;
        log_warn("dropped %s on the control socket: not a control request",
                 wire_type_name((int)env->type));
        s_error(c, route, SHOAL__ERROR_CODE__ERR_UNKNOWN_TYPE, "%s is not a control request",
                wire_type_name((int)env->type));
        break;
    }
}

/* A control message that could not be decoded still gets a CtlReply. */
static void s_reject(coord_t *c, const wire_route_t *route, Shoal__ErrorCode code, const char *why)
{
    s_reply(c, route, 0, code, why, NULL);
}

void control_attach(coord_t *c)
{
    const coord_control_t control = {s_handle, s_reject};
    coord_set_control(c, &control);
}
