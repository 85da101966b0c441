/* test_plan: the planner (coordinator/plan_place.c, plan_cost.c): stage balance by FLOPs,
 * memory that forces more stages, locality over hosts and institutions, spares, determinism
 * under shuffled input, refusals that say why, and re-plans that keep state where it is
 * (plan_keep.c). Fast: no coordinator, no I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_reply.h"
#include "plan.h"

static model_config_t s_model;

/* tiny (4 layers: 1 dense, 3 MoE of 8 experts), 8 sequences of 64 tokens, micro-batches of 1 */
static plan_request_t s_req(uint32_t pp, uint32_t ep, uint32_t dp)
{
    model_config_tiny(&s_model);
    return (plan_request_t){.pp = pp, .ep = ep, .dp = dp, .model = &s_model, .seq_len = 64,
                            .micro_batch = 1, .global_batch = 8};
}

#define S_MAX_W 16
static char s_ids[S_MAX_W][12], s_eps[S_MAX_W][32];

/* n workers w1..wn; host and institution from the strings (NULL: ""), memory for all */
static void s_workers(plan_worker_t *w, uint32_t n, const char *const *hosts,
                      const char *const *insts, uint64_t memory)
{
    for (uint32_t i = 0; i < n; i++) {
        snprintf(s_ids[i], sizeof s_ids[i], "w%u", i + 1);
        snprintf(s_eps[i], sizeof s_eps[i], "tcp://h:%u", 7000 + i);
        w[i] = (plan_worker_t){.worker_id = s_ids[i], .endpoint = s_eps[i],
                               .host = hosts ? hosts[i] : NULL,
                               .institution = insts ? insts[i] : NULL, .memory_bytes = memory};
    }
}

static double s_stage_cost(const plan_t *p, uint32_t s, uint32_t T)
{
    double c = 0;
    for (uint32_t l = p->stages[s].first_layer; l < p->stages[s].first_layer + p->stages[s].n_layers;
         l++)
        c += plan_layer_flops(&s_model, l, T);
    if (p->stages[s].has_embedding)
        c += plan_embed_flops(&s_model);
    if (p->stages[s].has_head)
        c += plan_head_flops(&s_model);
    return c;
}

/* The split minimises the costliest stage: no other split of 2 stages does better; a large
 * head (vocab) pushes layers off the last stage. */
static void test_stage_balance(void **state)
{
    (void)state;
    plan_request_t q = s_req(2, 1, 0);
    /* a dense layer (3·f·d weights) and an MoE layer (router, shared, K of N experts) differ */
    assert_true(plan_layer_flops(&s_model, 0, 64) != plan_layer_flops(&s_model, 1, 64));
    assert_true(plan_layer_flops(&s_model, 1, 64) == plan_layer_flops(&s_model, 2, 64));
    plan_t p = {0};
    for (int big_head = 0; big_head < 2; big_head++) {
        s_model.vocab_size = big_head ? 8192 : 256;
        assert_int_equal(plan_layout(&p, 1, 2, 1, 4, 8), SHOAL_OK);
        assert_int_equal(plan_balance_stages(&p, &s_model, 64), SHOAL_OK);
        assert_int_equal(p.stages[0].first_layer, 0);
        assert_int_equal(p.stages[0].n_layers + p.stages[1].n_layers, 4);
        assert_int_equal(p.stages[1].first_layer, p.stages[0].n_layers);
        assert_true(p.stages[0].has_embedding && p.stages[1].has_head);
        double worst = s_stage_cost(&p, 0, 64) > s_stage_cost(&p, 1, 64) ? s_stage_cost(&p, 0, 64)
                                                                         : s_stage_cost(&p, 1, 64);
        for (uint32_t cut = 1; cut < 4; cut++) {
            plan_stage_t keep[2] = {p.stages[0], p.stages[1]};
            p.stages[0].n_layers = cut;
            p.stages[1] = (plan_stage_t){cut, 4 - cut, 0, 1};
            double a = s_stage_cost(&p, 0, 64), b = s_stage_cost(&p, 1, 64);
            assert_true((a > b ? a : b) >= worst);
            p.stages[0] = keep[0];
            p.stages[1] = keep[1];
        }
        if (big_head)
            assert_int_equal(p.stages[1].n_layers, 1); /* the head alone outweighs layers */
    }
    /* every stage gets a layer even when one layer dominates */
    s_model.vocab_size = 256;
    assert_int_equal(plan_layout(&p, 1, 4, 1, 4, 8), SHOAL_OK);
    assert_int_equal(plan_balance_stages(&p, &s_model, 64), SHOAL_OK);
    for (uint32_t s = 0; s < 4; s++)
        assert_int_equal(p.stages[s].n_layers, 1);
    (void)q;
    plan_fini(&p);
}

