/* daemon_handover.c: a worker leaving its plan (an operator's drain, a preemption's SIGTERM with
 * grace) hands its cell's state to the worker taking the cell, at the plan's boundary, so that
 * nothing is recomputed: no rollback to a checkpoint. The two meet on a 2-rank comm of the new
 * plan's generation (group CELL_GROUP_HANDOVER; rank 0 gives, rank 1 takes): a header (the step
 * the giver's state is after, its size), then the packed state, then the taker's one-byte
 * answer. Either side's session aborts its wait (a newer plan; for the taker also a stop), and
 * the side that aborts gives the comm up (comm_give_up), which ends the other side's wait at
 * once rather than after its comm timeout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "daemon_int.h"
#include "log.h"

enum { S_GIVER = 0, S_TAKER = 1 };

static int s_stall_ms, s_take_stall_ms; /* test builds only: daemon_set_handover_*stall_ms */

void daemon_set_handover_stall_ms(int ms)
{
    s_stall_ms = ms;
}

void daemon_set_handover_take_stall_ms(int ms)
{
    s_take_stall_ms = ms;
}

/* Test builds only: waits `ms` after the header unless the session aborts c meanwhile (as a
 * giver or taker that hangs mid-way, but still hears its own session). */
static void s_stall(comm_t *c, int ms, const char *what)
{
    log_warn("hand-over: stalling %d ms after the header (%s)", ms, what);
    for (const int64_t end = clock_mono_ms() + ms; clock_mono_ms() < end && !comm_is_aborted(c);)
        clock_sleep_ms(20);
}

/* After a failed hand-over op: when this side aborted (its session), tell the other side
 * (comm_give_up) so that it stops waiting now. True when the other side gave up. */
static int s_after_abort(comm_t *c, shoal_err_t rc)
{
    if (rc != SHOAL_ERR_ABORTED || !c)
        return 0;
    if (comm_given_up_by(c) >= 0)
        return 1;
    comm_give_up(c);
    return 0;
}

/* The 2-rank comm between giver and taker. */
static shoal_err_t s_comm(daemon_t *d, const char *giver, const char *taker, int rank,
                          uint64_t gen, int timeout_ms, comm_t **out)
{
    const char *eps[2] = {giver, taker};
    const comm_config_t cfg = {.rank = rank,
                               .nranks = 2,
                               .endpoints = eps,
                               .generation = gen,
                               .group = CELL_GROUP_HANDOVER,
                               .timeout_ms = timeout_ms};
    return comm_new(d->listener, &cfg, out);
}

shoal_err_t daemon_handover_give(daemon_t *d, const char *to, const char *to_key, int64_t step,
                                 uint64_t gen)
{
    /* the taker is in no plan this worker holds: admit and dial it with the key the coordinator
     * sent (the old plan's keys stay admitted as the previous set) */
    if (to_key && to_key[0] &&
        comm_listener_peer_keys(d->listener, &to, &to_key, 1) != SHOAL_OK) {
        log_warn("hand-over to %s: %s", to, shoal_errmsg());
        return SHOAL_ERR_INVALID;
    }
    int timeout_ms = d->cfg.comm_timeout_ms;
    const double since_stop = session_since_stop_s(d->sess);
    if (since_stop >= 0) {
        /* a preemption: keep a second of the grace for the Leave and the exit */
        const int left_ms = (int)((d->cfg.grace_seconds - since_stop - 1.0) * 1000);
        if (left_ms < timeout_ms)
            timeout_ms = left_ms > 100 ? left_ms : 100;
    }
    const int have = d->tr && d->have_state && trainer_next_step(d->tr) == step;
    int64_t hdr[2] = {have ? step : -1, have ? (int64_t)trainer_state_bytes(d->tr) : 0};
    void *buf = have ? malloc((size_t)hdr[1]) : NULL;
    if (have && !buf) {
        hdr[0] = -1;
        hdr[1] = 0;
    }
    comm_t *c = NULL;
    cell_comms_t tracked = {0};
    shoal_err_t rc = s_comm(d, comm_listener_endpoint(d->listener), to, S_GIVER, gen, timeout_ms,
                            &c);
    if (rc == SHOAL_OK) {
        /* A newer plan that starts at or before the taker's first step (this worker is back in
         * the run, or the coordinator re-planned the cell) or the grace's end aborts the wait;
         * a stop does not: a stop is what started it. */
        tracked.all[tracked.n++] = c;
        session_track_comms_on(d->sess, &tracked, gen, step + 1,
                               COMM_WATCH_PLAN | COMM_WATCH_GRACE);
        rc = comm_send(c, S_TAKER, hdr, sizeof hdr, (uint64_t)step);
    }
    if (rc == SHOAL_OK && s_stall_ms > 0)
        s_stall(c, s_stall_ms, "SHOAL_HANDOVER_STALL_MS");
    if (rc == SHOAL_OK && buf) {
        trainer_state_pack(d->tr, buf);
        rc = comm_send(c, S_TAKER, buf, (size_t)hdr[1], (uint64_t)step);
    }
    /* the taker acknowledges (one byte): the state has left before this process may exit */
    uint8_t ack = 0;
    if (rc == SHOAL_OK)
        rc = comm_recv(c, S_TAKER, &ack, 1, (uint64_t)step);
    const int taker_gave_up = s_after_abort(c, rc);
    session_track_comms(d->sess, NULL, 0, 0);
    comm_destroy(&c);
    free(buf);
    if (rc != SHOAL_OK) {
        log_warn("hand-over of the state after step %lld to %s %s: %s", (long long)step, to,
                 taker_gave_up ? "aborted by the taker" : rc == SHOAL_ERR_ABORTED ? "aborted"
                                                                             : "failed",
                 shoal_errmsg());
        return rc;
    }
    if (hdr[0] < 0) {
        log_warn("hand-over to %s: this worker does not hold the state after step %lld (it holds "
                 "%lld): the taker falls back to the checkpoint", to, (long long)step,
                 (long long)(d->tr && d->have_state ? trainer_next_step(d->tr) : -1));
        return shoal_fail(SHOAL_ERR_NOTFOUND, "no state after step %lld to hand over",
                          (long long)step);
    }
    log_info("handed the state after step %lld over to %s (%.1f MiB, generation %llu)",
             (long long)step, to, (double)hdr[1] / (1 << 20), (unsigned long long)gen);
    return SHOAL_OK;
}

