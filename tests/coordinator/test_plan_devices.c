/* test_plan_devices: the planner with GPU and CPU workers (coordinator/plan_place.c): pipelines
 * and ep groups of one kind, GPU replicas first and chosen for throughput, GPU memory sizing
 * cells, train.precision deciding whether kinds share a data-parallel group, refusals that say
 * why, and re-plans that never swap a worker into a cell of the other kind. The workers are
 * planner input as the coordinator builds it from Register ("cuda:0 NVIDIA H200" / "cpu"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static model_config_t s_model;

/* tiny (4 layers, 8 experts), 8 sequences of 64 tokens, micro-batches of 1 */
static plan_request_t s_req(uint32_t pp, uint32_t ep, uint32_t dp, plan_precision_t prec)
{
    model_config_tiny(&s_model);
    return (plan_request_t){.pp = pp, .ep = ep, .dp = dp, .model = &s_model, .seq_len = 64,
                            .micro_batch = 1, .global_batch = 8, .precision = prec};
}

#define S_MAX_W 16
static char s_ids[S_MAX_W][12], s_eps[S_MAX_W][32], s_devs[S_MAX_W][40];

/* w1..w<n_gpu> on GPUs with gpu_mem bytes, then CPU workers up to n with 64 GiB, all on one
 * host: the device kind is the only thing that tells them apart. */
static void s_workers(plan_worker_t *w, uint32_t n_gpu, uint32_t n, uint64_t gpu_mem)
{
    for (uint32_t i = 0; i < n; i++) {
        snprintf(s_ids[i], sizeof s_ids[i], "w%u", i + 1);
        snprintf(s_eps[i], sizeof s_eps[i], "tcp://h:%u", 7000 + i);
        if (i < n_gpu)
            snprintf(s_devs[i], sizeof s_devs[i], "cuda:%u NVIDIA H200", i % 8);
        else
            snprintf(s_devs[i], sizeof s_devs[i], "cpu");
        w[i] = (plan_worker_t){.worker_id = s_ids[i], .endpoint = s_eps[i], .host = "h",
                               .institution = "i", .device = s_devs[i],
                               .memory_bytes = i < n_gpu ? gpu_mem : 64ull << 30};
    }
}

static int s_is_gpu_id(const char *id, uint32_t n_gpu)
{
    return atoi(id + 1) <= (int)n_gpu;
}

/* Every replica all GPU or all CPU (its peers' sites say so and agree with the workers'
 * devices); returns the number of GPU replicas. */
static uint32_t s_check_kinds(const plan_t *p, uint32_t n_gpu)
{
    uint32_t gpu_replicas = 0;
    for (uint32_t r = 0; r < p->dp; r++) {
        int kind = -1;
        for (uint32_t i = 0; i < p->n_peers; i++) {
            const plan_peer_t *q = &p->peers[i];
            if (q->cell.replica != r)
                continue;
            assert_int_equal(q->site.gpu, s_is_gpu_id(q->worker_id, n_gpu));
            if (kind < 0)
                kind = q->site.gpu;
            if (q->site.gpu != kind)
                fail_msg("replica %u mixes GPU and CPU cells (%s)", r, q->worker_id);
        }
        gpu_replicas += kind == 1;
    }
    return gpu_replicas;
}

static void s_expect(const char *text, const char *want)
{
    if (!strstr(text, want))
        fail_msg("'%s' lacks '%s'", text, want);
}

static void test_device_kind(void **state)
{
    (void)state;
    assert_true(plan_device_is_gpu("cuda:0 NVIDIA H200"));
    assert_true(plan_device_is_gpu("cuda:7"));
    assert_false(plan_device_is_gpu("cpu"));
    assert_false(plan_device_is_gpu(""));
    assert_false(plan_device_is_gpu(NULL));
    assert_true(plan_device_cpu_bf16("cpu bf16"));
    assert_true(plan_device_cpu_bf16("cpu avx512 bf16"));
    assert_false(plan_device_cpu_bf16("cpu"));
    assert_false(plan_device_cpu_bf16("cpu bf16x"));
    assert_false(plan_device_cpu_bf16("cpubf16"));
    assert_false(plan_device_cpu_bf16("cuda:0 bf16"));
    assert_false(plan_device_cpu_bf16(NULL));
}