/* Memory: the estimate counts parameters x 16 plus activations; a limit below one stage's cell
 * raises pp to the smallest that fits (said in the note); no pp fitting is refused, naming the
 * worker, the cell and the bytes. */
static void test_memory_forces_stages(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t p = {0};
    plan_request_t q = s_req(1, 1, 1);
    s_workers(w, 4, NULL, NULL, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 1), SHOAL_OK);
    uint64_t whole = p.peers[0].mem_est;
    assert_true(whole > 16u * 1000000u / 10u); /* > 1.6 MB: ~1M parameters x 16 bytes at least */
    assert_string_equal(p.note, "");
    q.pp = 2;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 2), SHOAL_OK);
    uint64_t half = p.peers[0].mem_est > p.peers[1].mem_est ? p.peers[0].mem_est
                                                            : p.peers[1].mem_est;
    assert_true(half < whole);
    /* two workers of `half` bytes: pp 1 (1 replica) does not fit, pp 2 does */
    s_workers(w, 2, NULL, NULL, half);
    q = s_req(1, 1, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 2), SHOAL_OK);
    assert_int_equal(p.pp, 2);
    assert_int_equal(p.dp, 1);
    assert_non_null(strstr(p.note, "pp raised from 1 to 2"));
    assert_non_null(strstr(p.note, "needs"));
    /* nothing fits */
    s_workers(w, 4, NULL, NULL, 1000);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_ERR_STATE);
    assert_non_null(strstr(shoal_errmsg(), "worker w1 declares 1000"));
    assert_non_null(strstr(shoal_errmsg(), "cell (replica 0, stage 0, ep_rank 0) needs"));
    assert_int_equal(p.n_peers, 0);
    plan_fini(&p);
}

static int s_group(const json_t *groups, const char *kind, int r, int s, const char *what)
{
    size_t i;
    const json_t *g;
    json_array_foreach(groups, i, g)
    {
        if (strcmp(json_string_value(json_object_get(g, CTL_F_KIND)), kind) == 0 &&
            json_integer_value(json_object_get(g, CTL_F_REPLICA)) == r &&
            json_integer_value(json_object_get(g, CTL_F_STAGE)) == s)
            return (int)json_integer_value(json_object_get(g, what));
    }
    fail_msg("no %s group (%d, %d)", kind, r, s);
    return -1;
}

/* Locality: an ep group shares a host, a replica an institution, where the workers allow;
 * otherwise the report says which group spans. */
