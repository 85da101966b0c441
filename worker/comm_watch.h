/* comm_watch.h: which of the training thread's comms a newer plan, a stop or the end of a
 * SIGTERM grace aborts. The comms in use (with their generation and the step whose
 * collectives, or whose state transfer, they carry) and the newest plan and stop the session
 * has seen are kept under one lock: comms tracked after a newer plan (or a stop) arrived are
 * aborted as they are tracked, not left to run into their timeout. Thread-safe. */
#ifndef SHOAL_WORKER_COMM_WATCH_H
#define SHOAL_WORKER_COMM_WATCH_H

#include <pthread.h>
#include <stdint.h>

#include "cell_comms.h"

/* What aborts tracked comms (comm_watch_track's `causes`, a mask). */
enum {
    COMM_WATCH_PLAN = 1,  /* a plan of a newer generation starting at or before their step */
    COMM_WATCH_STOP = 2,  /* the run stopped (or this worker holds no run any more) */
    COMM_WATCH_GRACE = 4, /* the SIGTERM grace period is ending */
    COMM_WATCH_ALL = 7
};

typedef struct {
    pthread_mutex_t mu;
    cell_comms_t *comms; /* tracked (NULL: none) */
    uint64_t gen;
    int64_t step; /* 0: nothing in flight, nothing to abort */
    unsigned causes;
    /* the newest plan seen (0: none yet) and a stop seen since it */
    uint64_t plan_gen;
    int64_t plan_start;
    int stopped;
    uint64_t stop_gen; /* the plan generation the stop was for */
} comm_watch_t;

void comm_watch_init(comm_watch_t *w);
void comm_watch_fini(comm_watch_t *w);

/* Tracks `c` (NULL: none; call with NULL before destroying them), of plan generation `gen`,
 * carrying step `step` (0: nothing in flight). When a plan or stop that `causes` names was
 * already seen and applies to them, they are aborted now; returns 1 then (logged), else 0. */
int comm_watch_track(comm_watch_t *w, cell_comms_t *c, uint64_t gen, int64_t step,
                     unsigned causes);

/* The session accepted a plan: `gen` starting at `start` (it replaces the last one seen and
 * clears a stop). Aborts tracked comms of an older generation whose step is at or after
 * `start`. Returns 1 when it aborted them (logged with `why`). */
int comm_watch_plan(comm_watch_t *w, uint64_t gen, int64_t start, const char *why);

/* A stop (COMM_WATCH_STOP: also recorded until the next plan, for comms of the generations
 * seen so far tracked later) or the grace's end (COMM_WATCH_GRACE): aborts tracked comms in
 * flight that take that cause. Returns 1 when it aborted them (logged with `why`). */
int comm_watch_stop(comm_watch_t *w, unsigned cause, const char *why);

#endif
