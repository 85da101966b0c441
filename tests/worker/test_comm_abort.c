/* test_comm_abort: ending a peer's wait at once, and aborting comms tracked after the news.
 * - comm_give_up: real forked ranks on 127.0.0.1; a rank that gives a comm up ends the other
 *   rank's wait at once (SHOAL_ERR_ABORTED naming it), also when the frame arrives before the
 *   other rank created that comm (held); a plain comm_abort tells nobody (the peer times out).
 * - comm_watch (the session's abort of the training thread's comms): a newer plan or a stop
 *   seen before the comms are tracked aborts them as they are tracked (the race of a plan
 *   arriving between a comm's creation and its tracking); the giver's causes leave out stops. */

/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "comm_watch.h"
#include "test_comm_lib.h"

#define WAIT_MS 10000 /* far above how long a give-up takes to arrive */

static const int s_both[2] = {0, 1};

/* Rank 1 gives the comm up 300 ms into rank 0's receive. */
static void s_rank_give_up_mid_wait(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm_group(ctx, 1, 1, s_both, 2, WAIT_MS);
    if (ctx->rank == 1) {
        usleep(300 * 1000);
        comm_give_up(c);
        ct_rec(res, SHOAL_OK, comm_is_aborted(c) && comm_given_up_by(c) == -1, 0, 0);
        char buf[8] = "";
        ct_rec(res, SHOAL_OK, comm_send(c, 0, buf, sizeof buf, 7) == SHOAL_ERR_ABORTED, 0, 0);
    } else {
        char buf[8];
        const double t0 = ct_ms();
        const int rc = comm_recv(c, 1, buf, sizeof buf, 7);
        const int named = strstr(shoal_errmsg(), "rank 1 gave the comm up") != NULL;
        ct_rec(res, rc == SHOAL_ERR_ABORTED ? SHOAL_OK : rc,
               rc == SHOAL_ERR_ABORTED && comm_given_up_by(c) == 1 && named, 0, ct_ms() - t0);
        /* every later op fails the same way */
        ct_rec(res, SHOAL_OK, comm_send(c, 1, buf, sizeof buf, 7) == SHOAL_ERR_ABORTED, 0, 0);
    }
    comm_destroy(&c);
}

static void test_give_up_ends_the_peers_wait(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_all(2, s_rank_give_up_mid_wait, NULL, res);
}

/* Rank 1 gives up group 1 at once, then sends on group 2; rank 0 receives on group 2 first (the
 * give-up of group 1, whose comm it has not created, is held), then creates group 1: its first
 * op fails at once. */
static void s_rank_give_up_held(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    char buf[8] = "2";
    if (ctx->rank == 1) {
        comm_t *c1 = ct_comm_group(ctx, 1, 1, s_both, 2, WAIT_MS);
        comm_t *c2 = ct_comm_group(ctx, 1, 2, s_both, 2, WAIT_MS);
        comm_give_up(c1);
        comm_destroy(&c1);
        const int rc = comm_send(c2, 0, buf, sizeof buf, 1);
        ct_rec(res, rc, rc == SHOAL_OK, 0, 0);
        comm_destroy(&c2);
        return;
    }
    comm_t *c2 = ct_comm_group(ctx, 1, 2, s_both, 2, WAIT_MS);
    int rc = comm_recv(c2, 1, buf, sizeof buf, 1);
    ct_rec(res, rc, rc == SHOAL_OK, 0, 0);
    comm_t *c1 = ct_comm_group(ctx, 1, 1, s_both, 2, WAIT_MS);
    rc = comm_recv(c1, 1, buf, sizeof buf, 1);
    ct_rec(res, rc == SHOAL_ERR_ABORTED ? SHOAL_OK : rc,
           rc == SHOAL_ERR_ABORTED && comm_given_up_by(c1) == 1, 0, 0);
    comm_destroy(&c1);
    comm_destroy(&c2);
}

