/* test_plan_v3: the planner at DeepSeek-V3 shape (tests/sim/v3_shape.h): 2,048 GPUs in 256 hosts
 * of 8 placed as dp 2 x pp 16 x ep 64 with each ep group on 8 whole hosts; a host's death
 * re-planned onto a spare host moves that host's 8 cells and nothing else, and so does one with no
 * spare host (dp falls to 1, the dead host's cells go to one host of replica 1); hot experts
 * replicated from loads (plan_eplb.c) stay node-limited (a token's 4 groups on <= 4 hosts) and
 * even out the ranks. No I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "v3_shape.h"

static model_config_t s_m;

static void s_build(plan_t *p, uint32_t n_hosts, int skip_host)
{
    v3_model(&s_m);
    plan_request_t req = v3_request(&s_m);
    v3_cluster_t *c = v3_cluster_new(n_hosts, skip_host, 0);
    assert_non_null(c);
    uint32_t n;
    const plan_worker_t *w = v3_cluster_workers(c, &n);
    shoal_err_t rc = plan_build(p, "v3", 1, &req, w, n);
    if (rc != SHOAL_OK)
        fail_msg("plan_build: %s", shoal_errmsg());
    v3_cluster_free(&c);
}

/* The workers of `old` not on host `dead`, each at step 10 (calloc'ed; free it). */
static plan_survivor_t *s_survivors(const plan_t *old, const char *dead, uint32_t *n)
{
    plan_survivor_t *sv = calloc(old->n_peers, sizeof *sv);
    assert_non_null(sv);
    *n = 0;
    for (uint32_t i = 0; i < old->n_peers; i++)
        if (strcmp(old->peers[i].site.host, dead) != 0)
            sv[(*n)++] = (plan_survivor_t){old->peers[i].worker_id, 10};
    return sv;
}

/* 256 hosts: dp 2, pp 16, ep 64, no spare, pp as asked; every ep group spans 8 hosts of 8 ranks
 * in rank order; the 61 layers covered once, in order. */
static void test_v3_layout(void **state)
{
    (void)state;
    plan_t p = {0};
    s_build(&p, 256, -1);
    assert_int_equal(p.dp, 2);
    assert_int_equal(p.pp, 16);
    assert_int_equal(p.ep, 64);
    assert_int_equal(p.n_peers, 2048);
    assert_int_equal(p.n_spares, 0);
    assert_string_equal(p.note, "");
    uint32_t next = 0;
    for (uint32_t s = 0; s < p.pp; s++) {
        assert_int_equal(p.stages[s].first_layer, next);
        next += p.stages[s].n_layers;
        for (uint32_t r = 0; r < p.dp; r++)
            assert_int_equal(plan_ep_hosts(&p, r, s), 8);
    }
    assert_int_equal(next, 61);
    for (uint32_t e = 0; e < p.ep; e++)
        assert_int_equal(p.experts[e].count, 4);
    plan_fini(&p);
}

/* 257 hosts (one spare host); the host holding rank 777 dies: the re-plan keeping survivors on
 * their cells moves exactly that host's 8 cells, all onto the spare host, and its ep group still
 * spans 8 whole hosts. */
static void test_v3_host_death(void **state)
{
    (void)state;
    plan_t old = {0}, p = {0};
    s_build(&old, 257, -1);
    assert_int_equal(old.n_peers, 2048);
    assert_int_equal(old.n_spares, 8);
    char dead[PLAN_HOST_MAX];
    snprintf(dead, sizeof dead, "%s", old.peers[777].site.host);
    int dead_host = atoi(dead + 1);
    s_build(&p, 257, dead_host);
    uint32_t n_sv;
    plan_survivor_t *sv = s_survivors(&old, dead, &n_sv);
    assert_int_equal(n_sv, 2040);
    plan_keep_holders(&p, &old, sv, n_sv);
    assert_int_equal(plan_cells_moved(&old, &p), 8);
    for (uint32_t i = 0; i < p.n_peers; i++) {
        int was_dead = strcmp(old.peers[i].site.host, dead) == 0;
        assert_int_equal(strcmp(old.peers[i].worker_id, p.peers[i].worker_id) != 0, was_dead);
        if (was_dead)
            assert_non_null(plan_is_spare(&old, p.peers[i].worker_id) ? "" : NULL);
    }
    const plan_cell_t c = old.peers[777].cell;
    assert_int_equal(plan_ep_hosts(&p, c.replica, c.stage), 8);
    free(sv);
    plan_fini(&old);
    plan_fini(&p);
}

/* 256 hosts, no spare; the host holding rank 777 (replica 0) dies: dp falls to 1 (dp must stay
 * whole), replica 0's 1,016 surviving cells stay on their workers, and only the dead host's 8
 * cells move, onto one whole host of the old replica 1, so the ep group still spans 8 hosts. */
