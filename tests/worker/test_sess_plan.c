/* test_sess_plan: the worker's protobuf edge (sess_plan_from_assignment): a valid data-parallel
 * assignment converted field by field, each refusal reason with its message, and the same plan
 * after a round trip through wire_pack / wire_decode. */
/* cmocka needs these first, in this order */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "sess_plan.h"
#include "wire.h"

#define S_PEERS 3

/* An Assignment envelope built on the stack: every protobuf part it points to lives here. */
typedef struct {
    Shoal__Envelope env;
    Shoal__Assignment a;
    Shoal__Plan plan;
    Shoal__Topology topo;
    Shoal__CheckpointRef ckpt;
    Shoal__StageLayers stage;
    Shoal__StageLayers *stage_ptrs[1];
    Shoal__Cell cell, peer_cells[S_PEERS];
    Shoal__Peer peers[S_PEERS];
    Shoal__Peer *peer_ptrs[S_PEERS];
    char ids[S_PEERS][16], endpoints[S_PEERS][32];
} s_msg_t;

/* A dp=3 plan of run r1, generation 7, starting at step 5 from the peer of rank 0; this
 * worker ("w1") is rank 1. */
static void s_msg_init(s_msg_t *m)
{
    memset(m, 0, sizeof *m);
    wire_envelope_init(&m->env, SHOAL__MSG_TYPE__MSG_ASSIGNMENT, "r1", "coordinator", 7, 42);
    shoal__assignment__init(&m->a);
    shoal__plan__init(&m->plan);
    shoal__topology__init(&m->topo);
    shoal__checkpoint_ref__init(&m->ckpt);
    shoal__cell__init(&m->cell);
    m->topo.dp = S_PEERS;
    m->topo.pp = 1;
    m->topo.ep = 1;
    for (int i = 0; i < S_PEERS; i++) {
        snprintf(m->ids[i], sizeof m->ids[i], "w%d", i);
        snprintf(m->endpoints[i], sizeof m->endpoints[i], "tcp://127.0.0.1:%d", 7500 + i);
        shoal__cell__init(&m->peer_cells[i]);
        m->peer_cells[i].replica = (uint32_t)i;
        shoal__peer__init(&m->peers[i]);
        m->peers[i].worker_id = m->ids[i];
        m->peers[i].rank = (uint32_t)i;
        m->peers[i].cell = &m->peer_cells[i];
        m->peers[i].data_endpoint = m->endpoints[i];
        m->peer_ptrs[i] = &m->peers[i];
    }
    m->plan.run_id = "r1";
    m->plan.generation = 7;
    m->plan.topology = &m->topo;
    m->plan.n_peers = S_PEERS;
    m->plan.peers = m->peer_ptrs;
    m->plan.start_step = 5;
    shoal__stage_layers__init(&m->stage);
    m->stage.n_layers = 2;
    m->stage.has_embedding = m->stage.has_head = 1;
    m->stage_ptrs[0] = &m->stage;
    m->plan.n_stages = 1;
    m->plan.stages = m->stage_ptrs;
    m->plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_PEER;
    m->plan.source_rank = 0;
    m->cell.replica = 1;
    m->a.plan = &m->plan;
    m->a.run_name = "tiny";
    m->a.spec_yaml = "name: tiny\n";
    m->a.cell = &m->cell;
    m->a.rank = 1;
    m->a.lease = 9;
    m->env.body_case = SHOAL__ENVELOPE__BODY_ASSIGNMENT;
    m->env.assignment = &m->a;
}

static void s_check_plan(const sess_plan_t *p)
{
    assert_string_equal(p->run_id, "r1");
    assert_string_equal(p->run_name, "tiny");
    assert_int_equal(p->generation, 7);
    assert_int_equal(p->dp, S_PEERS);
    assert_int_equal(p->pp, 1);
    assert_int_equal(p->ep, 1);
    assert_int_equal(p->start_step, 5);
    assert_int_equal(p->source, SESS_SOURCE_PEER);
    assert_int_equal(p->source_rank, 0);
    assert_int_equal(p->rank, 1);
    assert_int_equal(p->nranks, S_PEERS);
    assert_int_equal(p->replica, 1);
    assert_int_equal(p->stage, 0);
    assert_int_equal(p->ep_rank, 0);
    assert_int_equal(p->lease, 9);
    assert_string_equal(p->spec_yaml, "name: tiny\n");
    assert_non_null(p->endpoints);
    for (int i = 0; i < S_PEERS; i++) {
        char want[32];
        snprintf(want, sizeof want, "tcp://127.0.0.1:%d", 7500 + i);
        assert_string_equal(p->endpoints[i], want);
    }
}