/* fp32: 4 GPU + 4 CPU workers, pp 2. dp auto takes the 2 GPU replicas (2 x 64 beats 4 x 1);
 * a fixed dp 3 takes both GPU replicas first and one CPU replica, each of one kind. */
static void test_fp32_mix(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    s_workers(w, 4, 8, 141ull << 30);
    plan_t p = {0};
    plan_request_t q = s_req(2, 1, 0, PLAN_PRECISION_FP32);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(s_check_kinds(&p, 4), 2);
    assert_int_equal(p.n_spares, 4);
    for (uint32_t i = 0; i < p.n_spares; i++)
        assert_false(p.spares[i].site.gpu);
    q.dp = 3;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_OK);
    assert_int_equal(p.dp, 3);
    assert_int_equal(s_check_kinds(&p, 4), 2);
    for (uint32_t i = 0; i < p.n_peers; i++) /* GPU replicas are 0 and 1 */
        assert_int_equal(p.peers[i].site.gpu, p.peers[i].cell.replica < 2);
    assert_string_equal(p.note, "");
    /* the plan document says which cells and spares are on GPUs, and reads back */
    json_t *j = plan_to_json(&p);
    plan_t back = {0};
    assert_int_equal(plan_from_json(j, &back), SHOAL_OK);
    json_decref(j);
    assert_int_equal(back.n_peers, p.n_peers);
    for (uint32_t i = 0; i < p.n_peers; i++)
        assert_int_equal(back.peers[i].site.gpu, p.peers[i].site.gpu);
    assert_int_equal(back.n_spares, 2);
    for (uint32_t i = 0; i < back.n_spares; i++)
        assert_false(back.spares[i].site.gpu);
    plan_fini(&back);
    /* without GPU workers the plan is what it always was */
    s_workers(w, 0, 8, 0);
    q.dp = 0;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_OK);
    assert_int_equal(p.dp, 4);
    assert_int_equal(s_check_kinds(&p, 0), 0);
    plan_fini(&p);
}

/* A pipeline never mixes kinds: 1 GPU + 1 CPU cannot hold pp 2, whatever the precision. */
static void test_no_mixed_pipeline(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    s_workers(w, 1, 2, 141ull << 30);
    plan_t p = {0};
    plan_request_t q = s_req(2, 1, 0, PLAN_PRECISION_FP32);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 2), SHOAL_ERR_STATE);
    s_expect(shoal_errmsg(), "(1 GPU, 1 CPU: a pipeline or ep group is all one kind)");
    assert_int_equal(p.n_peers, 0);
    /* nor an ep group: ep 2 on 3 GPU + 1 CPU gives one GPU group, the rest spares */
    s_workers(w, 3, 4, 141ull << 30);
    q = s_req(1, 2, 0, PLAN_PRECISION_FP32);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_OK);
    assert_int_equal(p.dp, 1);
    assert_int_equal(s_check_kinds(&p, 3), 1);
    assert_int_equal(p.n_spares, 2);
    plan_fini(&p);
}

