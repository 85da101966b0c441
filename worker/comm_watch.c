/* comm_watch.c: the comms a newer plan, a stop or the grace's end aborts (comm_watch.h). */
#include "comm_watch.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

void comm_watch_init(comm_watch_t *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
}

void comm_watch_fini(comm_watch_t *w)
{
    pthread_mutex_destroy(&w->mu);
}

/* Whether tracked comms are in flight and `cause` aborts them. */
static int s_armed(const comm_watch_t *w, unsigned cause)
{
    return w->comms && w->step > 0 && (w->causes & cause);
}

/* Whether a plan of generation `gen` starting at `start` makes the tracked comms pointless. */
static int s_plan_hits(const comm_watch_t *w, uint64_t gen, int64_t start)
{
    return s_armed(w, COMM_WATCH_PLAN) && w->gen < gen && start <= w->step;
}

static void s_abort(comm_watch_t *w, const char *why)
{
    log_info("session: aborting the collective of step %lld (generation %llu): %s",
             (long long)w->step, (unsigned long long)w->gen, why);
    cell_comms_abort(w->comms);
}

int comm_watch_track(comm_watch_t *w, cell_comms_t *c, uint64_t gen, int64_t step,
                     unsigned causes)
{
    pthread_mutex_lock(&w->mu);
    w->comms = c;
    w->gen = gen;
    w->step = c ? step : 0;
    w->causes = causes;
    /* what arrived between the comms' creation and now: the session thread found nothing
     * tracked to abort then */
    char why[160] = "";
    if (w->plan_gen && s_plan_hits(w, w->plan_gen, w->plan_start))
        snprintf(why, sizeof why, "a newer plan (generation %llu, start step %lld) came before "
                 "it started", (unsigned long long)w->plan_gen, (long long)w->plan_start);
    else if (w->stopped && s_armed(w, COMM_WATCH_STOP) && gen <= w->stop_gen)
        snprintf(why, sizeof why, "the run was stopped before it started");
    if (why[0])
        s_abort(w, why);
    pthread_mutex_unlock(&w->mu);
    return why[0] != 0;
}

int comm_watch_plan(comm_watch_t *w, uint64_t gen, int64_t start, const char *why)
{
    pthread_mutex_lock(&w->mu);
    w->plan_gen = gen;
    w->plan_start = start;
    w->stopped = 0;
    const int hit = s_plan_hits(w, gen, start);
    if (hit)
        s_abort(w, why);
    pthread_mutex_unlock(&w->mu);
    return hit;
}

int comm_watch_stop(comm_watch_t *w, unsigned cause, const char *why)
{
    pthread_mutex_lock(&w->mu);
    if (cause & COMM_WATCH_STOP) {
        w->stopped = 1;
        w->stop_gen = w->plan_gen;
    }
    const int hit = s_armed(w, cause);
    if (hit)
        s_abort(w, why);
    pthread_mutex_unlock(&w->mu);
    return hit;
}