shoal_err_t daemon_handover_take(daemon_t *d, int64_t want)
{
    const sess_plan_t *p = d->plan;
    comm_t *c = NULL;
    int64_t hdr[2] = {-1, 0};
    void *buf = NULL;
    const size_t n = trainer_state_bytes(d->tr);
    /* Tracked like the plan's collectives: a newer plan that starts at or before this one (the
     * giver died or stalled mid-way, the coordinator re-planned) or a stop aborts the wait at
     * once instead of after the comm timeout. */
    cell_comms_t tracked = {0};
    log_info("taking the state after step %lld over from %s", (long long)want,
             p->handover_from);
    shoal_err_t rc = s_comm(d, p->handover_from, p->endpoints[p->rank], S_TAKER, p->generation,
                            d->cfg.comm_timeout_ms, &c);
    if (rc == SHOAL_OK) {
        tracked.all[tracked.n++] = c;
        session_track_comms(d->sess, &tracked, p->generation, p->start_step);
        rc = comm_recv(c, S_GIVER, hdr, sizeof hdr, (uint64_t)want);
    }
    const int got_header = rc == SHOAL_OK;
    if (rc == SHOAL_OK && s_take_stall_ms > 0)
        s_stall(c, s_take_stall_ms, "SHOAL_HANDOVER_TAKE_STALL_MS");
    if (rc == SHOAL_OK && (hdr[0] != want || hdr[1] != (int64_t)n))
        rc = shoal_fail(SHOAL_ERR_NOTFOUND, "the leaving worker %s holds %s (want the state after "
                        "step %lld, %zu bytes)", p->handover_from,
                        hdr[0] < 0 ? "no such state" : "another state", (long long)want, n);
    if (rc == SHOAL_OK && !(buf = daemon_state_buffer(d)))
        rc = shoal_fail(SHOAL_ERR_NOMEM, "out of memory for a %zu-byte state", n);
    d->snap_step = -1; /* the buffer carries the handed-over state, not a snapshot */
    if (rc == SHOAL_OK)
        rc = comm_recv(c, S_GIVER, buf, n, (uint64_t)want);
    if (rc == SHOAL_OK)
        rc = trainer_state_unpack(d->tr, buf, n);
    if (rc == SHOAL_OK && trainer_next_step(d->tr) != want)
        rc = shoal_fail(SHOAL_ERR_FORMAT, "the handed-over state is after step %lld, not %lld",
                        (long long)trainer_next_step(d->tr), (long long)want);
    if (got_header && rc != SHOAL_ERR_ABORTED) { /* the giver waits for this answer */
        const uint8_t ack = rc == SHOAL_OK;
        (void)comm_send(c, S_GIVER, &ack, 1, (uint64_t)want);
    }
    if (s_after_abort(c, rc)) { /* not this plan's abort: fall back as for a missing state */
        char why[256];
        snprintf(why, sizeof why, "%s", shoal_errmsg());
        rc = shoal_fail(SHOAL_ERR_STATE, "the leaving worker %s gave the hand-over up (%s)",
                        p->handover_from, why);
    }
    session_track_comms(d->sess, NULL, 0, 0);
    comm_destroy(&c);
    if (rc == SHOAL_OK)
        log_info("took the state after step %lld over from %s (%.1f MiB)", (long long)want,
                 p->handover_from, (double)n / (1 << 20));
    return rc;
}