/* precision auto: GPUs compute in bf16, CPUs in fp32: one kind a plan. */
static void test_auto_one_kind(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    s_workers(w, 4, 8, 141ull << 30);
    plan_t p = {0};
    plan_request_t q = s_req(2, 1, 0, PLAN_PRECISION_AUTO);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(s_check_kinds(&p, 4), 2);
    s_expect(p.note, "GPU workers only (the 4 CPU workers are spares)");
    s_expect(p.note, "never in one data-parallel group");
    /* a dp of 3 would need a CPU replica beside bf16 GPU ones: refused, saying how to allow it */
    q.dp = 3;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 8), SHOAL_ERR_STATE);
    s_expect(shoal_errmsg(), "GPU workers alone: 4 live workers, data_parallel 3 x pp 2 x ep 1 "
                             "needs 6");
    s_expect(shoal_errmsg(), "train.precision fp32 lets them");
    assert_int_equal(p.n_peers, 0);
    /* one GPU cannot hold a replica of 2 stages: the CPU workers train, the GPU is a spare */
    s_workers(w, 1, 5, 141ull << 30);
    q.dp = 0;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 5), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(s_check_kinds(&p, 1), 0);
    assert_int_equal(p.n_spares, 1);
    assert_string_equal(p.spares[0].worker_id, "w1");
    s_expect(p.note, "CPU workers only (the 1 GPU workers are spares)");
    s_expect(p.note, "GPU workers alone: 1 live workers, one replica needs pp 2 x ep 1 = 2");
    plan_fini(&p);
}

/* precision bf16: GPU workers, else CPU workers declaring "cpu bf16", never both in a plan;
 * none of either is a refusal. */
static void test_bf16(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    s_workers(w, 0, 4, 0);
    plan_t p = {0};
    plan_request_t q = s_req(1, 1, 0, PLAN_PRECISION_BF16);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_ERR_STATE);
    s_expect(shoal_errmsg(), "train.precision bf16 needs GPU workers or CPU workers that compute "
                             "in bf16");
    s_workers(w, 2, 4, 141ull << 30);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(s_check_kinds(&p, 2), 2);
    s_expect(p.note, "GPU workers only (the 2 CPU workers are spares)");
    s_expect(p.note, "declare \"cpu bf16\" only");
    q.dp = 3;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_ERR_STATE);
    s_expect(shoal_errmsg(), "only GPU workers and CPU workers declaring \"cpu bf16\" count: "
                             "2 of 4");
    /* CPU workers 3 and 4 declare bf16: with the GPUs they form no mixed replica */
    snprintf(s_devs[2], sizeof s_devs[2], "cpu bf16");
    snprintf(s_devs[3], sizeof s_devs[3], "cpu bf16");
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_ERR_STATE);
    s_expect(shoal_errmsg(), "GPU replicas (cuBLAS) and CPU replicas (oneDNN) never share");
    q.dp = 0;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 4), SHOAL_OK);
    assert_int_equal(s_check_kinds(&p, 2), 2);
    s_expect(p.note, "GPUs (cuBLAS) and CPUs (oneDNN) never share");
    /* without GPUs: the bf16 CPU workers train, the fp32-only one is a spare */
    s_workers(w, 0, 3, 0);
    snprintf(s_devs[0], sizeof s_devs[0], "cpu bf16");
    snprintf(s_devs[2], sizeof s_devs[2], "cpu bf16");
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 3), SHOAL_OK);
    assert_int_equal(p.dp, 2);
    assert_int_equal(p.n_spares, 1);
    assert_string_equal(p.spares[0].worker_id, "w2");
    s_expect(p.note, "CPU workers that declare bf16 only (spares: 0 GPU, 1 CPU)");
    for (uint32_t i = 0; i < p.n_peers; i++)
        assert_string_not_equal(p.peers[i].worker_id, "w2");
    plan_fini(&p);
}

/* GPU memory sizes the cells: GPUs whose memory holds a cell of 2 stages but not one of the
 * whole model get pp raised to 2, while the CPU workers (64 GiB) would hold pp 1. */
