/* ctl_reply.h: the JSON bodies of the coordinator's control replies (CtlReply.json), defined once
 * for both sides: the field names, and encode (coordinator) / decode (shoalctl) functions. */
#ifndef SHOAL_CTL_REPLY_H
#define SHOAL_CTL_REPLY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

/* submit: {id, name, state}; drain, undrain, pause, resume, cancel: {id, state} */
#define CTL_F_ID "id"
#define CTL_F_NAME "name"
#define CTL_F_STATE "state"

/* status: {runs: [run status], active_workers} */
#define CTL_F_RUNS "runs"
#define CTL_F_ACTIVE_WORKERS "active_workers"
/* run status: {id, name, state, step, total_steps, loss, generation, checkpoint_step, lease,
 * workers, reason} */
#define CTL_F_STEP "step"
#define CTL_F_TOTAL_STEPS "total_steps"
#define CTL_F_LOSS "loss"
#define CTL_F_GENERATION "generation"
#define CTL_F_CHECKPOINT_STEP "checkpoint_step"
#define CTL_F_LEASE "lease"
#define CTL_F_WORKERS "workers" /* run status: plan size; workers reply: the list */
#define CTL_F_REASON "reason"

/* events: {run, events: [ledger entries]} */
#define CTL_F_RUN "run"
#define CTL_F_EVENTS "events"

/* verify: {run, entries, ok, first_bad, reason} */
#define CTL_F_ENTRIES "entries"
#define CTL_F_OK "ok"
#define CTL_F_FIRST_BAD "first_bad"

/* plan: {run, dry_run, plan} */
#define CTL_F_DRY_RUN "dry_run"
#define CTL_F_PLAN "plan"

/* One run of a status reply. Strings are borrowed: from the coordinator's run when encoding,
 * from the decoded document when decoding (valid while it lives). */
typedef struct {
    const char *id, *name, *state, *reason;
    int64_t step, total_steps, generation, checkpoint_step, lease;
    double loss;
    bool has_loss; /* decode: the document carried a number */
    int workers;
} ctl_run_status_t;

/* The JSON object of one run status (NULL when out of memory). */
json_t *ctl_run_status_encode(const ctl_run_status_t *s);
/* Reads one run status: a missing or mistyped field reads as "" / 0 (has_loss false). */
void ctl_run_status_decode(const json_t *obj, ctl_run_status_t *out);

/* A verify reply (strings borrowed as above). */
typedef struct {
    const char *run, *reason;
    uint64_t entries, first_bad; /* first_bad: seq of the first broken entry, 0 = none */
    bool ok;                     /* the chain is intact */
} ctl_verify_t;

json_t *ctl_verify_encode(const ctl_verify_t *v);
/* SHOAL_ERR_FORMAT when a field is missing or of the wrong type. */
shoal_err_t ctl_verify_decode(const json_t *doc, ctl_verify_t *out);

#endif