static void test_valid_dp(void **state)
{
    (void)state;
    s_msg_t m;
    s_msg_init(&m);
    sess_plan_t *p = NULL;
    const char *why = "unset";
    assert_int_equal(sess_plan_from_assignment(&m.env, "w1", &p, &why), SHOAL_OK);
    assert_null(why);
    assert_non_null(p);
    s_check_plan(p);
    sess_plan_destroy(&p);
    assert_null(p);
    sess_plan_destroy(&p); /* idempotent */

    /* a checkpoint source carries the checkpoint of start_step - 1 */
    m.plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT;
    m.ckpt.step = 4;
    m.ckpt.path = "/ckpt/r1/step-00000004";
    m.plan.checkpoint = &m.ckpt;
    assert_int_equal(sess_plan_from_assignment(&m.env, "w1", &p, &why), SHOAL_OK);
    assert_int_equal(p->source, SESS_SOURCE_CHECKPOINT);
    assert_int_equal(p->ckpt_step, 4);
    assert_string_equal(p->ckpt_path, "/ckpt/r1/step-00000004");
    sess_plan_destroy(&p);

    /* one worker alone, fresh */
    s_msg_init(&m);
    m.topo.dp = 1;
    m.plan.n_peers = 1;
    m.plan.start_step = 1;
    m.plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_INIT;
    m.a.rank = 0;
    m.cell.replica = 1; /* outside dp 1 */
    assert_int_equal(sess_plan_from_assignment(&m.env, "w0", &p, &why), SHOAL_ERR_INVALID);
    assert_string_equal(why, "the assignment's cell is outside the topology");
    m.cell.replica = 0;
    assert_int_equal(sess_plan_from_assignment(&m.env, "w0", &p, &why), SHOAL_OK);
    assert_int_equal(p->first_layer, 0);
    assert_int_equal(p->n_layers, 2);
    assert_true(p->has_embedding && p->has_head);
    assert_int_equal(p->nranks, 1);
    assert_int_equal(p->source, SESS_SOURCE_INIT);
    sess_plan_destroy(&p);
}

/* Refuses `m` for worker `self` with a reason containing `reason`; no plan comes out. */
static void s_expect_refused(const s_msg_t *m, const char *self, const char *reason)
{
    sess_plan_t *p = (sess_plan_t *)&p; /* not NULL: the call must clear it */
    const char *why = NULL;
    assert_int_equal(sess_plan_from_assignment(&m->env, self, &p, &why), SHOAL_ERR_INVALID);
    assert_null(p);
    assert_non_null(why);
    if (!strstr(why, reason))
        fail_msg("refused for '%s', expected '%s'", why, reason);
    assert_non_null(strstr(shoal_errmsg(), why));
}

static void test_refusals(void **state)
{
    (void)state;
    s_msg_t m;

    s_msg_init(&m);
    m.env.body_case = SHOAL__ENVELOPE__BODY_HEARTBEAT;
    s_expect_refused(&m, "w1", "not an assignment");

    s_msg_init(&m);
    m.a.plan = NULL;
    s_expect_refused(&m, "w1", "no plan or topology");
    s_msg_init(&m);
    m.plan.topology = NULL;
    s_expect_refused(&m, "w1", "no plan or topology");

    s_msg_init(&m);
    m.plan.run_id = "r2";
    s_expect_refused(&m, "w1", "run id differs");
    s_msg_init(&m);
    m.plan.run_id = "";
    m.env.run_id = "";
    s_expect_refused(&m, "w1", "run id differs");

    /* bounds: rank and peer count */
    s_msg_init(&m);
    m.a.rank = S_PEERS;
    s_expect_refused(&m, "w1", "rank outside the plan's peers");
    s_msg_init(&m);
    m.plan.n_peers = 0;
    s_expect_refused(&m, "w1", "rank outside the plan's peers");
    s_msg_init(&m);
    m.plan.n_peers = COMM_MAX_RANKS + 1;
    s_expect_refused(&m, "w1", "rank outside the plan's peers");

    s_msg_init(&m);
    m.plan.start_step = 0;
    s_expect_refused(&m, "w1", "start_step < 1");
    s_msg_init(&m);
    m.plan.start_step = -3;
    s_expect_refused(&m, "w1", "start_step < 1");

    s_msg_init(&m);
    m.plan.source = (Shoal__StateSource)3;
    s_expect_refused(&m, "w1", "unknown state source");

    /* checkpoint source without the right checkpoint */
    s_msg_init(&m);
    m.plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT;
    s_expect_refused(&m, "w1", "without the checkpoint of start_step - 1");
    m.ckpt.step = 5; /* start_step itself, not start_step - 1 */
    m.ckpt.path = "/ckpt/r1/step-00000005";
    m.plan.checkpoint = &m.ckpt;
    s_expect_refused(&m, "w1", "without the checkpoint of start_step - 1");

    s_msg_init(&m);
    m.plan.source_rank = S_PEERS;
    s_expect_refused(&m, "w1", "source_rank outside the plan's peers");

    s_msg_init(&m);
    m.a.spec_yaml = "";
    s_expect_refused(&m, "w1", "empty run spec");

    s_msg_init(&m);
    m.topo.pp = 2;
    s_expect_refused(&m, "w1", "dp*pp*ep differs");

    s_msg_init(&m);
    m.peers[2].rank = 1;
    s_expect_refused(&m, "w1", "peers not ordered by rank");
    s_msg_init(&m);
    m.peers[0].data_endpoint = "";
    s_expect_refused(&m, "w1", "without a data endpoint");
    s_msg_init(&m);
    m.peer_ptrs[1] = NULL;
    s_expect_refused(&m, "w1", "peers not ordered by rank");

    /* self not in the plan, or at another rank */
    s_msg_init(&m);
    s_expect_refused(&m, "w9", "belongs to another worker");
    s_expect_refused(&m, "w2", "belongs to another worker");
    s_expect_refused(&m, "", "belongs to another worker");
    s_expect_refused(&m, NULL, "belongs to another worker");
}