static void test_give_up_before_the_comm_exists(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    bool got[MAX_RANKS];
    int status[MAX_RANKS];
    ct_run_group(2, s_rank_give_up_held, NULL, NULL, NULL, res, got, status);
    assert_true(got[0] && got[1]);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < res[r].nrec; i++) {
            if (!res[r].ok[i])
                fprintf(stderr, "rank %d record %d: rc %d %s\n", r, i, res[r].rc[i],
                        res[r].msg[i]);
            assert_true(res[r].ok[i]);
        }
    assert_int_equal(res[0].nrec, 2);
}

/* A plain comm_abort tells the peer nothing: its receive runs into the timeout. */
static void s_rank_abort_silent(rank_ctx_t *ctx, result_t *res, void *arg)
{
    (void)arg;
    comm_t *c = ct_comm_group(ctx, 1, 1, s_both, 2, 400);
    if (ctx->rank == 1) {
        comm_abort(c);
        ct_rec(res, SHOAL_OK, 1, 0, 0);
    } else {
        char buf[8];
        const int rc = comm_recv(c, 1, buf, sizeof buf, 1);
        ct_rec(res, rc == SHOAL_ERR_TIMEOUT ? SHOAL_OK : rc,
               rc == SHOAL_ERR_TIMEOUT && comm_given_up_by(c) == -1, 0, 0);
    }
    comm_destroy(&c);
}

static void test_abort_alone_tells_nobody(void **state)
{
    (void)state;
    result_t res[MAX_RANKS];
    ct_run_all(2, s_rank_abort_silent, NULL, res);
}

/* ---- comm_watch: one process, comms whose peer never answers -------------------------------- */

typedef struct {
    comm_listener_t *l;
    comm_t *c;
    cell_comms_t cc;
    uint32_t group;
} watch_fixture_t;

/* A fresh 2-rank comm (generation 1, the next group) whose rank 1 is nobody listening. */
static void s_fresh_comm(watch_fixture_t *f, int timeout_ms)
{
    if (f->c) {
        comm_destroy(&f->c);
    }
    const char *eps[2] = {comm_listener_endpoint(f->l), "tcp://127.0.0.1:9"};
    const comm_config_t cfg = {.rank = 0, .nranks = 2, .endpoints = eps, .generation = 1,
                               .group = ++f->group, .timeout_ms = timeout_ms};
    assert_int_equal(comm_new(f->l, &cfg, &f->c), SHOAL_OK);
    memset(&f->cc, 0, sizeof f->cc);
    f->cc.all[f->cc.n++] = f->c;
}

static int s_watch_setup(void **state)
{
    static watch_fixture_t f;
    memset(&f, 0, sizeof f);
    assert_int_equal(comm_listener_new("tcp://127.0.0.1:0", &f.l), SHOAL_OK);
    *state = &f;
    return 0;
}

static int s_watch_teardown(void **state)
{
    watch_fixture_t *f = *state;
    comm_destroy(&f->c);
    comm_listener_destroy(&f->l);
    return 0;
}

/* The race: plan 2 arrives after plan 1's comm was made but before it is tracked. Tracking
 * aborts it, and its receive fails at once instead of after the 5 s timeout. */
static void test_watch_plan_before_track(void **state)
{
    watch_fixture_t *f = *state;
    comm_watch_t w;
    comm_watch_init(&w);
    assert_int_equal(comm_watch_plan(&w, 1, 1, "plan 1"), 0);
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_plan(&w, 2, 5, "plan 2"), 0); /* nothing tracked yet */
    assert_int_equal(comm_watch_track(&w, &f->cc, 1, 5, COMM_WATCH_ALL), 1);
    char buf[8];
    assert_int_equal(comm_recv(f->c, 1, buf, sizeof buf, 5), SHOAL_ERR_ABORTED);
    assert_int_equal(comm_given_up_by(f->c), -1);
    comm_watch_track(&w, NULL, 0, 0, 0);
    comm_watch_fini(&w);
}

/* What does not abort: the same generation, a newer plan starting after the step, nothing in
 * flight; and the abort of comms tracked before the plan, as before. */