static void test_institutions(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t p = {0};
    /* given interleaved: A has hosts a1, a2 with 2 workers each; B the same */
    const char *hosts[8] = {"b1", "a1", "b2", "a2", "b1", "a1", "b2", "a2"};
    const char *insts[8] = {"B", "A", "B", "A", "B", "A", "B", "A"};
    s_workers(w, 8, hosts, insts, 0);
    plan_request_t q = s_req(2, 2, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(p.n_spares, 0);
    for (uint32_t i = 0; i < p.n_peers; i++) {
        const plan_peer_t *a = &p.peers[i];
        const plan_peer_t *mate = &p.peers[i ^ 1]; /* the other ep rank of the cell's group */
        assert_string_equal(a->site.host, mate->site.host);
        const plan_peer_t *first = &p.peers[plan_rank(&p, (plan_cell_t){a->cell.replica, 0, 0})];
        assert_string_equal(a->site.institution, first->site.institution);
    }
    json_t *j = plan_to_json(&p), *groups = json_object_get(j, CTL_F_GROUPS);
    assert_int_equal(s_group(groups, "ep", 0, 1, CTL_F_HOSTS), 1);
    assert_int_equal(s_group(groups, "pipeline", 1, -1, CTL_F_INSTITUTIONS), 1);
    assert_int_equal(s_group(groups, "dp", -1, 0, CTL_F_INSTITUTIONS), 2);
    json_decref(j);

    /* one group per institution: the only replica spans both, and says so */
    const char *hosts2[4] = {"a1", "b1", "a1", "b1"};
    const char *insts2[4] = {"A", "B", "A", "B"};
    s_workers(w, 4, hosts2, insts2, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_OK);
    j = plan_to_json(&p);
    groups = json_object_get(j, CTL_F_GROUPS);
    assert_int_equal(s_group(groups, "ep", 0, 0, CTL_F_HOSTS), 1);
    assert_int_equal(s_group(groups, "ep", 0, 1, CTL_F_HOSTS), 1);
    assert_int_equal(s_group(groups, "pipeline", 0, -1, CTL_F_INSTITUTIONS), 2);
    json_decref(j);
    plan_fini(&p);
}

/* The same workers in any order give the same plan document. */
static void test_determinism(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W], shuffled[S_MAX_W];
    const char *hosts[7] = {"x", "y", "x", "z", "y", "x", "z"};
    const char *insts[7] = {"I", "J", "I", "J", "J", "I", "J"};
    s_workers(w, 7, hosts, insts, 0);
    w[3].memory_bytes = 1ull << 40;
    plan_request_t q = s_req(2, 2, 0);
    plan_t p = {0};
    assert_int_equal(plan_build(&p, "r", 3, &q, w, 7), SHOAL_OK);
    json_t *j = plan_to_json(&p);
    char *want = json_dumps(j, JSON_SORT_KEYS);
    json_decref(j);
    srand(7);
    for (int round = 0; round < 20; round++) {
        memcpy(shuffled, w, sizeof w);
        for (uint32_t i = 6; i > 0; i--) {
            uint32_t k = (uint32_t)rand() % (i + 1);
            plan_worker_t t = shuffled[i];
            shuffled[i] = shuffled[k];
            shuffled[k] = t;
        }
        assert_int_equal(plan_build(&p, "r", 3, &q, shuffled, 7), SHOAL_OK);
        j = plan_to_json(&p);
        char *got = json_dumps(j, JSON_SORT_KEYS);
        assert_string_equal(got, want);
        free(got);
        json_decref(j);
    }
    free(want);
    plan_fini(&p);
}

/* Workers beyond whole replicas (or a fixed dp) are spares; auto dp keeps dp x ep dividing the
 * step's micro-batches. */
static void test_spares(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t p = {0};
    s_workers(w, 5, NULL, NULL, 0);
    plan_request_t q = s_req(2, 1, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 5), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(p.n_peers, 4);
    assert_int_equal(p.n_spares, 1);
    assert_true(plan_is_spare(&p, p.spares[0].worker_id));
    assert_null(plan_find_worker(&p, p.spares[0].worker_id));
    q.dp = 1;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 5), SHOAL_OK);
    assert_int_equal(p.n_spares, 3);
    /* 8 micro-batches, ep 2: 3 replicas would fit the count, but 3 x 2 does not divide 8 */
    s_workers(w, 6, NULL, NULL, 0);
    q = s_req(1, 2, 0);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 6), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(p.n_spares, 2);
    assert_int_equal(p.n_experts, 2);
    assert_int_equal(p.experts[1].first, 4);
    assert_int_equal(p.experts[1].count, 4);
    /* the JSON keeps the spares */
    plan_t back = {0};
    json_t *j = plan_to_json(&p);
    assert_int_equal(plan_from_json(j, &back), SHOAL_OK);
    assert_int_equal(back.n_spares, 2);
    assert_string_equal(back.spares[1].worker_id, p.spares[1].worker_id);
    assert_true(plan_same_cells(&p, &back));
    json_decref(j);
    plan_fini(&back);
    plan_fini(&p);
}

/* What cannot be planned says why: a spec that never fits is INVALID, too few workers STATE. */
static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        uint32_t pp, ep, dp, n;
        shoal_err_t rc;
        const char *why;
    } cases[] = {
        {5, 1, 0, 4, SHOAL_ERR_INVALID, "pp 5, ep 1 cannot split 4 layers"},
        {1, 3, 0, 4, SHOAL_ERR_INVALID, "8 experts"},
        {2, 2, 0, 3, SHOAL_ERR_STATE, "3 live workers, one replica needs pp 2 x ep 2 = 4"},
        {2, 1, 3, 4, SHOAL_ERR_STATE, "data_parallel 3 x pp 2 x ep 1 needs 6"},
        {1, 1, 0, 0, SHOAL_ERR_STATE, "no live workers"},
    };
    plan_worker_t w[S_MAX_W];
    s_workers(w, 4, NULL, NULL, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plan_t p = {0};
        plan_request_t q = s_req(cases[i].pp, cases[i].ep, cases[i].dp);
        assert_int_equal(plan_build(&p, "r", 1, &q, w, cases[i].n), cases[i].rc);
        if (!strstr(shoal_errmsg(), cases[i].why))
            fail_msg("case %zu: '%s' lacks '%s'", i, shoal_errmsg(), cases[i].why);
        assert_int_equal(p.n_peers, 0);
    }
}

