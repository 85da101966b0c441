/* coord_state.c: worker and run states: their names, and the transitions between them (the one
 * place a state changes, logged and written to the ledger). */
#include "coord_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static const char *s_worker_states[WORKER__COUNT] = {
    "joining", "active", "draining", "drained", "dead", "left", "quarantined"};
static const char *s_run_states[RUN__COUNT] = {"pending", "running", "paused",
                                               "done",    "failed",  "cancelled"};

const char *coord_worker_state_name(worker_state_t s)
{
    return (unsigned)s < WORKER__COUNT ? s_worker_states[s] : "unknown";
}

const char *coord_run_state_name(run_state_t s)
{
    return (unsigned)s < RUN__COUNT ? s_run_states[s] : "unknown";
}

static int s_parse_state(const char *name, const char *const *names, int n)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

int coord_worker_state_parse(const char *name)
{
    return s_parse_state(name, s_worker_states, WORKER__COUNT);
}

int coord_run_state_parse(const char *name)
{
    return s_parse_state(name, s_run_states, RUN__COUNT);
}

int coord_worker_is_live(worker_state_t s)
{
    return s == WORKER_JOINING || s == WORKER_ACTIVE || s == WORKER_DRAINING ||
           s == WORKER_DRAINED || s == WORKER_QUARANTINED;
}

int coord_run_is_terminal(run_state_t s)
{
    return s == RUN_DONE || s == RUN_FAILED || s == RUN_CANCELLED;
}

static int s_worker_transition_ok(worker_state_t from, worker_state_t to)
{
    switch (to) {
    case WORKER_JOINING:
        return from == WORKER_DEAD || from == WORKER_LEFT;
    case WORKER_ACTIVE:
        return from == WORKER_JOINING || from == WORKER_DRAINING || from == WORKER_DRAINED ||
               from == WORKER_QUARANTINED;
    case WORKER_DRAINING:
        return from == WORKER_JOINING || from == WORKER_ACTIVE;
    case WORKER_DRAINED: /* from joining: a drain outlives a restart */
        return from == WORKER_DRAINING || from == WORKER_ACTIVE || from == WORKER_JOINING;
    case WORKER_QUARANTINED: /* coord_worker_quarantine; from joining: it outlives a restart */
        return from == WORKER_JOINING || from == WORKER_ACTIVE || from == WORKER_DRAINING ||
               from == WORKER_DRAINED;
    case WORKER_DEAD:
    case WORKER_LEFT:
        return coord_worker_is_live(from);
    default:
        return 0;
    }
}

/* Logs a transition ("worker w3: active -> dead (reason)") and appends its ledger entry of
 * `kind` to `chain`: `detail` (stolen) with from, to and reason added. */
static void s_record_transition(coord_t *c, const char *what, const char *id, const char *chain,
                                const char *kind, const char *from, const char *to,
                                const char *reason, json_t *detail)
{
    log_info("%s %s: %s -> %s (%s)", what, id, from, to, reason);
    if (detail) {
        json_object_set_new(detail, "from", json_string(from));
        json_object_set_new(detail, "to", json_string(to));
        json_object_set_new(detail, "reason", json_string(reason));
    }
    coord_ledger(c, chain, kind, detail);
}

shoal_err_t coord_worker_transition(coord_t *c, coord_worker_t *w, worker_state_t to,
                                    const char *fmt, ...)
{
    worker_state_t from = w->state;
    if (!s_worker_transition_ok(from, to))
        return shoal_fail(SHOAL_ERR_STATE, "worker %s: cannot go from %s to %s", w->id,
                          coord_worker_state_name(from), coord_worker_state_name(to));
    if (to == WORKER_ACTIVE)
        w->quarantine[0] = 0; /* undrained: placeable again */
    w->state = to;
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    s_record_transition(c, "worker", w->id, w->run, "worker_state", coord_worker_state_name(from),
                        coord_worker_state_name(to), reason,
                        json_pack("{s:s, s:s}", "worker", w->id, "name", w->name));
    coord_put_worker(c, w);
    if (to == WORKER_DEAD || to == WORKER_LEFT)
        coord_replicas_on_loss(c, w); /* its checkpoint copies: made again elsewhere */
    if (to == WORKER_QUARANTINED) {
        coord_keys_revoke(c, w->public_key, "its worker is quarantined");
        w->key_refused = 1;
    } else if (to == WORKER_ACTIVE && w->key_refused) {
        /* undrained while connected, or undrained while gone and now registered again: the
         * servers that cached the refusal learn at once, not when their cache expires */
        coord_keys_readmit(c, w->public_key); /* after the state change: it decides */
        w->key_refused = 0;
    }
    return SHOAL_OK;
}

static int s_run_transition_ok(run_state_t from, run_state_t to)
{
    switch (to) {
    case RUN_RUNNING:
        return from == RUN_PENDING || from == RUN_PAUSED;
    case RUN_PAUSED:
        return from == RUN_RUNNING;
    case RUN_DONE:
        return from == RUN_RUNNING;
    case RUN_FAILED:
    case RUN_CANCELLED:
        return !coord_run_is_terminal(from);
    default:
        return 0;
    }
}

shoal_err_t coord_run_transition(coord_t *c, coord_run_t *r, run_state_t to, const char *fmt, ...)
{
    run_state_t from = r->state;
    if (!s_run_transition_ok(from, to))
        return shoal_fail(SHOAL_ERR_STATE, "run %s is %s: cannot become %s", r->id,
                          coord_run_state_name(from), coord_run_state_name(to));
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (to == RUN_FAILED || to == RUN_CANCELLED)
        snprintf(r->reason, sizeof r->reason, "%s", reason);
    else if (to == RUN_DONE)
        r->reason[0] = 0; /* no "unplaced" note outlives the run */
    r->state = to;
    s_record_transition(c, "run", r->id, r->id, "run_state", coord_run_state_name(from),
                        coord_run_state_name(to), reason,
                        json_pack("{s:I}", "step", (json_int_t)r->committed_step));
    coord_put_run(c, r);
    return SHOAL_OK;
}