static void test_watch_plan_rules(void **state)
{
    watch_fixture_t *f = *state;
    comm_watch_t w;
    comm_watch_init(&w);
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_plan(&w, 1, 1, "plan 1"), 0);
    assert_int_equal(comm_watch_track(&w, &f->cc, 1, 4, COMM_WATCH_ALL), 0);
    assert_int_equal(comm_watch_plan(&w, 1, 1, "plan 1 again"), 0);
    assert_int_equal(comm_watch_plan(&w, 2, 6, "plan 2 at step 6"), 0);
    assert_int_equal(comm_watch_track(&w, &f->cc, 1, 5, COMM_WATCH_ALL), 0);
    assert_int_equal(comm_watch_track(&w, &f->cc, 1, 0, COMM_WATCH_ALL), 0);
    assert_false(comm_is_aborted(f->c));
    assert_int_equal(comm_watch_track(&w, &f->cc, 1, 6, COMM_WATCH_ALL), 1); /* plan 2 seen */
    assert_true(comm_is_aborted(f->c));
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_track(&w, &f->cc, 2, 6, COMM_WATCH_ALL), 0);
    assert_int_equal(comm_watch_plan(&w, 3, 6, "plan 3"), 1); /* tracked, then the plan */
    assert_true(comm_is_aborted(f->c));
    comm_watch_track(&w, NULL, 0, 0, 0);
    comm_watch_fini(&w);
}

/* A stop before tracking aborts comms of the generations seen; the next plan clears it. A
 * giver's comm (plan and grace only) outlives stops but not a newer plan or the grace. */
static void test_watch_stops_and_causes(void **state)
{
    watch_fixture_t *f = *state;
    comm_watch_t w;
    comm_watch_init(&w);
    assert_int_equal(comm_watch_plan(&w, 3, 1, "plan 3"), 0);
    assert_int_equal(comm_watch_stop(&w, COMM_WATCH_STOP, "stop"), 0);
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_track(&w, &f->cc, 3, 2, COMM_WATCH_ALL), 1);
    assert_true(comm_is_aborted(f->c));
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_track(&w, &f->cc, 4, 2, COMM_WATCH_ALL), 0); /* newer than it */
    assert_int_equal(comm_watch_plan(&w, 5, 10, "plan 5"), 0);
    assert_int_equal(comm_watch_track(&w, &f->cc, 3, 2, COMM_WATCH_ALL), 0); /* stop cleared */
    assert_false(comm_is_aborted(f->c));
    /* the giver: tracked under a generation newer than its own plans */
    const unsigned giver = COMM_WATCH_PLAN | COMM_WATCH_GRACE;
    assert_int_equal(comm_watch_track(&w, &f->cc, 6, 11, giver), 0);
    assert_int_equal(comm_watch_stop(&w, COMM_WATCH_STOP, "stop"), 0);
    assert_int_equal(comm_watch_track(&w, &f->cc, 6, 11, giver), 0);
    assert_false(comm_is_aborted(f->c));
    assert_int_equal(comm_watch_plan(&w, 7, 11, "plan 7"), 1);
    assert_true(comm_is_aborted(f->c));
    s_fresh_comm(f, 5000);
    assert_int_equal(comm_watch_track(&w, &f->cc, 7, 11, giver), 0);
    assert_int_equal(comm_watch_stop(&w, COMM_WATCH_GRACE, "grace"), 1);
    assert_true(comm_is_aborted(f->c));
    comm_watch_track(&w, NULL, 0, 0, 0);
    comm_watch_fini(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_give_up_ends_the_peers_wait),
        cmocka_unit_test(test_give_up_before_the_comm_exists),
        cmocka_unit_test(test_abort_alone_tells_nobody),
        cmocka_unit_test_setup_teardown(test_watch_plan_before_track, s_watch_setup,
                                        s_watch_teardown),
        cmocka_unit_test_setup_teardown(test_watch_plan_rules, s_watch_setup, s_watch_teardown),
        cmocka_unit_test_setup_teardown(test_watch_stops_and_causes, s_watch_setup,
                                        s_watch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