/* A re-plan after a death: survivors go back to the cells whose part they hold, and the plan
 * knows which parts only the checkpoint still has. */
static void test_keep_holders(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t old = {0}, p = {0};
    s_workers(w, 5, NULL, NULL, 0);
    plan_request_t q = s_req(2, 1, 0);
    assert_int_equal(plan_build(&old, "r", 1, &q, w, 5), SHOAL_OK); /* dp 2 x pp 2, 1 spare */
    assert_int_equal(old.n_spares, 1);
    /* the worker of (replica 0, stage 1) dies; the other four are placed again */
    const char *dead = old.peers[plan_rank(&old, (plan_cell_t){0, 1, 0})].worker_id;
    plan_worker_t live[S_MAX_W];
    uint32_t n = 0;
    plan_survivor_t sv[S_MAX_W];
    uint32_t n_sv = 0;
    for (uint32_t i = 0; i < 5; i++) {
        if (strcmp(w[i].worker_id, dead) == 0)
            continue;
        live[n++] = w[i];
        if (plan_find_worker(&old, w[i].worker_id))
            sv[n_sv++] = (plan_survivor_t){w[i].worker_id, 30};
    }
    assert_int_equal(n_sv, 3);
    assert_int_equal(plan_build(&p, "r", 2, &q, live, n), SHOAL_OK);
    plan_keep_holders(&p, &old, sv, n_sv);
    for (uint32_t i = 0; i < n_sv; i++) {
        const plan_peer_t *was = plan_find_worker(&old, sv[i].worker_id);
        const plan_peer_t *now = plan_find_worker(&p, sv[i].worker_id);
        assert_non_null(now);
        assert_memory_equal(&was->cell, &now->cell, sizeof was->cell);
    }
    /* the spare took the dead cell; its part is still held by (replica 1, stage 1) */
    const plan_peer_t *spare_now = plan_find_worker(&p, old.spares[0].worker_id);
    assert_non_null(spare_now);
    assert_int_equal(spare_now->cell.stage, 1);
    uint32_t src = 99;
    assert_true(plan_parts_held(&p, &old, sv, n_sv, 30, &src));
    assert_true(src < p.n_peers);
    /* at another step than the survivors', or with (replica 1, stage 1) lost too, stage 1 is
     * held by nobody: the checkpoint it is */
    assert_false(plan_parts_held(&p, &old, sv, n_sv, 31, &src));
    const char *also = old.peers[plan_rank(&old, (plan_cell_t){1, 1, 0})].worker_id;
    plan_survivor_t fewer[S_MAX_W];
    uint32_t n_fewer = 0;
    for (uint32_t i = 0; i < n_sv; i++)
        if (strcmp(sv[i].worker_id, also) != 0)
            fewer[n_fewer++] = sv[i];
    assert_false(plan_parts_held(&p, &old, fewer, n_fewer, 30, &src));
    /* a survivor is never moved off a cell another survivor already settled on */
    plan_keep_holders(&p, &old, sv, n_sv);
    for (uint32_t i = 0; i < n_sv; i++)
        assert_memory_equal(&plan_find_worker(&old, sv[i].worker_id)->cell,
                            &plan_find_worker(&p, sv[i].worker_id)->cell, sizeof(plan_cell_t));
    plan_fini(&p);
    plan_fini(&old);
}

/* A worker with a lower id joins dp 2 (w2, w3 hold the cells): the planner sorts it first and
 * places it, making a holder the spare; the holders take their cells back from the spares and
 * the newcomer is the spare, so the cells are the plan's as they were (no new generation). */