typedef struct {
    const char *self;
    shoal_err_t rc;
    sess_plan_t *plan;
    const char *why;
} s_decoded_t;

static void s_on_decoded(const Shoal__Envelope *env, void *ctx)
{
    s_decoded_t *d = ctx;
    d->rc = sess_plan_from_assignment(env, d->self, &d->plan, &d->why);
}

static void test_round_trip(void **state)
{
    (void)state;
    s_msg_t m;
    s_msg_init(&m);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(wire_pack(&m.env, &buf, &len), SHOAL_OK);
    s_decoded_t d = {.self = "w1", .rc = SHOAL_ERR_STATE};
    assert_int_equal(wire_decode(buf, len, s_on_decoded, &d), SHOAL_OK);
    assert_int_equal(d.rc, SHOAL_OK);
    assert_null(d.why);
    s_check_plan(d.plan); /* the plan owns copies: the envelope is freed by now */
    sess_plan_destroy(&d.plan);

    /* another worker decoding the same bytes refuses them */
    d = (s_decoded_t){.self = "w0", .rc = SHOAL_OK};
    assert_int_equal(wire_decode(buf, len, s_on_decoded, &d), SHOAL_OK);
    assert_int_equal(d.rc, SHOAL_ERR_INVALID);
    assert_null(d.plan);
    assert_non_null(strstr(d.why, "another worker"));
    free(buf);

    /* a refused plan survives the wire unchanged: still refused, for the same reason */
    s_msg_init(&m);
    m.plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT;
    assert_int_equal(wire_pack(&m.env, &buf, &len), SHOAL_OK);
    d = (s_decoded_t){.self = "w1", .rc = SHOAL_OK};
    assert_int_equal(wire_decode(buf, len, s_on_decoded, &d), SHOAL_OK);
    assert_int_equal(d.rc, SHOAL_ERR_INVALID);
    assert_non_null(strstr(d.why, "checkpoint of start_step - 1"));
    free(buf);
}

/* A hand-over in the plan reaches only the cell it names, and only with a PEER source. */
static void test_handover(void **state)
{
    (void)state;
    s_msg_t m;
    s_msg_init(&m);
    Shoal__Handover h[2] = {SHOAL__HANDOVER__INIT, SHOAL__HANDOVER__INIT};
    Shoal__Handover *hp[2] = {&h[0], &h[1]};
    h[0].to_rank = 2;
    h[0].from_endpoint = "tcp://127.0.0.1:7600";
    h[1].to_rank = 1;
    h[1].from_endpoint = "tcp://127.0.0.1:7601";
    m.plan.handovers = hp;
    m.plan.n_handovers = 2;
    sess_plan_t *p = NULL;
    const char *why = NULL;
    assert_int_equal(sess_plan_from_assignment(&m.env, "w1", &p, &why), SHOAL_OK);
    assert_string_equal(p->handover_from, "tcp://127.0.0.1:7601"); /* rank 1: this worker */
    sess_plan_destroy(&p);
    m.plan.n_handovers = 1; /* only rank 2's */
    assert_int_equal(sess_plan_from_assignment(&m.env, "w1", &p, &why), SHOAL_OK);
    assert_string_equal(p->handover_from, "");
    sess_plan_destroy(&p);
    m.plan.n_handovers = 2; /* a checkpoint plan hands nothing over */
    m.plan.source = SHOAL__STATE_SOURCE__STATE_SOURCE_CHECKPOINT;
    m.ckpt.step = 4;
    m.ckpt.path = "/ckpt";
    m.plan.checkpoint = &m.ckpt;
    assert_int_equal(sess_plan_from_assignment(&m.env, "w1", &p, &why), SHOAL_OK);
    assert_string_equal(p->handover_from, "");
    sess_plan_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_dp),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_handover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