static void test_gpu_memory(void **state)
{
    (void)state;
    plan_t probe = {0};
    plan_request_t q = s_req(1, 1, 2, PLAN_PRECISION_BF16);
    assert_int_equal(plan_layout(&probe, 2, 1, 1, 4, 8), SHOAL_OK);
    assert_int_equal(plan_balance_stages(&probe, &s_model, 64), SHOAL_OK);
    const uint64_t whole = plan_cell_bytes(&probe, &q, 0);
    assert_int_equal(plan_layout(&probe, 1, 2, 1, 4, 8), SHOAL_OK);
    assert_int_equal(plan_balance_stages(&probe, &s_model, 64), SHOAL_OK);
    uint64_t half = plan_cell_bytes(&probe, &q, 0);
    if (plan_cell_bytes(&probe, &q, 1) > half)
        half = plan_cell_bytes(&probe, &q, 1);
    plan_fini(&probe);
    assert_true(half < whole);
    plan_worker_t w[S_MAX_W];
    s_workers(w, 4, 6, (half + whole) / 2);
    plan_t p = {0};
    q.dp = 0;
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 6), SHOAL_OK);
    assert_int_equal(p.pp, 2);
    assert_int_equal(p.dp, 2);
    assert_int_equal(s_check_kinds(&p, 4), 2);
    s_expect(p.note, "; pp raised from 1 to 2");
    for (uint32_t i = 0; i < p.n_peers; i++)
        assert_true(p.peers[i].mem_est <= p.peers[i].site.memory_bytes);
    plan_fini(&p);
}

/* A re-plan never swaps a survivor into a cell of the other kind, even where it held that very
 * cell before (a plan written when that cell was on a CPU). */
static void test_keep_holders_kinds(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W];
    s_workers(w, 2, 4, 141ull << 30);
    plan_t old = {0}, p = {0};
    plan_request_t q = s_req(1, 1, 4, PLAN_PRECISION_FP32);
    assert_int_equal(plan_build(&p, "r", 2, &q, w, 4), SHOAL_OK);
    assert_int_equal(s_check_kinds(&p, 2), 2);
    assert_int_equal(plan_build(&old, "r", 1, &q, w, 4), SHOAL_OK);
    /* the old plan had CPU worker w3 on replica 0 and GPU worker w1 on replica 2 */
    plan_peer_t *a = &old.peers[plan_rank(&old, (plan_cell_t){0, 0, 0})];
    plan_peer_t *b = &old.peers[plan_rank(&old, (plan_cell_t){2, 0, 0})];
    assert_string_equal(a->worker_id, "w1");
    assert_string_equal(b->worker_id, "w3");
    snprintf(a->worker_id, sizeof a->worker_id, "w3");
    snprintf(b->worker_id, sizeof b->worker_id, "w1");
    plan_survivor_t sv[4] = {{"w1", 5}, {"w2", 5}, {"w3", 5}, {"w4", 5}};
    plan_keep_holders(&p, &old, sv, 4);
    assert_int_equal(s_check_kinds(&p, 2), 2);
    assert_string_equal(plan_find_worker(&p, "w1")->worker_id, "w1");
    assert_int_equal(plan_find_worker(&p, "w1")->cell.replica, 0);
    plan_fini(&p);
    plan_fini(&old);
}

/* The plan depends on the set of workers, not their order, with both kinds too. */
static void test_determinism(void **state)
{
    (void)state;
    plan_worker_t w[S_MAX_W], shuffled[S_MAX_W];
    s_workers(w, 5, 10, 141ull << 30);
    plan_t p = {0}, r = {0};
    plan_request_t q = s_req(2, 1, 4, PLAN_PRECISION_FP32);
    assert_int_equal(plan_build(&p, "r", 1, &q, w, 10), SHOAL_OK);
    for (uint32_t k = 1; k < 10; k++) {
        for (uint32_t i = 0; i < 10; i++)
            shuffled[i] = w[(i * 7 + k) % 10];
        assert_int_equal(plan_build(&r, "r", 1, &q, shuffled, 10), SHOAL_OK);
        assert_true(plan_same_cells(&p, &r));
    }
    assert_int_equal(s_check_kinds(&p, 5), 2);
    plan_fini(&p);
    plan_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_kind),     cmocka_unit_test(test_fp32_mix),
        cmocka_unit_test(test_no_mixed_pipeline), cmocka_unit_test(test_auto_one_kind),
        cmocka_unit_test(test_bf16),            cmocka_unit_test(test_gpu_memory),
        cmocka_unit_test(test_keep_holders_kinds), cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