static void test_v3_host_death_no_spare(void **state)
{
    (void)state;
    plan_t old = {0}, p = {0};
    s_build(&old, 256, -1);
    const plan_cell_t c = old.peers[777].cell;
    assert_int_equal(c.replica, 0);
    char dead[PLAN_HOST_MAX];
    snprintf(dead, sizeof dead, "%s", old.peers[777].site.host);
    s_build(&p, 256, atoi(dead + 1));
    assert_int_equal(p.dp, 1);
    assert_int_equal(p.n_peers, 1024);
    uint32_t n_sv;
    plan_survivor_t *sv = s_survivors(&old, dead, &n_sv);
    plan_keep_holders(&p, &old, sv, n_sv);
    assert_int_equal(plan_cells_moved(&old, &p), 8);
    char taker_host[PLAN_HOST_MAX] = "";
    for (uint32_t i = 0; i < p.n_peers; i++) {
        const plan_peer_t *was = &old.peers[plan_rank(&old, p.peers[i].cell)];
        const int was_dead = strcmp(was->site.host, dead) == 0;
        assert_int_equal(strcmp(was->worker_id, p.peers[i].worker_id) != 0, was_dead);
        if (!was_dead)
            continue;
        const plan_peer_t *taker = plan_find_worker(&old, p.peers[i].worker_id);
        assert_non_null(taker);
        assert_int_equal(taker->cell.replica, 1); /* from the replica that is gone */
        if (!taker_host[0])
            snprintf(taker_host, sizeof taker_host, "%s", taker->site.host);
        assert_string_equal(taker->site.host, taker_host); /* one whole host */
    }
    assert_int_equal(plan_ep_hosts(&p, 0, c.stage), 8);
    free(sv);
    plan_fini(&old);
    plan_fini(&p);
}

/* Loads per rank of the default contiguous split (N/ep experts a rank), the worst one. */
static double s_contiguous_max(const double *load, uint32_t n, uint32_t ep)
{
    double max = 0;
    for (uint32_t r = 0; r < ep; r++) {
        double l = 0;
        for (uint32_t x = r * (n / ep); x < (r + 1) * (n / ep); x++)
            l += load[x];
        if (l > max)
            max = l;
    }
    return max;
}

/* Skewed loads, ep 64 on 8 hosts, 1 redundant slot a rank: every slot holds an expert, each
 * expert's copies (as counted) sit on one host with the rest of its group, a token's 4 groups
 * reach <= 4 hosts, and the hottest rank carries less than under the contiguous split. */
static void test_eplb_v3(void **state)
{
    (void)state;
    double load[256];
    v3_expert_loads(load, 256, 7);
    plan_eplb_t e = {0};
    assert_int_equal(plan_eplb_place(&e, load, 256, 8, 8, 64, 1), SHOAL_OK);
    assert_int_equal(e.slots, 5);
    assert_true(e.node_limited);
    uint32_t seen[256] = {0}, total = 0;
    for (uint32_t r = 0; r < 64; r++)
        for (uint32_t s = 0; s < e.slots; s++) {
            uint32_t x = e.slot_expert[r * e.slots + s];
            assert_true(x < 256);
            seen[x]++;
            assert_int_equal(e.expert_node[x], r / 8); /* on its host */
        }
    for (uint32_t x = 0; x < 256; x++) {
        assert_true(seen[x] >= 1);
        assert_int_equal(seen[x], e.replicas[x]);
        assert_int_equal(e.expert_node[x], e.expert_node[x - x % 32]); /* group on one host */
        total += seen[x];
    }
    assert_int_equal(total, 64 * 5);
    assert_true(plan_eplb_token_hosts(&e, 8, 4) <= 4);
    const double contiguous = s_contiguous_max(load, 256, 64);
    printf("v3 loads: hottest rank contiguous %.0f, eplb %.0f (mean %.0f)\n", contiguous,
           e.max_rank_load, e.mean_rank_load);
    assert_true(e.max_rank_load < contiguous);
    plan_eplb_fini(&e);
}

/* Uniform loads, no redundant slot: every rank carries the mean; shapes that cannot split are
 * refused; groups that do not divide over the hosts give one pool, not node-limited. */
static void test_eplb_edges(void **state)
{
    (void)state;
    plan_eplb_t e = {0};
    assert_int_equal(plan_eplb_place(&e, NULL, 256, 8, 8, 64, 0), SHOAL_OK);
    assert_true(e.max_rank_load == e.mean_rank_load);
    assert_int_equal(plan_eplb_place(&e, NULL, 256, 8, 8, 48, 0), SHOAL_ERR_INVALID);
    assert_int_equal(plan_eplb_place(&e, NULL, 256, 8, 3, 64, 0), SHOAL_ERR_INVALID);
    assert_int_equal(plan_eplb_place(&e, NULL, 256, 8, 16, 64, 1), SHOAL_OK);
    assert_false(e.node_limited);
    assert_int_equal(e.n_nodes, 1);
    plan_eplb_fini(&e);
    plan_eplb_fini(&e); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v3_layout),
        cmocka_unit_test(test_v3_host_death),
        cmocka_unit_test(test_v3_host_death_no_spare),
        cmocka_unit_test(test_eplb_v3),
        cmocka_unit_test(test_eplb_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