static void test_keep_holders_spare(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t old = {0}, p = {0};
    s_workers(w, 3, NULL, NULL, 0);
    plan_request_t q = s_req(1, 1, 2);
    assert_int_equal(plan_build(&old, "r", 1, &q, w + 1, 2), SHOAL_OK); /* w2, w3 */
    assert_int_equal(plan_build(&p, "r", 2, &q, w, 3), SHOAL_OK);      /* w1 joins */
    assert_int_equal(p.n_spares, 1);
    assert_false(plan_same_cells(&old, &p)); /* as placed: w1 took a cell */
    plan_survivor_t sv[2] = {{"w2", 7}, {"w3", 7}};
    plan_keep_holders(&p, &old, sv, 2);
    assert_true(plan_same_cells(&old, &p));
    assert_string_equal(p.spares[0].worker_id, "w1");
    for (uint32_t i = 0; i < p.n_peers; i++)
        assert_string_equal(p.peers[i].endpoint, old.peers[i].endpoint);
    plan_fini(&p);
    plan_fini(&old);
}

/* A drain of pp 2 x dp 1 + 1 spare: the drained worker of stage 1 is the only holder of its
 * part, so the spare taking the cell pulls it from that worker (a hand-over), and the plan is
 * held without the checkpoint; the hand-over survives the plan's JSON form. */
static void test_handovers(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    plan_t old = {0}, p = {0}, back = {0};
    s_workers(w, 3, NULL, NULL, 0);
    plan_request_t q = s_req(2, 1, 0);
    assert_int_equal(plan_build(&old, "r", 1, &q, w, 3), SHOAL_OK); /* dp 1 x pp 2, 1 spare */
    assert_int_equal(old.n_spares, 1);
    const plan_peer_t *gone = &old.peers[plan_rank(&old, (plan_cell_t){0, 1, 0})];
    const plan_peer_t *kept = &old.peers[plan_rank(&old, (plan_cell_t){0, 0, 0})];
    plan_worker_t live[S_MAX_W];
    uint32_t n = 0;
    for (uint32_t i = 0; i < 3; i++)
        if (strcmp(w[i].worker_id, gone->worker_id) != 0)
            live[n++] = w[i];
    plan_survivor_t sv[1] = {{kept->worker_id, 12}};
    plan_donor_t dn[1] = {{gone->worker_id, gone->endpoint, 12}};
    assert_int_equal(plan_build(&p, "r", 2, &q, live, n), SHOAL_OK);
    plan_keep_holders(&p, &old, sv, 1);
    uint32_t src = 99;
    /* without the donor stage 1 is held by nobody */
    assert_int_equal(plan_add_handovers(&p, &old, sv, 1, NULL, 0, 12), SHOAL_OK);
    assert_int_equal(p.n_handovers, 0);
    assert_false(plan_parts_held(&p, &old, sv, 1, 12, &src));
    /* a donor at another step hands nothing over */
    plan_donor_t late[1] = {{gone->worker_id, gone->endpoint, 11}};
    assert_int_equal(plan_add_handovers(&p, &old, sv, 1, late, 1, 12), SHOAL_OK);
    assert_int_equal(p.n_handovers, 0);
    assert_int_equal(plan_add_handovers(&p, &old, sv, 1, dn, 1, 12), SHOAL_OK);
    assert_int_equal(p.n_handovers, 1);
    const plan_peer_t *taker = &p.peers[p.handovers[0].to_rank];
    assert_int_equal(taker->cell.stage, 1);
    assert_string_equal(taker->worker_id, old.spares[0].worker_id);
    assert_string_equal(p.handovers[0].from_worker, gone->worker_id);
    assert_string_equal(p.handovers[0].from_endpoint, gone->endpoint);
    assert_true(plan_parts_held(&p, &old, sv, 1, 12, &src));
    /* stage 0 stays with its survivor: the survivor is the source */
    assert_string_equal(p.peers[src].worker_id, kept->worker_id);
    json_t *j = plan_to_json(&p);
    assert_int_equal(plan_from_json(j, &back), SHOAL_OK);
    json_decref(j);
    assert_int_equal(back.n_handovers, 1);
    assert_int_equal(back.handovers[0].to_rank, p.handovers[0].to_rank);
    assert_string_equal(back.handovers[0].from_endpoint, gone->endpoint);
    plan_fini(&back);
    plan_fini(&p);
    plan_fini(&old);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_balance),     cmocka_unit_test(test_memory_forces_stages),
        cmocka_unit_test(test_institutions),      cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_spares),            cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_keep_holders),      cmocka_unit_test(test_handovers),
        cmocka_unit_test(test_keep_holders_spare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
